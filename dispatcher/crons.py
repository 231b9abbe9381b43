"""The worker's housekeeping crons, on arq: the one module that wires arq.

arq runs three crons (``dispatcher.jobs``): disable endpoints failing for days, prune expired sessions, apply
retention. Deliveries never go through it: the engine claims them from Postgres. arq keeps its queue in Redis;
each cron tick is one job whose id names the cron and the tick, so of several workers exactly one runs it.
If Redis or its queue is lost (restarted empty, flushed, failed over), a tick's job may be lost with it:
that cron simply runs at its next tick (each is idempotent and catches up on what the last one left).
If Redis is unreachable the crons wait, with backoff, and deliveries go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from arq.connections import RedisSettings
from arq.cron import CronJob, cron
from arq.worker import Worker

from dispatcher import jobs
from shared.settings import Settings

log = logging.getLogger("kaihooks.dispatcher")



def schedule() -> list[CronJob]:
    """The crons, new objects each time: arq keeps a cron's next run on its object, and ``run_at_startup``
    only applies to one that has not run yet (each worker started in one process must start afresh)."""
    return [
        cron(jobs.disable_failing_endpoints, minute=set(range(0, 60, 10)), second=0, run_at_startup=True),
        cron(jobs.prune_sessions, minute=set(range(0, 60, 10)), second=30),
        cron(jobs.apply_retention, minute=17, second=0, run_at_startup=False),
    ]

# A cron still running after this long is cancelled (retention stops itself well before: jobs.RETENTION_BUDGET_S).
CRON_TIMEOUT_S = 300
STOP_GRACE_S = 5.0  # how long running crons may take to finish at stop
RECONNECT_MAX_S = 10.0


def worker_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``arq.Worker`` (the worker's shared resources are passed as ``ctx``)."""
    crons = schedule()
    return {
        "functions": [],
        "cron_jobs": crons,
        "redis_settings": RedisSettings.from_dsn(settings.redis_url),
        "job_timeout": CRON_TIMEOUT_S,
        "keep_result": 0,
        "max_jobs": len(crons),
        "poll_delay": settings.queue_poll_s,
        "queue_name": settings.queue_name,
        # run() handles stopping: arq's own signal handling would skip on_shutdown when a job is running.
        "handle_signals": False,
    }


async def _run_once(worker: Worker, stop: asyncio.Event) -> bool:
    """Run arq until it fails (True: Redis trouble, try again) or ``stop`` is set (False)."""
    running = asyncio.create_task(worker.async_run())
    stopping = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    failed = running in done and running.exception() is not None
    if failed:
        log.warning("the cron queue stopped (Redis unreachable?); deliveries go on from Postgres; reconnecting",
                    exc_info=running.exception())
    else:
        # Let arq leave its loop by itself (burst mode with nothing more to start): it then waits for
        # its running jobs and releases its Redis connections. Cancelling it mid-poll could leak one.
        worker.burst, worker.max_burst_jobs = True, 0
        _, late = await asyncio.wait({running}, timeout=STOP_GRACE_S)
        if late:
            for task in worker.tasks.values():
                task.cancel()
            running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    with contextlib.suppress(Exception):
        await worker.pool.aclose(close_connection_pool=True)
    return failed and not stop.is_set()


async def run(settings: Settings, ctx: dict[str, Any], stop: asyncio.Event) -> None:
    """Run the crons until ``stop`` is set; if Redis goes away, start arq again with backoff."""
    backoff = 0.5
    while not stop.is_set():
        if not await _run_once(Worker(**worker_options(settings), ctx=ctx), stop):
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), backoff)
        backoff = min(RECONNECT_MAX_S, backoff * 2)
