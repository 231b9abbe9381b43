"""Deliveries (one event to one endpoint) and their attempts: fan-out, leases, batched results, reads."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from shared.models import DeliveryStatus, Trigger
from shared.pagination import Page, Position, paginate
from shared.repos import Executor, newest_first, notices


@dataclass(frozen=True, slots=True)
class Outbound:
    """Everything a worker needs to send one delivery."""

    id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    business_id: uuid.UUID
    occurred_at: datetime
    data_json: str
    endpoint_id: uuid.UUID
    url: str
    enabled: bool
    attempt_count: int
    trigger: Trigger
    schedule: str
    schedule_start: int


# Postgres notifies this channel when deliveries become due now (the ingest statement does, at commit);
# workers listen on it, so a delivery starts without waiting for the next poll.
DUE_CHANNEL = "kaihooks_due"
# A notification whose payload is this plus an endpoint id: the endpoint was changed or enabled; workers
# reset its circuit breaker.
ENDPOINT_CHANGED = "endpoint:"


async def notify_due(db: Executor) -> None:
    """Tell the workers deliveries are due now (inside a transaction: once it commits)."""
    await db.execute(f"SELECT pg_notify('{DUE_CHANNEL}', '')")


async def fan_out(db: Executor, event_ids: Sequence[uuid.UUID]) -> int:
    """Create the deliveries of events not yet fanned out (one per matching enabled endpoint, due now or
    when a paused endpoint resumes) and mark the events done. Events another transaction is fanning out
    are skipped. Accepted events are fanned out as they are stored (``shared.repos.ingest``); this is for
    any that were not."""
    return await db.fetchval(  # type: ignore[no-any-return]
        """WITH ev AS (
               SELECT id, business_id, type FROM events
               WHERE id = ANY($1::uuid[]) AND fanned_out_at IS NULL
               FOR UPDATE SKIP LOCKED
           ), marked AS (
               UPDATE events e SET fanned_out_at = now() FROM ev WHERE e.id = ev.id
           ), created AS (
               INSERT INTO deliveries (event_id, endpoint_id, business_id, event_type, next_attempt_at)
               SELECT ev.id, ep.id, ev.business_id, ev.type, greatest(now(), ep.paused_until)
               FROM ev JOIN endpoints ep ON ep.business_id = ev.business_id AND ep.enabled
                    AND (ep.event_types IS NULL OR ev.type = ANY(ep.event_types))
               ON CONFLICT (event_id, endpoint_id) DO NOTHING
               RETURNING 1
           )
           SELECT count(*) FROM created""",
        list(event_ids),
    )


async def unfanned_events(db: Executor, older_than_s: float, limit: int) -> list[uuid.UUID]:
    """Events accepted a while ago but never fanned out (stored by an older release, say)."""
    rows = await db.fetch(
        """SELECT id FROM events WHERE fanned_out_at IS NULL
           AND created_at < now() - make_interval(secs => $1) ORDER BY created_at LIMIT $2""",
        older_than_s, limit,
    )
    return [r["id"] for r in rows]


async def claim_due(
    db: Executor, owner: str, limit: int, lease_s: float, skip_endpoints: Sequence[uuid.UUID] = ()
) -> list[Outbound]:
    """Lease up to ``limit`` pending deliveries that are due and held by nobody (or by a worker whose
    lease ran out), oldest due first; return them with their event and endpoint as they are now (a
    changed URL applies). One round trip.

    A held delivery's ``next_attempt_at`` is its lease's end (a visibility timeout): it is not due while
    a live worker holds it, so claims never step over the deliveries in flight, and it is due again by
    itself if its worker dies. The outcome then sets the real next attempt."""
    rows = await db.fetch(
        """WITH claimed AS (
               UPDATE deliveries d SET lease_until = now() + make_interval(secs => $3), lease_owner = $2,
                                       next_attempt_at = now() + make_interval(secs => $3)
               FROM (SELECT id FROM deliveries
                     WHERE status = 'pending' AND next_attempt_at <= now()
                       AND (lease_until IS NULL OR lease_until < now())
                       AND endpoint_id <> ALL($4::uuid[])
                     ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) due
               WHERE d.id = due.id
               RETURNING d.id, d.event_id, d.event_type, d.business_id, d.endpoint_id, d.attempt_count,
                         d.next_trigger, d.schedule, d.schedule_start
           )
           SELECT d.id, d.event_id, d.event_type, d.business_id, e.occurred_at, e.data::text AS data_json,
                  d.endpoint_id, ep.url, ep.enabled, d.attempt_count, d.next_trigger AS trigger, d.schedule,
                  d.schedule_start
           FROM claimed d JOIN events e ON e.id = d.event_id JOIN endpoints ep ON ep.id = d.endpoint_id""",
        limit, owner, lease_s, list(skip_endpoints),
    )
    return [Outbound(**r) for r in rows]


async def renew_leases(db: Executor, delivery_ids: Sequence[uuid.UUID], owner: str, lease_s: float) -> None:
    await db.execute(
        """UPDATE deliveries SET lease_until = now() + make_interval(secs => $3),
                  next_attempt_at = now() + make_interval(secs => $3)
           WHERE id = ANY($1::uuid[]) AND lease_owner = $2 AND status = 'pending'""",
        list(delivery_ids), owner, lease_s,
    )


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """One attempt's outcome and what it means for its delivery."""

    delivery_id: uuid.UUID
    endpoint_id: uuid.UUID
    number: int
    started_at: datetime
    duration_ms: int
    response_status: int | None
    response_body: str | None
    error: str | None
    error_kind: str | None
    trigger: Trigger
    url: str
    status: DeliveryStatus
    next_attempt_at: datetime | None
    succeeded: bool


