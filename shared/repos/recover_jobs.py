"""Recover runs: what was asked, by whom, and how it stands."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from shared.repos import Executor

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
