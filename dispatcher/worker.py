"""The arq worker: its settings, and the resources every job shares (built in ``startup``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import Any

from arq.connections import RedisSettings
from arq.cron import cron
from arq.worker import Worker

from dispatcher import http, jobs
from dispatcher.engine import Engine
from shared.db import create_pool
from shared.queue import FAN_OUT, WAKE
from shared.settings import Settings

log = logging.getLogger("kaihooks.dispatcher")


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    db = await create_pool(settings, min_size=2, max_size=max(4, settings.db_pool_max_size))
    session = http.new_session(settings.delivery_timeout, settings.allow_private_targets, settings.max_in_flight)
    owner = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
    engine = Engine(settings, db, session, owner)
    engine.start()
    ctx.update(db=db, session=session, engine=engine)
    log.info("worker started", extra={"owner": owner})
    if ctx.get("ready") is not None:
        ctx["ready"].set()


async def shutdown(ctx: dict[str, Any]) -> None:
    engine: Engine | None = ctx.get("engine")
    if engine is not None:
        await engine.stop()
    if ctx.get("session") is not None:
        await ctx["session"].close()
    if ctx.get("db") is not None:
        await ctx["db"].close()
    log.info("worker stopped")


def worker_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``arq.Worker``: functions, crons and the shared resources."""
    every_5s = set(range(0, 60, 5))
    return {
        "functions": [jobs.fan_out, jobs.wake],
        "cron_jobs": [
            cron(jobs.sweep_unfanned, second=every_5s, run_at_startup=True, unique=False),
            cron(jobs.disable_failing_endpoints, minute=set(range(0, 60, 10)), second=0, run_at_startup=True),
            cron(jobs.prune_sessions, minute=set(range(0, 60, 10)), second=30),
        ],
        "on_startup": startup,
        "redis_settings": RedisSettings.from_dsn(settings.redis_url),
        "ctx": {"settings": settings},
        "job_timeout": max(60, int(settings.delivery_timeout * 6)),
        "keep_result": 0,
        "max_jobs": 50,
        "poll_delay": settings.queue_poll_s,
        "queue_name": settings.queue_name,
        # serve() handles signals and shutdown: arq's own would skip on_shutdown when a job is running.
        "handle_signals": False,
    }


JOB_GRACE_S = 5.0


async def serve(settings: Settings, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
    """Run the worker until ``stop`` is set, then shut down in order: take no more arq jobs, let the
    running ones finish, let the engine finish or hand back its deliveries, close connections.
    ``ready`` is set once the engine runs."""
    options = worker_options(settings)
    options["ctx"] = {**options["ctx"], "ready": ready}
    worker = Worker(**options)
    running = asyncio.create_task(worker.async_run())
    stopping = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    try:
        if running in done:
            running.result()  # the worker ended by itself: raise what ended it
        if worker.main_task is not None:
            worker.main_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        jobs = [t for t in worker.tasks.values() if not t.done()]
        if jobs:
            _, late = await asyncio.wait(jobs, timeout=JOB_GRACE_S)
            for task in late:
                task.cancel()
    finally:
        await shutdown(worker.ctx)
        with contextlib.suppress(Exception):
            await worker.pool.aclose(close_connection_pool=True)


assert FAN_OUT == jobs.fan_out.__name__ and WAKE == jobs.wake.__name__
