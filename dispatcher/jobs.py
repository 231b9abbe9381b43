"""arq jobs and crons of the dispatcher. Arguments are ids only; each job is safe to run twice."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from dispatcher.engine import Engine
from shared import ids
from shared.repos import audit
from shared.repos import endpoints as endpoint_repo
from shared.repos import sessions as session_repo
from shared.settings import Settings

log = logging.getLogger("kaihooks.dispatcher")


async def fan_out(ctx: dict[str, Any], event_ids: list[str]) -> int:
    """Create and start the deliveries of freshly accepted events (enqueued by the API after commit)."""
    engine: Engine = ctx["engine"]
    return await engine.fan_out([uuid.UUID(e) for e in event_ids])


async def wake(ctx: dict[str, Any]) -> None:
    """Look for due deliveries now (enqueued after a retry, a test or a recover)."""
    engine: Engine = ctx["engine"]
    await engine.poll_once()


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
        disabled = await endpoint_repo.disable(engine.db, endpoint.id, reason)
        if disabled is None:
            continue
        count += 1
        await audit.record(engine.db, action="endpoint.disabled", business_id=endpoint.business_id,
                           target_id=endpoint.public_id, details={"reason": reason})
        log.warning("endpoint disabled", extra={"endpoint_id": endpoint.public_id,
                                               "business_id": ids.encode("biz", endpoint.business_id),
                                               "reason": reason})
    return count


async def prune_sessions(ctx: dict[str, Any]) -> int:
    """Cron: delete expired dashboard sessions in bounded batches."""
    engine: Engine = ctx["engine"]
    removed = 0
    while (n := await session_repo.delete_expired(engine.db)) > 0:
        removed += n
    return removed
