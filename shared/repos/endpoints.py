"""Webhook endpoints and their sealed signing secrets."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from shared.models import Endpoint
from shared.pagination import Page, Position, paginate
from shared.repos import Executor, newest_first
from shared.repos.handoff import notify_endpoint_changed
from shared.secrets_box import Sealed

_COLUMNS = "id, business_id, url, description, event_types, enabled, disabled_reason, created_at, updated_at"
_SEALED = "key_id, nonce, ciphertext, scheme"


def _sealed(row: asyncpg.Record) -> Sealed:
    return Sealed(row["key_id"], row["nonce"], row["ciphertext"], row["scheme"])


def _endpoint(row: asyncpg.Record) -> Endpoint:
    types = row["event_types"]
    return Endpoint(**{**row, "event_types": tuple(types) if types is not None else None})


async def create(
    db: Executor, *, endpoint_id: uuid.UUID, business_id: uuid.UUID, url: str, description: str,
    event_types: Sequence[str] | None, secret: Sealed,
) -> Endpoint:
    """Insert the endpoint and its first secret (sealed for ``endpoint_id``); run inside a transaction."""
    row = await db.fetchrow(
        f"""INSERT INTO endpoints (id, business_id, url, description, event_types)
            VALUES ($1, $2, $3, $4, $5) RETURNING {_COLUMNS}""",
        endpoint_id, business_id, url, description, list(event_types) if event_types is not None else None,
    )
    await add_secret(db, row["id"], secret)
    return _endpoint(row)


async def lock_business(db: Executor, business_id: uuid.UUID) -> bool:
    """Serialise endpoint creation within one business until the transaction ends (so that a count made next
    stays true until the insert commits); False if there is no such business. FOR NO KEY UPDATE does not
    block the foreign-key checks of events and deliveries being stored meanwhile."""
    return await db.fetchval("SELECT true FROM businesses WHERE id = $1 FOR NO KEY UPDATE", business_id) is True


async def count_of_business(db: Executor, business_id: uuid.UUID) -> int:
    return int(await db.fetchval("SELECT count(*) FROM endpoints WHERE business_id = $1", business_id))


async def lock(db: Executor, endpoint_id: uuid.UUID) -> bool:
    """Serialise changes to the endpoint's secrets until the transaction ends; False if it is gone."""
    return await db.fetchval("SELECT true FROM endpoints WHERE id = $1 FOR NO KEY UPDATE", endpoint_id) is True


async def add_secret(db: Executor, endpoint_id: uuid.UUID, secret: Sealed) -> None:
    await db.execute(
        "INSERT INTO endpoint_secrets (endpoint_id, key_id, nonce, ciphertext, scheme) VALUES ($1, $2, $3, $4, $5)",
        endpoint_id, secret.key_id, secret.nonce, secret.ciphertext, secret.scheme,
    )


async def list_page(db: Executor, business_id: uuid.UUID, limit: int, after: Position | None) -> Page[Endpoint]:
    sql, args = newest_first(f"SELECT {_COLUMNS} FROM endpoints", [("business_id = {}", business_id)], limit, after)
    rows = await db.fetch(sql, *args)
    return paginate([_endpoint(r) for r in rows], limit, lambda e: Position(e.created_at, str(e.id)))


async def get(db: Executor, business_id: uuid.UUID, endpoint_id: uuid.UUID) -> Endpoint | None:
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM endpoints WHERE id = $1 AND business_id = $2",
                            endpoint_id, business_id)
    return _endpoint(row) if row else None


async def newest(db: Executor, business_id: uuid.UUID | None, limit: int) -> list[Endpoint]:
    """The newest endpoints of one business or, with ``business_id`` None, of all (for the CLI)."""
    rows = await db.fetch(f"""SELECT {_COLUMNS} FROM endpoints WHERE ($1::uuid IS NULL OR business_id = $1)
                              ORDER BY created_at DESC, id DESC LIMIT $2""", business_id, limit)
    return [_endpoint(r) for r in rows]


async def get_any(db: Executor, endpoint_id: uuid.UUID) -> Endpoint | None:
    """By id alone: for the CLI and the dispatcher, which act across businesses."""
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM endpoints WHERE id = $1", endpoint_id)
    return _endpoint(row) if row else None


_UPDATABLE = ("url", "description", "event_types", "enabled")


