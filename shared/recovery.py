"""Recover: re-send an endpoint's failed deliveries of a time window (and, if asked, the events it
never got), paced, tracked, cancellable and audited. The HTTP route and the CLI both use this."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from shared import ids
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.models import Endpoint
from shared.repos import audit
from shared.repos import endpoints as endpoint_repo
from shared.repos import recover_jobs as job_repo
from shared.repos.recover_jobs import RecoverJob, RecoverProgress

DEFAULT_RATE_PER_S = 10.0
MAX_RATE_PER_S = 1000.0


@dataclass(frozen=True, slots=True)
class Plan:
    count: int
    failed: int
    missed: int
    by_event_type: dict[str, int]
    by_last_status: dict[str, int]


@dataclass(frozen=True, slots=True)
class Status:
    job: RecoverJob
    progress: RecoverProgress


async def _endpoint(db: asyncpg.Pool, endpoint_id: uuid.UUID, business_id: uuid.UUID | None) -> Endpoint:
    endpoint = (await endpoint_repo.get(db, business_id, endpoint_id) if business_id is not None
                else await endpoint_repo.get_any(db, endpoint_id))
    if endpoint is None:
        raise NotFound("No such endpoint.")
    return endpoint


def _window(since: datetime, until: datetime | None) -> datetime:
    until = until or datetime.now(UTC)
    if since >= until:
        raise ValidationFailed.at(["body", "since"], "since must be before until")
    return until


async def plan(db: asyncpg.Pool, endpoint_id: uuid.UUID, *, since: datetime, until: datetime | None,
               include_missed: bool, business_id: uuid.UUID | None = None) -> Plan:
    """What a recover would send, by event type and by last response status; changes nothing."""
    await _endpoint(db, endpoint_id, business_id)
    p = await job_repo.plan_recover(db, endpoint_id, since, _window(since, until), include_missed)
    return Plan(len(p.failed) + len(p.missed), len(p.failed), len(p.missed), p.by_event_type, p.by_last_status)


async def start(db: asyncpg.Pool, endpoint_id: uuid.UUID, *, since: datetime,
                until: datetime | None, include_missed: bool, rate_per_s: float, actor: str,
                audit_actor: dict[str, object], deadline_s: float, business_id: uuid.UUID | None = None
                ) -> RecoverJob:
    """Start a paced recover run; each delivery is due ``1 / rate_per_s`` seconds after the previous one,
    and failed at the latest ``deadline_s`` (the replay schedule's total) after it is due."""
    if not 0 < rate_per_s <= MAX_RATE_PER_S:
        raise ValidationFailed.at(["body", "rate"], f"rate must be above 0 and at most {MAX_RATE_PER_S:g} per second")
    endpoint = await _endpoint(db, endpoint_id, business_id)
    until = _window(since, until)
    if not endpoint.enabled:
        raise Conflict("The endpoint is disabled; enable it before recovering.")
    job = RecoverJob(ids.new_uuid(), endpoint.business_id, endpoint_id, since, until, include_missed, rate_per_s,
                     0, "running", actor, datetime.now(UTC), None)
    async with db.acquire() as conn, conn.transaction():
        p = await job_repo.plan_recover(conn, endpoint_id, since, until, include_missed)
        await job_repo.create(conn, job)
        total = await job_repo.start_recover(conn, job.id, endpoint_id, p.failed, p.missed, rate_per_s,
                                               deadline_s)
        await job_repo.set_total(conn, job.id, total)
        await audit.record(conn, action="endpoint.recover_started", business_id=endpoint.business_id,
                           target_id=endpoint.public_id, **audit_actor,  # type: ignore[arg-type]
                           details={"job_id": ids.encode("rcv", job.id), "since": since.isoformat(),
                                    "until": until.isoformat(), "count": total, "rate_per_s": rate_per_s,
                                    "include_missed": include_missed, "actor": actor})
        if total == 0:
            await job_repo.finish(conn, job.id, "done")
    found = await job_repo.get(db, job.id)
    assert found is not None
    return found


async def status(db: asyncpg.Pool, job_id: uuid.UUID, business_id: uuid.UUID | None = None) -> Status:
    job = await job_repo.get(db, job_id, business_id)
    if job is None:
        raise NotFound("No such recover job.")
    progress = await job_repo.recover_progress(db, job_id)
    if job.status == "running" and progress.waiting == 0 and progress.attempted >= job.total:
        job = await job_repo.finish(db, job_id, "done") or job
    return Status(job, progress)


async def cancel(db: asyncpg.Pool, job_id: uuid.UUID, actor: dict[str, object],
                 business_id: uuid.UUID | None = None) -> Status:
    """Stop a run: what it has not sent yet goes back to failed (what is in flight finishes)."""
    async with db.acquire() as conn, conn.transaction():
        job = await job_repo.get(conn, job_id, business_id)
        if job is None:
            raise NotFound("No such recover job.")
        if job.status == "running":
            withdrawn = await job_repo.cancel_recover(conn, job_id)
            await job_repo.finish(conn, job_id, "cancelled")
            await audit.record(conn, action="endpoint.recover_cancelled", business_id=job.business_id,
                               target_id=ids.encode("ep", job.endpoint_id), **actor,  # type: ignore[arg-type]
                               details={"job_id": ids.encode("rcv", job_id), "withdrawn": withdrawn})
    return await status(db, job_id, business_id)
