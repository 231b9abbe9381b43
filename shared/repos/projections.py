"""Agents, calls and leads as last published, and their reads.

Writes happen in ``shared.repos.ingest`` (one statement with the events that carry them).
Each row keeps its entity's data as JSON text, served by the read routes as it is.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from shared.events import Kind
from shared.pagination import Page, Position, paginate
from shared.repos import Executor


@dataclass(frozen=True, slots=True)
class Item:
    id: str
    created_at: datetime
    json: str


@dataclass(frozen=True, slots=True)
class CallFilter:
    status: str | None = None
    agent_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


_ITEM = "id, created_at, body AS json"


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
    return paginate([Item(*r) for r in rows], limit, lambda i: Position(i.created_at, i.id))


async def get(db: Executor, kind: Kind, business_id: uuid.UUID, item_id: str) -> Item | None:
    deleted = " AND NOT deleted" if kind == "agents" else ""
    row = await db.fetchrow(f"SELECT {_ITEM} FROM {kind} WHERE business_id = $1 AND id = $2{deleted}",
                            business_id, item_id)
    return Item(*row) if row else None
