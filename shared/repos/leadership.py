"""Work that one worker does for all of them (measuring the database-wide gauges): whoever holds a session-level
advisory lock. It is held on a connection of its own for as long as the worker leads; Postgres releases it when
that session ends, however it ends (a stop, a crash, a kill, a lost connection), and the next worker to ask
takes it. The connection must be a session of its own: direct, or through a pooler in session mode (like the
worker's LISTEN), never one in transaction mode."""

from __future__ import annotations

import asyncpg

# Advisory lock keys are per database: two deployments on one server, each with its own database, never meet.
GAUGES = int.from_bytes(b"kh:gauge", "big")


async def lead(conn: asyncpg.Connection, key: int) -> bool:
    """Whether this session holds the lock now: it already did, or it was free and is taken. (Asking
    ``pg_try_advisory_lock`` again while holding would stack the lock, hence the look in ``pg_locks`` first.)"""
    held: bool = await conn.fetchval(
        """SELECT CASE WHEN EXISTS (
                   SELECT FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
                   AND objsubid = 1 AND (classid::bigint << 32 | objid::bigint) = $1)
               THEN true ELSE pg_try_advisory_lock($1) END""", key)
    return held
