"""Recover runs: what was asked, by whom, and how it stands; planning one, making its deliveries due at
its pace, its progress, and cancelling it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from shared.repos import Executor
from shared.repos.handoff import notify_due

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


# ---- a run's deliveries ------------------------------------------------------------------------

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
                        missed_events: Sequence[uuid.UUID], rate_per_s: float, deadline_s: float) -> int:
    """Make the job's deliveries due one after another, ``rate_per_s`` apart: failed ones that are still
    failed (a delivery that has since succeeded is left alone), then new ones for missed events. Each is
    failed ``deadline_s`` (the replay schedule's total) after it is due, at the latest. Workers then send
    each when due, so the pace needs no process of its own. Returns how many."""
    spacing = 1.0 / rate_per_s
    result: str = await db.execute(
        """WITH ordered AS (
               SELECT id, ordinality - 1 AS n FROM unnest($1::uuid[]) WITH ORDINALITY AS f(id, ordinality))
           UPDATE deliveries d SET status = 'pending',
                  next_attempt_at = now() + make_interval(secs => o.n * $2::float8),
                  next_trigger = 'recover', schedule = 'replay', schedule_start = d.attempt_count,
                  deadline_at = now() + make_interval(secs => o.n * $2::float8 + $4::float8),
                  lease_until = NULL, lease_owner = NULL, recover_job_id = $3, updated_at = now()
           FROM ordered o WHERE d.id = o.id AND d.status = 'failed'""",
        list(failed), spacing, job_id, deadline_s,
    )
    updated = int(result.split()[-1])
    result = await db.execute(
        """INSERT INTO deliveries (event_id, endpoint_id, business_id, event_type, next_attempt_at, next_trigger,
                                   schedule, recover_job_id, deadline_at)
           SELECT e.id, $1, e.business_id, e.type,
                  now() + make_interval(secs => ($4::int + m.ordinality - 1) * $3::float8),
                  'recover', 'replay', $5,
                  now() + make_interval(secs => ($4::int + m.ordinality - 1) * $3::float8 + $6::float8)
           FROM unnest($2::uuid[]) WITH ORDINALITY AS m(id, ordinality) JOIN events e ON e.id = m.id
           ON CONFLICT (event_id, endpoint_id) DO NOTHING""",
        endpoint_id, list(missed_events), spacing, len(failed), job_id, deadline_s,
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
