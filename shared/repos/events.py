"""The event log: batch insert with idempotency keys, and the business's reads of it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from shared.pagination import Page, Position, paginate
from shared.repos import Executor, newest_first


@dataclass(frozen=True, slots=True)
class NewEvent:
    id: uuid.UUID
    business_id: uuid.UUID
    type: str
    data_json: str
    idempotency_key: str | None
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class EventRow:
    """An event as the read API shows it; ``data_json`` is the stored JSON text, passed through."""

    id: uuid.UUID
    business_id: uuid.UUID
    type: str
    data_json: str
    occurred_at: datetime
    created_at: datetime


async def ids_by_idempotency_key(
    db: Executor, keys: Sequence[tuple[uuid.UUID, str]]
) -> dict[tuple[uuid.UUID, str], uuid.UUID]:
    rows = await db.fetch(
        """SELECT e.business_id, e.idempotency_key, e.id FROM events e
           JOIN unnest($1::uuid[], $2::text[]) AS k(business_id, idempotency_key)
             ON e.business_id = k.business_id AND e.idempotency_key = k.idempotency_key""",
        [k[0] for k in keys], [k[1] for k in keys],
    )
    return {(r["business_id"], r["idempotency_key"]): r["id"] for r in rows}


_COLUMNS = "id, business_id, type, data::text AS data_json, occurred_at, created_at"


async def list_page(
    db: Executor, business_id: uuid.UUID, limit: int, after: Position | None, event_type: str | None
) -> Page[EventRow]:
    filters: list[tuple[str, object]] = [("business_id = {}", business_id), ("type <> 'webhook.test'", None)]
    if event_type is not None:
        filters.append(("type = {}", event_type))
    sql, args = newest_first(f"SELECT {_COLUMNS} FROM events", filters, limit, after)
    rows = await db.fetch(sql, *args)
    return paginate([EventRow(**r) for r in rows], limit, lambda e: Position(e.created_at, str(e.id)))


async def get(db: Executor, business_id: uuid.UUID, event_id: uuid.UUID) -> EventRow | None:
    row = await db.fetchrow(
        f"SELECT {_COLUMNS} FROM events WHERE id = $1 AND business_id = $2 AND type <> 'webhook.test'",
        event_id, business_id,
    )
    return EventRow(**row) if row else None
