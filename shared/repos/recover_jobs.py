"""Recover runs: what was asked, by whom, and how it stands; planning one, making its deliveries due at
its pace, its progress, and cancelling it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from shared.repos import Executor
from shared.repos.handoff import notify_due

_RECOVER_LOCK = 0x7263_7600  # the first key of recover's advisory locks ("rcv")
_COLUMNS = """id, business_id, endpoint_id, since, until, include_missed, rate_per_s, total, status, actor,
              created_at, finished_at"""


@dataclass(frozen=True, slots=True)
class RecoverJob:
    id: uuid.UUID
    business_id: uuid.UUID
    endpoint_id: uuid.UUID
    since: datetime
    until: datetime
    include_missed: bool
    rate_per_s: float
    total: int
    status: str
    actor: str
    created_at: datetime
    finished_at: datetime | None


def _job(row: asyncpg.Record) -> RecoverJob:
    return RecoverJob(**row)


async def create(db: Executor, job: RecoverJob) -> None:
    await db.execute(
        """INSERT INTO recover_jobs (id, business_id, endpoint_id, since, until, include_missed, rate_per_s, total,
                                     actor) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
        job.id, job.business_id, job.endpoint_id, job.since, job.until, job.include_missed, job.rate_per_s,
        job.total, job.actor,
    )


async def set_total(db: Executor, job_id: uuid.UUID, total: int) -> None:
    await db.execute("UPDATE recover_jobs SET total = $2 WHERE id = $1", job_id, total)


async def get(db: Executor, job_id: uuid.UUID, business_id: uuid.UUID | None = None) -> RecoverJob | None:
    if business_id is None:
        row = await db.fetchrow(f"SELECT {_COLUMNS} FROM recover_jobs WHERE id = $1", job_id)
    else:
        row = await db.fetchrow(f"SELECT {_COLUMNS} FROM recover_jobs WHERE id = $1 AND business_id = $2",
                                job_id, business_id)
    return _job(row) if row else None


async def finish(db: Executor, job_id: uuid.UUID, status: str) -> RecoverJob | None:
    """Mark a running job done or cancelled (no effect on a finished one)."""
    row = await db.fetchrow(
        f"""UPDATE recover_jobs SET status = $2, finished_at = now() WHERE id = $1 AND status = 'running'
            RETURNING {_COLUMNS}""",
        job_id, status,
    )
    return _job(row) if row else None


async def lock_endpoint(db: Executor, endpoint_id: uuid.UUID) -> None:
    """Serialise starting runs of one endpoint until the transaction ends. An advisory lock: it blocks nothing
    else (the endpoint's row stays free for edits and for the workers' writes)."""
    await db.execute("SELECT pg_advisory_xact_lock($1, hashtext($2::uuid::text))", _RECOVER_LOCK, endpoint_id)


async def finish_idle(db: Executor, endpoint_id: uuid.UUID) -> None:
    """Mark done the endpoint's running runs that have nothing left to send (nobody asked how they stand since,
    or their deliveries went with retention or to a later run)."""
    await db.execute(
        """UPDATE recover_jobs j SET status = 'done', finished_at = now()
           WHERE j.endpoint_id = $1 AND j.status = 'running' AND NOT EXISTS (
               SELECT 1 FROM deliveries d WHERE d.recover_job_id = j.id AND d.status = 'pending'
                 AND d.attempt_count = d.schedule_start)""",
        endpoint_id,
    )


async def running(db: Executor, endpoint_id: uuid.UUID) -> uuid.UUID | None:
    return await db.fetchval(  # type: ignore[no-any-return]
        "SELECT id FROM recover_jobs WHERE endpoint_id = $1 AND status = 'running' ORDER BY created_at LIMIT 1",
        endpoint_id)


# ---- a run's deliveries ------------------------------------------------------------------------
# Everything below is set-based: a run of any size is planned, counted and started by a few statements, and
# no delivery id passes through the process.

# $1 endpoint, $2 since, $3 until
_FAILED = """FROM deliveries d
             WHERE d.endpoint_id = $1 AND d.status = 'failed' AND d.created_at >= $2 AND d.created_at < $3"""
_MISSED = """FROM events e JOIN endpoints ep ON ep.id = $1 AND ep.business_id = e.business_id
             WHERE e.created_at >= $2 AND e.created_at < $3 AND e.type <> 'webhook.test'
               AND (ep.event_types IS NULL OR e.type = ANY(ep.event_types))
               AND NOT EXISTS (SELECT 1 FROM deliveries x WHERE x.event_id = e.id AND x.endpoint_id = $1)"""


