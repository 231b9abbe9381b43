"""Agents, calls and leads as last published: upserts that never let older state win, and reads.

Reads return each item already rendered as JSON text by Postgres (the stored
``data`` plus ``created_at``/``updated_at``), so the API passes it through
without decoding and re-encoding.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from shared.events import Kind
from shared.pagination import Page, Position, paginate
from shared.repos import Executor


@dataclass(frozen=True, slots=True)
class Change:
    """The newest state of one entity within a batch of events."""

    business_id: uuid.UUID
    id: str
    data_json: str
    version_at: datetime
    version_event: uuid.UUID
    deleted: bool = False
    # calls only: the columns their filters use
    status: str | None = None
    agent_id: str | None = None
    started_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Item:
    id: str
    created_at: datetime
    json: str


# Newer state wins: by occurred_at, then by event id (the order events were accepted).
_NEWER = "(t.version_at, t.version_event) < (EXCLUDED.version_at, EXCLUDED.version_event)"

_UPSERT: dict[Kind, str] = {
    "agents": f"""
        INSERT INTO agents AS t (business_id, id, data, deleted, version_at, version_event)
        SELECT business_id, id, data::jsonb, deleted, version_at, version_event
        FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bool[], $5::timestamptz[], $6::uuid[])
             AS c(business_id, id, data, deleted, version_at, version_event)
        ON CONFLICT (business_id, id) DO UPDATE SET
            data = CASE WHEN EXCLUDED.deleted THEN t.data ELSE EXCLUDED.data END,
            deleted = EXCLUDED.deleted, version_at = EXCLUDED.version_at,
            version_event = EXCLUDED.version_event, updated_at = now()
        WHERE {_NEWER}""",
    "calls": f"""
        INSERT INTO calls AS t (business_id, id, data, status, agent_id, started_at, version_at, version_event)
        SELECT business_id, id, data::jsonb, status, agent_id, started_at, version_at, version_event
        FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
                    $7::timestamptz[], $8::uuid[])
             AS c(business_id, id, data, status, agent_id, started_at, version_at, version_event)
        ON CONFLICT (business_id, id) DO UPDATE SET
            data = EXCLUDED.data, status = EXCLUDED.status, agent_id = EXCLUDED.agent_id,
            started_at = EXCLUDED.started_at, version_at = EXCLUDED.version_at,
            version_event = EXCLUDED.version_event, updated_at = now()
        WHERE {_NEWER}""",
    "leads": f"""
        INSERT INTO leads AS t (business_id, id, data, version_at, version_event)
        SELECT business_id, id, data::jsonb, version_at, version_event
        FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::uuid[])
             AS c(business_id, id, data, version_at, version_event)
        ON CONFLICT (business_id, id) DO UPDATE SET
            data = EXCLUDED.data, version_at = EXCLUDED.version_at,
            version_event = EXCLUDED.version_event, updated_at = now()
        WHERE {_NEWER}""",
}


async def upsert(db: Executor, kind: Kind, changes: Sequence[Change]) -> None:
    """Apply changes (at most one per entity: reduce a batch first)."""
    if not changes:
        return
    columns: list[list[object]] = [
        [c.business_id for c in changes], [c.id for c in changes], [c.data_json for c in changes],
    ]
    if kind == "agents":
        columns.append([c.deleted for c in changes])
    elif kind == "calls":
        columns += [[c.status for c in changes], [c.agent_id for c in changes], [c.started_at for c in changes]]
    columns += [[c.version_at for c in changes], [c.version_event for c in changes]]
    await db.execute(_UPSERT[kind], *columns)


_TS = "to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
_ITEM = (
    "id, created_at, (data || jsonb_build_object('id', id, 'created_at', "
    + _TS.format(col="created_at") + ", 'updated_at', " + _TS.format(col="updated_at") + "))::text AS json"
)


@dataclass(frozen=True, slots=True)
class CallFilter:
    status: str | None = None
    agent_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


async def list_page(
    db: Executor, kind: Kind, business_id: uuid.UUID, limit: int, after: Position | None,
    calls: CallFilter | None = None,
) -> Page[Item]:
    conditions = ["business_id = $1"]
    args: list[object] = [business_id, limit + 1]

    def arg(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

    if kind == "agents":
        conditions.append("NOT deleted")
    if calls is not None:
        if calls.status is not None:
            conditions.append(f"status = {arg(calls.status)}")
        if calls.agent_id is not None:
            conditions.append(f"agent_id = {arg(calls.agent_id)}")
        if calls.since is not None:
            conditions.append(f"started_at >= {arg(calls.since)}")
        if calls.until is not None:
            conditions.append(f"started_at < {arg(calls.until)}")
    if after is not None:
        conditions.append(f"(created_at, id) < ({arg(after.created_at)}, {arg(after.id)})")
    rows = await db.fetch(
        f"SELECT {_ITEM} FROM {kind} WHERE {' AND '.join(conditions)} ORDER BY created_at DESC, id DESC LIMIT $2",
        *args,
    )
    return paginate([Item(**r) for r in rows], limit, lambda i: Position(i.created_at, i.id))


async def get(db: Executor, kind: Kind, business_id: uuid.UUID, item_id: str) -> Item | None:
    deleted = " AND NOT deleted" if kind == "agents" else ""
    row = await db.fetchrow(f"SELECT {_ITEM} FROM {kind} WHERE business_id = $1 AND id = $2{deleted}",
                            business_id, item_id)
    return Item(**row) if row else None
