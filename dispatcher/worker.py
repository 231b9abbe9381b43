"""The dispatcher process: the delivery engine (Postgres only: it claims due deliveries when notified
and at every poll) and an arq worker running the housekeeping crons (Redis). Losing Redis pauses only
the crons."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import Any

import prometheus_client
from arq.connections import RedisSettings
from arq.cron import cron
from arq.worker import Worker

from dispatcher import jobs, send
from dispatcher.engine import Engine
from shared.db import create_pool
from shared.settings import Settings

log = logging.getLogger("kaihooks.dispatcher")

JOB_GRACE_S = 5.0  # how long running crons may take to finish at stop
RECONNECT_MAX_S = 10.0


async def startup(settings: Settings) -> dict[str, Any]:
    """The resources every job shares: Postgres pool, HTTP session, the engine (started)."""
    db = await create_pool(settings, min_size=2, max_size=max(4, settings.db_pool_max_size))
    session = send.new_session(settings.delivery_timeout, settings.allow_private_targets, settings.max_in_flight)
    owner = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
    engine = Engine(settings, db, session, owner)
    engine.start()
    if settings.metrics_port:
        prometheus_client.start_http_server(settings.metrics_port, addr=settings.metrics_host)
    log.info("worker started", extra={"owner": owner})
    return {"settings": settings, "db": db, "session": session, "engine": engine}


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
    """Keyword arguments for ``arq.Worker`` (the shared resources are passed as ``ctx``)."""
    return {
        "functions": [],
        "cron_jobs": [
            cron(jobs.disable_failing_endpoints, minute=set(range(0, 60, 10)), second=0, run_at_startup=True),
            cron(jobs.prune_sessions, minute=set(range(0, 60, 10)), second=30),
            cron(jobs.apply_retention, minute=17, second=0, run_at_startup=False),
        ],
        "redis_settings": RedisSettings.from_dsn(settings.redis_url),
        "job_timeout": max(60, int(settings.delivery_timeout * 6)),
        "keep_result": 0,
        "max_jobs": 50,
        "poll_delay": settings.queue_poll_s,
        "queue_name": settings.queue_name,
        # serve() handles signals and shutdown: arq's own would skip on_shutdown when a job is running.
        "handle_signals": False,
    }


async def _run_arq(worker: Worker, stop: asyncio.Event) -> bool:
    """Run arq until it fails (True: Redis trouble, try again) or ``stop`` is set (False)."""
    running = asyncio.create_task(worker.async_run())
    stopping = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    failed = running in done and running.exception() is not None
    if failed:
        log.warning("the job queue stopped (Redis unreachable?); deliveries go on from Postgres; reconnecting",
                    exc_info=running.exception())
    else:
        # Let arq leave its loop by itself (burst mode with nothing more to start): it then waits for
        # its running jobs and releases its Redis connections. Cancelling it mid-poll could leak one.
        worker.burst, worker.max_burst_jobs = True, 0
        _, late = await asyncio.wait({running}, timeout=JOB_GRACE_S)
        if late:
            for task in worker.tasks.values():
                task.cancel()
            running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    with contextlib.suppress(Exception):
        await worker.pool.aclose(close_connection_pool=True)
    return failed and not stop.is_set()


async def serve(settings: Settings, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set, then shut down in order: no more arq jobs, running ones finish,
    the engine finishes or hands back its deliveries, connections close. ``ready`` is set once
    the engine runs. If Redis goes away, arq is restarted with backoff; deliveries never stop."""
    ctx = await startup(settings)
    if ready is not None:
        ready.set()
    try:
        backoff = 0.5
        while not stop.is_set():
            if not await _run_arq(Worker(**worker_options(settings), ctx=ctx), stop):
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(RECONNECT_MAX_S, backoff * 2)
    finally:
        await shutdown(ctx)