async def update(
    db: Executor, business_id: uuid.UUID, endpoint_id: uuid.UUID, changes: dict[str, Any]
) -> Endpoint | None:
    """Apply the given fields. Enabling clears the disabled reason and the failure streak. Workers read the
    endpoint again before sending to it (at commit)."""
    sets = []
    args: list[object] = [endpoint_id, business_id]
    for name in _UPDATABLE:
        if name in changes:
            value = changes[name]
            if name == "event_types" and value is not None:
                value = list(value)
            args.append(value)
            sets.append(f"{name} = ${len(args)}")
    fixed = changes.get("enabled") is True or "url" in changes
    if fixed:
        sets.append("paused_until = NULL")  # a fixed endpoint gets its new deliveries at once
    if fixed:
        sets += ["failing_since = NULL", "failure_streak = 0"]
    if changes.get("enabled") is True:
        sets.append("disabled_reason = NULL")
    elif changes.get("enabled") is False:
        sets.append("disabled_reason = coalesce(disabled_reason, 'disabled by a user')")
    sets.append("updated_at = now()")
    row = await db.fetchrow(
        f"UPDATE endpoints SET {', '.join(sets)} WHERE id = $1 AND business_id = $2 RETURNING {_COLUMNS}", *args
    )
    if row:
        await notify_endpoint_changed(db, endpoint_id)
    return _endpoint(row) if row else None


async def delete(db: Executor, business_id: uuid.UUID, endpoint_id: uuid.UUID) -> bool:
    """Delete it with its deliveries; workers drop what they hold of it (at commit)."""
    result: str = await db.execute("DELETE FROM endpoints WHERE id = $1 AND business_id = $2",
                                   endpoint_id, business_id)
    if result.endswith(" 1"):
        await notify_endpoint_changed(db, endpoint_id)
        return True
    return False


async def disable(db: Executor, endpoint_id: uuid.UUID, reason: str) -> Endpoint | None:
    """Disable an enabled endpoint (by the dispatcher) and leave the business a notice; None if it was not
    enabled. Run inside a transaction (``shared.webhook_service.disable_endpoint``)."""
    row = await db.fetchrow(
        f"""WITH disabled AS (
                UPDATE endpoints SET enabled = false, disabled_reason = $2, updated_at = now()
                WHERE id = $1 AND enabled RETURNING {_COLUMNS}
            ), noticed AS (
                INSERT INTO notices (business_id, endpoint_id, kind, message)
                SELECT business_id, id, 'endpoint.disabled', 'Disabled: ' || $2 FROM disabled
            )
            SELECT * FROM disabled""",
        endpoint_id, reason,
    )
    if row:
        await notify_endpoint_changed(db, endpoint_id)
    return _endpoint(row) if row else None


async def pause(db: Executor, endpoint_id: uuid.UUID, until: datetime, move_pending: bool,
                default_deadline_s: float) -> int:
    """Nothing new to the endpoint is due before ``until`` (its deliveries are fanned out due then). With
    ``move_pending`` (its breaker tripped), its pending deliveries that nobody holds move there too, but
    never past their deadlines (rows of an older release without one: ``created_at`` plus
    ``default_deadline_s``). Never shortens a pause. Returns how many deliveries moved."""
    result: str = await db.execute(
        """WITH paused AS (
               UPDATE endpoints SET paused_until = greatest(paused_until, $2)
               WHERE id = $1 AND enabled RETURNING id
           )
           UPDATE deliveries
           SET next_attempt_at = least($2, coalesce(deadline_at, created_at + make_interval(secs => $4)))
           WHERE $3 AND endpoint_id = (SELECT id FROM paused) AND status = 'pending' AND next_attempt_at < $2
             AND (lease_until IS NULL OR lease_until < now())""",
        endpoint_id, until, move_pending, default_deadline_s,
    )
    return int(result.split()[-1])


async def resume(db: Executor, endpoint_id: uuid.UUID) -> None:
    """The endpoint answered again: new deliveries to it are due at once."""
    await db.execute("UPDATE endpoints SET paused_until = NULL WHERE id = $1 AND paused_until IS NOT NULL",
                     endpoint_id)


async def failing_since_before(db: Executor, cutoff: datetime) -> list[Endpoint]:
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM endpoints WHERE enabled AND failing_since IS NOT NULL AND failing_since < $1",
        cutoff,
    )
    return [_endpoint(r) for r in rows]


async def current_secret(db: Executor, endpoint_id: uuid.UUID) -> Sealed | None:
    row = await db.fetchrow(
        f"SELECT {_SEALED} FROM endpoint_secrets WHERE endpoint_id = $1 AND expires_at IS NULL", endpoint_id)
    return _sealed(row) if row else None


@dataclass(frozen=True, slots=True)
class SigningNow:
    count: int  # secrets that sign now: the current one and those in their grace period
    next_expiry: datetime | None  # when the first of those in their grace period stops signing


