"""The Redis client of an API process: key checks, rate limits, sign-in throttles, data versions.

Redis keeps nothing we cannot lose (``shared.redis_keys``); work for the dispatcher lives in Postgres.
A Redis that cannot be reached and a Redis that answers an error (out of memory, read-only after a
failover) are the same to every caller: each has one degraded mode for both (README, "API keys").
"""

from __future__ import annotations

import logging

import redis.exceptions
from redis.asyncio import ConnectionPool, Redis

from shared import metrics
from shared.settings import Settings

log = logging.getLogger("kaihooks.redis")

# What a caller that can carry on without Redis catches. ResponseError covers OOM, READONLY, a script
# error; a client-side mistake (DataError) is a bug and is not caught.
UNUSABLE: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.ResponseError, OSError,
)


def connect(settings: Settings) -> Redis:
    """Nothing connects until first use, so a process starts even while Redis is down."""
    pool = ConnectionPool.from_url(settings.redis_url, max_connections=200, socket_timeout=5,
                                   socket_connect_timeout=2, health_check_interval=30)
    return Redis(connection_pool=pool)


def note_failure(use: str, exc: BaseException) -> None:
    """Count and log a Redis failure that the caller survives (``kaihooks_redis_failures_total``)."""
    kind = "error" if isinstance(exc, redis.exceptions.ResponseError) else "unreachable"
    metrics.REDIS_FAILURES.labels(use=use, kind=kind).inc()
    log.warning("redis %s during %s; carrying on degraded", "answered an error" if kind == "error" else "unreachable",
                use, extra={"use": use, "kind": kind, "error": f"{type(exc).__name__}: {exc}"[:300]})
