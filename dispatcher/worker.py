"""The arq worker: its settings, and the resources every job shares (built in ``startup``)."""

from __future__ import annotations

import logging
from typing import Any

from arq.connections import RedisSettings
from arq.cron import cron

from shared.db import create_pool
from shared.repos import sessions as session_repo
from shared.settings import Settings

log = logging.getLogger("kaihooks.dispatcher")


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    ctx["db"] = await create_pool(settings)
    log.info("worker started")


async def shutdown(ctx: dict[str, Any]) -> None:
    db = ctx.get("db")
    if db is not None:
        await db.close()
    log.info("worker stopped")


async def prune_sessions(ctx: dict[str, Any]) -> int:
    """Cron: delete expired dashboard sessions in bounded batches."""
    removed = 0
    while (n := await session_repo.delete_expired(ctx["db"])) > 0:
        removed += n
    return removed


def worker_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``arq.Worker``: functions, crons and the shared resources."""
    return {
        "functions": [],
        "cron_jobs": [cron(prune_sessions, minute=set(range(0, 60, 10)), run_at_startup=True)],
        "on_startup": startup,
        "on_shutdown": shutdown,
        "redis_settings": RedisSettings.from_dsn(settings.redis_url),
        "ctx": {"settings": settings},
        "job_timeout": max(60, int(settings.delivery_timeout * 6)),
        "keep_result": 0,
        "handle_signals": True,
    }
