"""The Redis client of an API process: key checks, rate limits, sign-in throttles, data versions.

Redis keeps nothing we cannot lose (``shared.redis_keys``); work for the dispatcher lives in Postgres.
"""

from __future__ import annotations

from redis.asyncio import ConnectionPool, Redis

from shared.settings import Settings


def connect(settings: Settings) -> Redis:
    """Nothing connects until first use, so a process starts even while Redis is down."""
    pool = ConnectionPool.from_url(settings.redis_url, max_connections=200, socket_timeout=5,
                                   socket_connect_timeout=2, health_check_interval=30)
    return Redis(connection_pool=pool)
