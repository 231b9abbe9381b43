"""API keys: creation, listing, deletion, lookup by keyed hash and batched last-use stamps."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime

import asyncpg

from shared import ids
from shared.apikeys import StoredHash
from shared.models import ApiKey
from shared.pagination import Page, Position, paginate
from shared.repos import Executor, newest_first

_COLUMNS = "id, business_id, name, display_prefix, last4, scopes, created_at, expires_at, last_used_at"


def _key(row: asyncpg.Record) -> ApiKey:
    return ApiKey(**{**row, "scopes": tuple(row["scopes"])})


async def create(
    db: Executor,
    *,
    business_id: uuid.UUID,
    name: str,
    key_hash: StoredHash,
    display_prefix: str,
    last4: str,
    scopes: Iterable[str],
    expires_at: datetime | None,
    created_by: uuid.UUID | None,
) -> ApiKey:
    row = await db.fetchrow(
        f"""INSERT INTO api_keys (id, business_id, name, key_hash, display_prefix, last4, scopes,
                                  expires_at, created_by, hash_scheme, hash_key_id)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {_COLUMNS}""",
        ids.new_uuid(), business_id, name, key_hash.value, display_prefix, last4, list(scopes),
        expires_at, created_by, key_hash.scheme, key_hash.key_id,
    )
    return _key(row)


async def list_page(
    db: Executor, business_id: uuid.UUID, limit: int, after: Position | None
) -> Page[ApiKey]:
    sql, args = newest_first(f"SELECT {_COLUMNS} FROM api_keys", [("business_id = {}", business_id)], limit, after)
    rows = await db.fetch(sql, *args)
    return paginate([_key(r) for r in rows], limit, lambda k: Position(k.created_at, str(k.id)))


async def delete(db: Executor, business_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey | None:
    row = await db.fetchrow(
        f"DELETE FROM api_keys WHERE id = $1 AND business_id = $2 RETURNING {_COLUMNS}", key_id, business_id
    )
    return _key(row) if row else None


async def by_hashes(db: Executor, hashes: Sequence[StoredHash]) -> tuple[ApiKey, bytes] | None:
    """The key stored under one of these hashes (with its business's name), expired or not (the caller
    decides), and the hash it was found by."""
    row = await db.fetchrow(
        f"""SELECT {", ".join("k." + c for c in _COLUMNS.split(", "))}, b.name AS business_name, k.key_hash
            FROM api_keys k JOIN businesses b ON b.id = k.business_id WHERE k.key_hash = ANY($1::bytea[])
            LIMIT 1""",
        [h.value for h in hashes],
    )
    if row is None:
        return None
    found = row["key_hash"]
    return _key({k: v for k, v in row.items() if k != "key_hash"}), found


async def rehash(db: Executor, key_id: uuid.UUID, old: bytes, new: StoredHash) -> bool:
    """Store the key under ``new`` instead of ``old`` (no effect if it changed meanwhile)."""
    result: str = await db.execute(
        "UPDATE api_keys SET key_hash = $3, hash_scheme = $4, hash_key_id = $5 WHERE id = $1 AND key_hash = $2",
        key_id, old, new.value, new.scheme, new.key_id,
    )
    return result.endswith(" 1")


async def touch_many(db: Executor, used: dict[uuid.UUID, datetime]) -> None:
    """Record last use for many keys in one statement; never moves a stamp backwards."""
    if not used:
        return
    await db.execute(
        """UPDATE api_keys k SET last_used_at = u.at
           FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, at)
           WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.at)""",
        list(used.keys()), list(used.values()),
    )


async def hashes_by_key(db: Executor) -> dict[tuple[str | None, int], int]:
    """How many keys are stored under each master key id (None: not recorded, before migration 0011) and scheme."""
    rows = await db.fetch("SELECT hash_key_id, hash_scheme, count(*) AS n FROM api_keys GROUP BY 1, 2")
    return {(r["hash_key_id"], r["hash_scheme"]): r["n"] for r in rows}