@dataclass(frozen=True, slots=True)
class Deferral:
    """A delivery handed back unsent (its endpoint's breaker is open, or the worker is stopping)."""

    delivery_id: uuid.UUID
    next_attempt_at: datetime


async def write_results(conn: asyncpg.Connection, owner: str, results: Sequence[AttemptResult],
                        deferrals: Sequence[Deferral]) -> None:
    """Record attempts, settle their deliveries, update endpoint failure streaks and release deferrals:
    a handful of statements for any number of results. Run inside a transaction."""
    if results:
        await conn.execute(
            """INSERT INTO attempts (delivery_id, number, started_at, duration_ms, response_status, response_body,
                                     error, error_kind, trigger, url, endpoint_id)
               SELECT * FROM unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::int[], $5::int[], $6::text[],
                                    $7::text[], $8::text[], $9::text[], $10::text[], $11::uuid[])
               ON CONFLICT (delivery_id, number) DO NOTHING""",
            [r.delivery_id for r in results], [r.number for r in results], [r.started_at for r in results],
            [r.duration_ms for r in results], [r.response_status for r in results],
            [r.response_body for r in results], [r.error for r in results], [r.error_kind for r in results],
            [r.trigger for r in results], [r.url for r in results], [r.endpoint_id for r in results],
        )
        # The attempt always counts. Its verdict settles the delivery only if this worker still holds
        # it: a retry or recover (or another worker, after a lapsed lease) may have taken it meanwhile.
        await conn.execute(
            """UPDATE deliveries d SET attempt_count = greatest(d.attempt_count, u.number),
                      status = CASE WHEN d.lease_owner = $6 THEN u.status ELSE d.status END,
                      next_attempt_at = CASE WHEN d.lease_owner = $6 THEN u.next_attempt_at ELSE d.next_attempt_at END,
                      next_trigger = CASE WHEN d.lease_owner = $6 THEN 'scheduled' ELSE d.next_trigger END,
                      last_response_status = u.response_status, last_error = u.error,
                      lease_until = CASE WHEN d.lease_owner = $6 THEN NULL ELSE d.lease_until END,
                      lease_owner = CASE WHEN d.lease_owner = $6 THEN NULL ELSE d.lease_owner END,
                      updated_at = now()
               FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::int[], $5::text[], $7::int[])
                    AS u(id, status, next_attempt_at, response_status, error, number)
               WHERE d.id = u.id""",
            [r.delivery_id for r in results], [r.status for r in results], [r.next_attempt_at for r in results],
            [r.response_status for r in results], [r.error for r in results], owner, [r.number for r in results],
        )
        ok = {r.endpoint_id for r in results if r.succeeded}
        bad = {r.endpoint_id for r in results if not r.succeeded} - ok
        exhausted = {r.endpoint_id for r in results if r.status == "failed" and r.response_status != 410}
        if exhausted:
            await notices.record_exhausted(conn, list(exhausted))
        if ok:
            await conn.execute("UPDATE endpoints SET failing_since = NULL WHERE id = ANY($1::uuid[]) "
                               "AND failing_since IS NOT NULL", list(ok))
        if bad:
            await conn.execute("UPDATE endpoints SET failing_since = now() WHERE id = ANY($1::uuid[]) "
                               "AND failing_since IS NULL", list(bad))
    if deferrals:
        await conn.execute(
            """UPDATE deliveries d SET next_attempt_at = u.at, lease_until = NULL, lease_owner = NULL
               FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, at)
               WHERE d.id = u.id AND d.lease_owner = $3""",
            [d.delivery_id for d in deferrals], [d.next_attempt_at for d in deferrals], owner,
        )