async def signing_now(db: Executor, endpoint_id: uuid.UUID) -> SigningNow:
    row = await db.fetchrow(
        """SELECT count(*) AS n, min(expires_at) AS next_expiry FROM endpoint_secrets
           WHERE endpoint_id = $1 AND (expires_at IS NULL OR expires_at > now())""",
        endpoint_id,
    )
    return SigningNow(int(row["n"]), row["next_expiry"])


async def rotate_secret(db: Executor, endpoint_id: uuid.UUID, new: Sealed, grace_s: int) -> None:
    """The current secret keeps signing for ``grace_s`` more seconds; ``new`` becomes current.
    Run inside a transaction."""
    await db.execute(
        """UPDATE endpoint_secrets SET expires_at = now() + make_interval(secs => $2)
           WHERE endpoint_id = $1 AND expires_at IS NULL""",
        endpoint_id, grace_s,
    )
    await add_secret(db, endpoint_id, new)
    await notify_endpoint_changed(db, endpoint_id)


@dataclass(frozen=True, slots=True)
class LiveSecret:
    sealed: Sealed
    expires_at: datetime | None


async def live_secrets(db: Executor, endpoint_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[LiveSecret]]:
    """Every secret that signs now, per endpoint: the current one first, then unexpired old ones."""
    rows = await db.fetch(
        f"""SELECT endpoint_id, {_SEALED}, expires_at FROM endpoint_secrets
            WHERE endpoint_id = ANY($1::uuid[]) AND (expires_at IS NULL OR expires_at > now())
            ORDER BY endpoint_id, expires_at DESC NULLS FIRST, id DESC""",
        list(endpoint_ids),
    )
    out: dict[uuid.UUID, list[LiveSecret]] = {}
    for r in rows:
        out.setdefault(r["endpoint_id"], []).append(LiveSecret(_sealed(r), r["expires_at"]))
    return out


@dataclass(frozen=True, slots=True)
class Current:
    """An endpoint as a worker needs it: where to send, whether to, and with which secrets."""

    url: str
    enabled: bool
    secrets: list[LiveSecret]


async def current(db: Executor, endpoint_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Current]:
    """The endpoints as they are now, with their live secrets; deleted ones are absent."""
    rows = await db.fetch("SELECT id, url, enabled FROM endpoints WHERE id = ANY($1::uuid[])", list(endpoint_ids))
    secrets = await live_secrets(db, [r["id"] for r in rows])
    return {r["id"]: Current(r["url"], r["enabled"], secrets.get(r["id"], [])) for r in rows}


# ---- re-sealing under the current master key (shared.key_rotation) ----------------------------------

@dataclass(frozen=True, slots=True)
class StoredSecret:
    id: int
    endpoint_id: uuid.UUID
    sealed: Sealed


async def live_sealed_after(db: Executor, after_id: int, limit: int) -> list[StoredSecret]:
    """Secrets that still sign (or will), in id order after ``after_id``: a page of a walk over all of them."""
    rows = await db.fetch(
        f"""SELECT id, endpoint_id, {_SEALED} FROM endpoint_secrets
            WHERE id > $1 AND (expires_at IS NULL OR expires_at > now()) ORDER BY id LIMIT $2""",
        after_id, limit,
    )
    return [StoredSecret(r["id"], r["endpoint_id"], _sealed(r)) for r in rows]


async def replace_sealed(db: Executor, replaced: Sequence[tuple[StoredSecret, Sealed]]) -> int:
    """Store each secret sealed anew (the same secret), unless its row changed meanwhile; returns how many."""
    if not replaced:
        return 0
    result: str = await db.execute(
        """UPDATE endpoint_secrets s SET key_id = r.key_id, nonce = r.nonce, ciphertext = r.ciphertext,
                  scheme = r.scheme
           FROM unnest($1::bigint[], $2::bytea[], $3::text[], $4::bytea[], $5::bytea[], $6::smallint[])
                AS r(id, old_nonce, key_id, nonce, ciphertext, scheme)
           WHERE s.id = r.id AND s.nonce = r.old_nonce""",
        [old.id for old, _ in replaced], [old.sealed.nonce for old, _ in replaced],
        [new.key_id for _, new in replaced], [new.nonce for _, new in replaced],
        [new.ciphertext for _, new in replaced], [new.scheme for _, new in replaced],
    )
    return int(result.split()[-1])


async def live_sealed_by_key(db: Executor) -> dict[tuple[str, int], int]:
    """How many secrets that still sign are sealed under each master key id, in each scheme."""
    rows = await db.fetch("""SELECT key_id, scheme, count(*) AS n FROM endpoint_secrets
                             WHERE expires_at IS NULL OR expires_at > now() GROUP BY 1, 2""")
    return {(r["key_id"], r["scheme"]): r["n"] for r in rows}