@dataclass(frozen=True, slots=True)
class RecoverPlan:
    failed: int
    missed: int  # events this endpoint never got
    by_event_type: dict[str, int]
    by_last_status: dict[str, int]


async def plan_recover(db: Executor, endpoint_id: uuid.UUID, since: datetime, until: datetime,
                       include_missed: bool) -> RecoverPlan:
    """What a run would send, counted in Postgres by event type and last response."""
    rows = list(await db.fetch(
        f"""SELECT d.event_type AS type, coalesce(d.last_response_status::text, 'no response') AS last,
                   count(*) AS n {_FAILED} GROUP BY 1, 2""",
        endpoint_id, since, until,
    ))
    failed = sum(r["n"] for r in rows)
    missed = 0
    if include_missed:
        missed_rows = await db.fetch(f"SELECT e.type, 'never sent' AS last, count(*) AS n {_MISSED} GROUP BY 1",
                                     endpoint_id, since, until)
        missed = sum(r["n"] for r in missed_rows)
        rows += missed_rows
    by_type: dict[str, int] = {}
    by_status: dict[str, int] = {}
    for r in rows:
        by_type[r["type"]] = by_type.get(r["type"], 0) + r["n"]
        by_status[r["last"]] = by_status.get(r["last"], 0) + r["n"]
    return RecoverPlan(failed, missed, by_type, by_status)


async def count_recover(db: Executor, endpoint_id: uuid.UUID, since: datetime, until: datetime,
                        include_missed: bool, at_most: int) -> int:
    """How many deliveries a run would send, counting no further than ``at_most + 1``."""
    sql = f"SELECT count(*) FROM (SELECT 1 {_FAILED} LIMIT $4) f"
    if include_missed:
        sql = f"SELECT ({sql}) + (SELECT count(*) FROM (SELECT 1 {_MISSED} LIMIT $4) m)"
    return int(await db.fetchval(sql, endpoint_id, since, until, at_most + 1))


async def start_recover(db: Executor, job: RecoverJob, deadline_s: float) -> int:
    """Make the job's deliveries due one after another, ``1 / rate`` seconds apart, oldest first: its window's
    failed deliveries (those that have since succeeded are left alone), then, with ``include_missed``, new ones
    for the events the endpoint never got. Each is failed ``deadline_s`` (the replay schedule's total) after it
    is due, at the latest. Workers then send each when due, so the pace needs no process of its own. Returns how
    many. Run inside a transaction."""
    spacing = 1.0 / job.rate_per_s
    result: str = await db.execute(
        f"""WITH ordered AS (
                SELECT d.id, row_number() OVER (ORDER BY d.created_at, d.id) - 1 AS n {_FAILED})
            UPDATE deliveries d SET status = 'pending',
                   next_attempt_at = now() + make_interval(secs => o.n * $4::float8),
                   next_trigger = 'recover', schedule = 'replay', schedule_start = d.attempt_count,
                   deadline_at = now() + make_interval(secs => o.n * $4::float8 + $6::float8),
                   lease_until = NULL, lease_owner = NULL, recover_job_id = $5, updated_at = now()
            FROM ordered o WHERE d.id = o.id AND d.status = 'failed'""",
        job.endpoint_id, job.since, job.until, spacing, job.id, deadline_s,
    )
    total = int(result.split()[-1])
    if job.include_missed:
        result = await db.execute(
            f"""INSERT INTO deliveries (event_id, endpoint_id, business_id, event_type, next_attempt_at,
                                        next_trigger, schedule, recover_job_id, deadline_at)
                SELECT m.id, $1, m.business_id, m.type, now() + make_interval(secs => m.n * $4::float8),
                       'recover', 'replay', $5, now() + make_interval(secs => m.n * $4::float8 + $6::float8)
                FROM (SELECT e.id, e.business_id, e.type,
                             $7::int + row_number() OVER (ORDER BY e.created_at, e.id) - 1 AS n {_MISSED}) m
                ON CONFLICT (event_id, endpoint_id) DO NOTHING""",
            job.endpoint_id, job.since, job.until, spacing, job.id, deadline_s, total,
        )
        total += int(result.split()[-1])
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
