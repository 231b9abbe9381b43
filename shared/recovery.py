"""Recover: re-send an endpoint's failed deliveries of a time window (and, if asked, the events it
never got), paced, tracked, cancellable and audited. The HTTP route and the CLI both use this.

Its limits (docs/security.md): the window is at most ``KAIHOOKS_RETENTION_DAYS`` long (nothing older is
kept), one run re-sends at most ``KAIHOOKS_MAX_RECOVER_DELIVERIES``, and an endpoint has one running run
at a time. Runs are planned and started in Postgres, whatever their size."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from shared import ids
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.models import Endpoint
from shared.repos import audit
from shared.repos import endpoints as endpoint_repo
from shared.repos import recover_jobs as job_repo
from shared.repos.recover_jobs import RecoverJob, RecoverProgress
from shared.settings import Settings

DEFAULT_RATE_PER_S = 10.0
MAX_RATE_PER_S = 1000.0


@dataclass(frozen=True, slots=True)
class Plan:
    count: int
    failed: int
    missed: int
    by_event_type: dict[str, int]
    by_last_status: dict[str, int]
    max_count: int  # the most one run re-sends


@dataclass(frozen=True, slots=True)
class Status:
    job: RecoverJob
    progress: RecoverProgress


class AlreadyRunning(Conflict):
    """The endpoint has a run that is still sending: one at a time."""

    def __init__(self, job_id: uuid.UUID) -> None:
        self.job_id = ids.encode("rcv", job_id)
        super().__init__(f"A recover of this endpoint is running already ({self.job_id}): watch it at "
                         f"recover-jobs/{self.job_id}, or cancel it before starting another.")

    def extra(self) -> dict[str, Any]:
        return {"job_id": self.job_id}


async def _endpoint(db: asyncpg.Pool, endpoint_id: uuid.UUID, business_id: uuid.UUID | None) -> Endpoint:
    endpoint = (await endpoint_repo.get(db, business_id, endpoint_id) if business_id is not None
                else await endpoint_repo.get_any(db, endpoint_id))
    if endpoint is None:
        raise NotFound("No such endpoint.")
    return endpoint


def _window(settings: Settings, since: datetime, until: datetime | None) -> datetime:
    """The window's end; a window longer than retention is refused (what is older is deleted anyway)."""
    until = until or datetime.now(UTC)
    if since >= until:
        raise ValidationFailed.at(["body", "since"], "since must be before until")
    days = settings.retention_days
    if until - since > timedelta(days=days):
        raise ValidationFailed.at(
            ["body", "since"],
            f"the window may be at most {days} days long (KAIHOOKS_RETENTION_DAYS: nothing older is kept); "
            f"give a since after {until - timedelta(days=days):%Y-%m-%dT%H:%M:%SZ}")
    return until


async def plan(db: asyncpg.Pool, settings: Settings, endpoint_id: uuid.UUID, *, since: datetime,
               until: datetime | None, include_missed: bool, business_id: uuid.UUID | None = None) -> Plan:
    """What a recover would send, by event type and by last response status; changes nothing."""
    await _endpoint(db, endpoint_id, business_id)
    p = await job_repo.plan_recover(db, endpoint_id, since, _window(settings, since, until), include_missed)
    return Plan(p.failed + p.missed, p.failed, p.missed, p.by_event_type, p.by_last_status,
                settings.max_recover_deliveries)


async def start(db: asyncpg.Pool, settings: Settings, endpoint_id: uuid.UUID, *, since: datetime,
                until: datetime | None, include_missed: bool, rate_per_s: float, actor: str,
                audit_actor: dict[str, object], business_id: uuid.UUID | None = None) -> RecoverJob:
    """Start a paced recover run; each delivery is due ``1 / rate_per_s`` seconds after the previous one,
    and failed at the latest the replay schedule's total after it is due."""
    if not 0 < rate_per_s <= MAX_RATE_PER_S:
        raise ValidationFailed.at(["body", "rate"], f"rate must be above 0 and at most {MAX_RATE_PER_S:g} per second")
    endpoint = await _endpoint(db, endpoint_id, business_id)
    until = _window(settings, since, until)
    if not endpoint.enabled:
        raise Conflict("The endpoint is disabled; enable it before recovering.")
    job = RecoverJob(ids.new_uuid(), endpoint.business_id, endpoint_id, since, until, include_missed, rate_per_s,
                     0, "running", actor, datetime.now(UTC), None)
    async with db.acquire() as conn, conn.transaction():
        await job_repo.lock_endpoint(conn, endpoint_id)
        await job_repo.finish_idle(conn, endpoint_id)
        if (running := await job_repo.running(conn, endpoint_id)) is not None:
            raise AlreadyRunning(running)
        cap = settings.max_recover_deliveries
        if await job_repo.count_recover(conn, endpoint_id, since, until, include_missed, cap) > cap:
            raise ValidationFailed.at(
                ["body", "since"],
                f"the window holds more than {cap} deliveries to re-send, the most one run re-sends "
                "(KAIHOOKS_MAX_RECOVER_DELIVERIES): narrow the window (a later since or an earlier until; a dry run "
                "counts) and recover the rest in further runs")
        await job_repo.create(conn, job)
        total = await job_repo.start_recover(conn, job, settings.replay_deadline_s)
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
