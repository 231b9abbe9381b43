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
from shared.repos import Executor, newest_first


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
    filters: list[tuple[str, object]] = [("business_id = {}", business_id)]
    if kind == "agents":
        filters.append(("NOT deleted", None))
    if calls is not None:
        for expression, value in (("status = {}", calls.status), ("agent_id = {}", calls.agent_id),
                                  ("started_at >= {}", calls.since), ("started_at < {}", calls.until)):
            if value is not None:
                filters.append((expression, value))
    sql, args = newest_first(f"SELECT {_ITEM} FROM {kind}", filters, limit, after, uuid_ids=False)
    rows = await db.fetch(sql, *args)
    return paginate([Item(*r) for r in rows], limit, lambda i: Position(i.created_at, i.id))


async def get(db: Executor, kind: Kind, business_id: uuid.UUID, item_id: str) -> Item | None:
    deleted = " AND NOT deleted" if kind == "agents" else ""
    row = await db.fetchrow(f"SELECT {_ITEM} FROM {kind} WHERE business_id = $1 AND id = $2{deleted}",
                            business_id, item_id)
    return Item(*row) if row else None