async def fail_for_disabled_endpoint(db: Executor, delivery_ids: Sequence[uuid.UUID], owner: str) -> None:
    """Pending deliveries whose endpoint was disabled end as failed (a recover can send them later)."""
    await db.execute(
        """UPDATE deliveries SET status = 'failed', next_attempt_at = NULL, last_error = 'endpoint disabled',
                  lease_until = NULL, lease_owner = NULL, updated_at = now()
           WHERE id = ANY($1::uuid[]) AND lease_owner = $2 AND status = 'pending'""",
        list(delivery_ids), owner,
    )


async def release(db: Executor, owner: str) -> None:
    """Hand back everything this worker holds (it is stopping): due again at once for the others."""
    await db.execute("UPDATE deliveries SET lease_until = NULL, lease_owner = NULL, next_attempt_at = CASE "
                     "WHEN status = 'pending' THEN now() ELSE next_attempt_at END WHERE lease_owner = $1", owner)


# ---- reads and on-demand sends ------------------------------------------------------------------

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


async def send_now(db: Executor, delivery_ids: Sequence[uuid.UUID], trigger: Trigger) -> int:
    """Make deliveries due now with a short schedule of their own (a retry or a recover); any worker
    holding one loses its claim to it. Returns how many were found."""
    result: str = await db.execute(
        """UPDATE deliveries SET status = 'pending', next_attempt_at = now(), next_trigger = $2,
                  schedule = 'replay', schedule_start = attempt_count, lease_until = NULL, lease_owner = NULL,
                  updated_at = now()
           WHERE id = ANY($1::uuid[])""",
        list(delivery_ids), trigger,
    )
    found = int(result.split()[-1])
    if found:
        await notify_due(db)
    return found



async def create_test(db: Executor, business_id: uuid.UUID, endpoint_id: uuid.UUID, event_id: uuid.UUID,
                      data_json: str) -> uuid.UUID:
    """A ``webhook.test`` event for one endpoint and its delivery, due now. Run inside a transaction."""
    await db.execute(
        """INSERT INTO events (id, business_id, type, data, occurred_at, fanned_out_at)
           VALUES ($1, $2, 'webhook.test', $3::text::jsonb, now(), now())""",
        event_id, business_id, data_json,
    )
    delivery_id: uuid.UUID = await db.fetchval(
        """INSERT INTO deliveries (event_id, endpoint_id, business_id, event_type, next_attempt_at, next_trigger,
                                   schedule)
           VALUES ($1, $2, $3, 'webhook.test', now(), 'test', 'replay') RETURNING id""",
        event_id, endpoint_id, business_id,
    )
    await notify_due(db)
    return delivery_id


@dataclass(frozen=True, slots=True)
class RecoverPlan:
    failed: list[uuid.UUID]
    missed: list[uuid.UUID]  # event ids this endpoint never got
    by_event_type: dict[str, int]
    by_last_status: dict[str, int]


