"""The bodies of the housekeeping crons (``dispatcher.crons`` schedules them). Each is safe to run twice."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from dispatcher.engine import Engine
from shared.publishing import bump_data_versions
from shared.repos import Executor
from shared.repos import endpoints as endpoint_repo
from shared.repos import retention as retention_repo
from shared.repos import sessions as session_repo
from shared.settings import Settings
from shared.webhook_service import disable_endpoint

log = logging.getLogger("kaihooks.dispatcher")


async def disable_failing_endpoints(ctx: dict[str, Any]) -> int:
    """Cron: disable endpoints that have failed every attempt for KAIHOOKS_DISABLE_AFTER_FAILING_S."""
    engine: Engine = ctx["engine"]
    settings: Settings = ctx["settings"]
    cutoff = datetime.now(UTC) - timedelta(seconds=settings.disable_after_failing_s)
    days = settings.disable_after_failing_s / 86400
    reason = f"every attempt failed for {days:g} days" if days >= 1 else \
        f"every attempt failed for {settings.disable_after_failing_s} s"
    count = 0
    for endpoint in await endpoint_repo.failing_since_before(engine.db, cutoff):
        if await disable_endpoint(engine.db, endpoint.id, reason, "failing") is not None:
            count += 1
    return count


async def prune_sessions(ctx: dict[str, Any]) -> int:
    """Cron: delete expired dashboard sessions in bounded batches."""
    engine: Engine = ctx["engine"]
    removed = 0
    while (n := await session_repo.delete_expired(engine.db)) > 0:
        removed += n
    return removed


RETENTION_BATCH = 5000  # rows per statement: each a short transaction of its own
RETENTION_BUDGET_S = 20.0  # per run; what is left is deleted by the next run
RETENTION_PAUSE_S = 0.005  # between batches: the engine's own queries get the pool and the locks


async def apply_retention(ctx: dict[str, Any], *, batch: int = RETENTION_BATCH,
                          budget_s: float = RETENTION_BUDGET_S) -> dict[str, int]:
    """Cron: delete attempts, settled deliveries and events older than KAIHOOKS_RETENTION_DAYS, in that
    order (an event goes once it has no delivery left), ``batch`` rows per statement. Starts no new
    batch once ``budget_s`` has passed (the first always runs); the next run goes on. Returns the counts."""
    engine: Engine = ctx["engine"]
    settings: Settings = ctx["settings"]
    started = time.monotonic()
    cutoff = datetime.now(UTC) - timedelta(days=settings.retention_days)
    deleted = {"attempts": 0, "deliveries": 0, "events": 0}
    business_ids: set[uuid.UUID] = set()

    async def delete_events(db: Executor, cutoff: datetime, batch: int) -> int:
        result = await retention_repo.delete_events(db, cutoff, batch)
        business_ids.update(result.business_ids)
        return result.count

    steps = (("attempts", retention_repo.delete_attempts), ("deliveries", retention_repo.delete_deliveries),
             ("events", delete_events))
    complete, batches = True, 0
    try:
        for kind, step in steps:
            while True:
                if batches and time.monotonic() - started >= budget_s:
                    complete = False
                    break
                n = await step(engine.db, cutoff, batch)
                batches += 1
                deleted[kind] += n
                if n < batch:
                    break
                await asyncio.sleep(RETENTION_PAUSE_S)
            if not complete:
                break
    except BaseException:
        complete = False  # a failed (or cancelled) statement: the next run goes on from there
        raise
    finally:
        # The event log of these businesses changed: their cached read pages must go.
        await bump_data_versions(ctx["redis"], business_ids)
        log.info("retention applied" if complete else "retention paused; the next run goes on",
                 extra={**deleted, "retention_days": settings.retention_days, "complete": complete,
                        "duration_ms": round((time.monotonic() - started) * 1000)})
    return deleted
