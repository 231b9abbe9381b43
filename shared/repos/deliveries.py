"""Deliveries (one event to one endpoint) and their attempts, as people see them: reads, searches, and
the on-demand sends (retry, test). The workers' queue is ``shared.repos.handoff``; what they write back,
``shared.repos.delivery_results``; recover runs, ``shared.repos.recover_jobs``."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from shared.models import Trigger
from shared.pagination import Page, Position, paginate
from shared.repos import Executor, newest_first
from shared.repos.handoff import notify_due

_COLUMNS = """id, event_id, endpoint_id, event_type, status, attempt_count, next_attempt_at,
              last_response_status, last_error, created_at, updated_at"""


async def list_for_endpoint(
    db: Executor, endpoint_id: uuid.UUID, limit: int, after: Position | None, status: str | None
) -> Page[asyncpg.Record]:
    filters: list[tuple[str, object]] = [("endpoint_id = {}", endpoint_id)]
    if status is not None:
        filters.append(("status = {}", status))
    sql, args = newest_first(f"SELECT {_COLUMNS} FROM deliveries", filters, limit, after)
    rows = await db.fetch(sql, *args)
    return paginate(list(rows), limit, lambda r: Position(r["created_at"], str(r["id"])))


async def get(db: Executor, business_id: uuid.UUID, delivery_id: uuid.UUID) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await db.fetchrow(
        f"SELECT {_COLUMNS} FROM deliveries WHERE id = $1 AND business_id = $2", delivery_id, business_id
    )
    return row


async def attempts(db: Executor, delivery_id: uuid.UUID) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await db.fetch(
        """SELECT number, started_at, duration_ms, response_status, response_body, error, error_kind, trigger, url
           FROM attempts WHERE delivery_id = $1 ORDER BY number""",
        delivery_id,
    )
    return rows


async def send_now(db: Executor, delivery_ids: Sequence[uuid.UUID], trigger: Trigger, deadline_s: float) -> int:
    """Make deliveries due now with a short schedule of their own (a retry or a recover), failed
    ``deadline_s`` after now at the latest (the replay schedule's total); any worker holding one loses its
    claim to it. Returns how many were found."""
    result: str = await db.execute(
        """UPDATE deliveries SET status = 'pending', next_attempt_at = now(), next_trigger = $2,
                  schedule = 'replay', schedule_start = attempt_count, lease_until = NULL, lease_owner = NULL,
                  deadline_at = now() + make_interval(secs => $3), updated_at = now()
           WHERE id = ANY($1::uuid[])""",
        list(delivery_ids), trigger, deadline_s,
    )
    found = int(result.split()[-1])
    if found:
        await notify_due(db)
    return found


async def create_test(db: Executor, business_id: uuid.UUID, endpoint_id: uuid.UUID, event_id: uuid.UUID,
                      data_json: str, deadline_s: float) -> uuid.UUID:
    """A ``webhook.test`` event for one endpoint and its delivery, due now, on the replay schedule (failed
    ``deadline_s`` after now at the latest). Run inside a transaction."""
    await db.execute(
        """INSERT INTO events (id, business_id, type, data, occurred_at, fanned_out_at)
           VALUES ($1, $2, 'webhook.test', $3::text::jsonb, now(), now())""",
        event_id, business_id, data_json,
    )
    delivery_id: uuid.UUID = await db.fetchval(
        """INSERT INTO deliveries (event_id, endpoint_id, business_id, event_type, next_attempt_at, next_trigger,
                                   schedule, deadline_at)
           VALUES ($1, $2, $3, 'webhook.test', now(), 'test', 'replay', now() + make_interval(secs => $4))
           RETURNING id""",
        event_id, endpoint_id, business_id, deadline_s,
    )
    await notify_due(db)
    return delivery_id


async def search(db: Executor, *, business_id: uuid.UUID | None, endpoint_id: uuid.UUID | None,
                 status: str | None, since: datetime, limit: int) -> list[asyncpg.Record]:
    """Deliveries across businesses, most recently changed first (for on-call engineers)."""
    conditions = ["updated_at >= $1"]
    args: list[object] = [since, limit]
    for column, value in (("business_id", business_id), ("endpoint_id", endpoint_id), ("status", status)):
        if value is not None:
            args.append(value)
            conditions.append(f"{column} = ${len(args)}")
    rows: list[asyncpg.Record] = await db.fetch(
        f"SELECT {_COLUMNS}, business_id FROM deliveries WHERE {' AND '.join(conditions)} "
        "ORDER BY updated_at DESC LIMIT $2",
        *args,
    )
    return rows


async def get_any(db: Executor, delivery_id: uuid.UUID) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await db.fetchrow(
        f"SELECT {_COLUMNS}, business_id FROM deliveries WHERE id = $1", delivery_id)
    return row