async def plan_recover(db: Executor, endpoint_id: uuid.UUID, since: datetime, until: datetime,
                       include_missed: bool) -> RecoverPlan:
    failed = await db.fetch(
        """SELECT id, event_type, last_response_status FROM deliveries
           WHERE endpoint_id = $1 AND status = 'failed' AND created_at >= $2 AND created_at < $3""",
        endpoint_id, since, until,
    )
    missed: list[asyncpg.Record] = []
    if include_missed:
        missed = await db.fetch(
            """SELECT e.id, e.type FROM events e JOIN endpoints ep ON ep.id = $1 AND ep.business_id = e.business_id
               WHERE e.created_at >= $2 AND e.created_at < $3 AND e.type <> 'webhook.test'
                 AND (ep.event_types IS NULL OR e.type = ANY(ep.event_types))
                 AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.endpoint_id = $1)""",
            endpoint_id, since, until,
        )
    by_type: dict[str, int] = {}
    by_status: dict[str, int] = {}
    for r in failed:
        by_type[r["event_type"]] = by_type.get(r["event_type"], 0) + 1
        key = str(r["last_response_status"]) if r["last_response_status"] is not None else "no response"
        by_status[key] = by_status.get(key, 0) + 1
    for r in missed:
        by_type[r["type"]] = by_type.get(r["type"], 0) + 1
        by_status["never sent"] = by_status.get("never sent", 0) + 1
    return RecoverPlan([r["id"] for r in failed], [r["id"] for r in missed], by_type, by_status)


async def start_recover(db: Executor, job_id: uuid.UUID, endpoint_id: uuid.UUID, failed: Sequence[uuid.UUID],
                        missed_events: Sequence[uuid.UUID], rate_per_s: float) -> int:
    """Make the job's deliveries due one after another, ``rate_per_s`` apart: failed ones that are still
    failed (a delivery that has since succeeded is left alone), then new ones for missed events.
    Workers then send each when due, so the pace needs no process of its own. Returns how many."""
    spacing = 1.0 / rate_per_s
    result: str = await db.execute(
        """WITH ordered AS (
               SELECT id, ordinality - 1 AS n FROM unnest($1::uuid[]) WITH ORDINALITY AS f(id, ordinality))
           UPDATE deliveries d SET status = 'pending',
                  next_attempt_at = now() + make_interval(secs => o.n * $2::float8),
                  next_trigger = 'recover', schedule = 'replay', schedule_start = d.attempt_count,
                  lease_until = NULL, lease_owner = NULL, recover_job_id = $3, updated_at = now()
           FROM ordered o WHERE d.id = o.id AND d.status = 'failed'""",
        list(failed), spacing, job_id,
    )
    updated = int(result.split()[-1])
    result = await db.execute(
        """INSERT INTO deliveries (event_id, endpoint_id, business_id, event_type, next_attempt_at, next_trigger,
                                   schedule, recover_job_id)
           SELECT e.id, $1, e.business_id, e.type,
                  now() + make_interval(secs => ($4::int + m.ordinality - 1) * $3::float8),
                  'recover', 'replay', $5
           FROM unnest($2::uuid[]) WITH ORDINALITY AS m(id, ordinality) JOIN events e ON e.id = m.id
           ON CONFLICT (event_id, endpoint_id) DO NOTHING""",
        endpoint_id, list(missed_events), spacing, len(failed), job_id,
    )
    total = updated + int(result.split()[-1])
    if total:
        await notify_due(db)
    return total


@dataclass(frozen=True, slots=True)
class RecoverProgress:
    attempted: int
    succeeded: int
    failed: int
    waiting: int


async def recover_progress(db: Executor, job_id: uuid.UUID) -> RecoverProgress:
    row = await db.fetchrow(
        """SELECT count(*) FILTER (WHERE attempt_count > schedule_start) AS attempted,
                  count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
                  count(*) FILTER (WHERE status = 'failed') AS failed,
                  count(*) FILTER (WHERE status = 'pending' AND attempt_count = schedule_start) AS waiting
           FROM deliveries WHERE recover_job_id = $1""",
        job_id,
    )
    return RecoverProgress(row["attempted"], row["succeeded"], row["failed"], row["waiting"])


async def cancel_recover(db: Executor, job_id: uuid.UUID) -> int:
    """Deliveries of the job not yet attempted go back to failed; returns how many."""
    result: str = await db.execute(
        """UPDATE deliveries SET status = 'failed', next_attempt_at = NULL, next_trigger = 'scheduled',
                  updated_at = now()
           WHERE recover_job_id = $1 AND status = 'pending' AND attempt_count = schedule_start
             AND (lease_until IS NULL OR lease_until < now())""",
        job_id,
    )
    return int(result.split()[-1])


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


async def due_count(db: Executor) -> int:
    """Pending deliveries due now, across all workers (the queue depth)."""
    count: int = await db.fetchval(
        "SELECT count(*) FROM deliveries WHERE status = 'pending' AND next_attempt_at <= now()")
    return count
