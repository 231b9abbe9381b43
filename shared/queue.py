"""Work for the dispatcher, enqueued in arq with deterministic job ids (so an enqueue is idempotent).

Redis only carries ids; Postgres holds the truth. If an enqueue is lost (Redis down
or restarted empty), the dispatcher's sweeper finds the work in Postgres again.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

import redis.exceptions
from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool

from shared import ids
from shared.settings import Settings

log = logging.getLogger("kaihooks.queue")

FAN_OUT = "fan_out"
WAKE = "wake"
# One queued at a time per queue: a wake-up already waiting covers later ones. (arq job ids are
# global across queues, hence the queue's name in it.)
WAKE_JOB_ID = "wake:{queue}"


def connect_queue(settings: Settings) -> ArqRedis:
    """The Redis client of an API process or the CLI: enqueues go to ``settings.queue_name``.
    Nothing connects until first use, so a process starts even while Redis is down."""
    pool = ConnectionPool.from_url(settings.redis_url, max_connections=200, socket_timeout=5,
                                   socket_connect_timeout=2, health_check_interval=30)
    return ArqRedis(pool, default_queue_name=settings.queue_name)


def fan_out_job_id(event_ids: Sequence[uuid.UUID]) -> str:
    """One job per accepted batch, named after its first event: the same batch always maps to one job."""
    return f"fan-out:{ids.encode('evt', event_ids[0])}"


async def enqueue_fan_out(queue: ArqRedis, event_ids: Sequence[uuid.UUID]) -> bool:
    """Ask the dispatcher to fan these events out; False (and a warning) if Redis is unreachable."""
    if not event_ids:
        return True
    try:
        await queue.enqueue_job(FAN_OUT, [str(e) for e in event_ids], _job_id=fan_out_job_id(event_ids))
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
        log.warning("could not enqueue fan-out; the sweeper will pick these events up",
                    extra={"event_ids": [ids.encode("evt", e) for e in event_ids[:10]], "count": len(event_ids)})
        return False
    return True


async def wake_workers(queue: ArqRedis) -> None:
    """Ask a worker to look for due deliveries now; harmless if Redis is down (workers poll anyway)."""
    try:
        await queue.enqueue_job(WAKE, _job_id=WAKE_JOB_ID.format(queue=queue.default_queue_name))
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
        log.warning("could not wake the workers; they will find the work at their next poll")
