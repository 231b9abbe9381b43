"""The Postgres pool: one per process, JSON columns decoded with orjson."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from shared.settings import Settings

Pool = asyncpg.Pool  # asyncpg.Pool[asyncpg.Record]
Connection = asyncpg.Connection

# What a statement may raise when Postgres is unreachable, restarting or refusing: a loop that must outlive
# an outage catches these and tries again. (A connection broken by a shutdown mid-statement may surface as
# asyncpg's InternalClientError, which is neither a PostgresError nor an InterfaceError.)
ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
          asyncpg.exceptions.InternalClientError)
# Of those, the ones that mean Postgres is not there (or not taking work now) rather than refusing the
# statement: a writer keeps its batch and tries again; for any other error it looks for the bad row.
UNAVAILABLE = (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError,
               asyncpg.PostgresConnectionError, asyncpg.exceptions.OperatorInterventionError,
               asyncpg.exceptions.InsufficientResourcesError, asyncpg.exceptions.TransactionRollbackError,
               asyncpg.exceptions.CannotConnectNowError)


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(
            typename, schema="pg_catalog", encoder=_dumps, decoder=orjson.loads, format="text"
        )


async def _reset(conn: asyncpg.Connection) -> None:
    # asyncpg's default reset costs a round trip on every release. We leave no session
    # state behind (no SET or temp tables on pooled connections; the worker's LISTEN removes
    # itself before release), so only an abandoned transaction needs undoing.
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


async def create_pool(settings: Settings, **overrides: Any) -> asyncpg.Pool:
    """Open the pool; callers close it. ``overrides`` are passed to ``asyncpg.create_pool``."""
    options: dict[str, Any] = {
        "min_size": settings.db_pool_min_size,
        "max_size": settings.db_pool_max_size,
        "init": _init_connection,
        "command_timeout": 30,
        "reset": _reset,
    }
    options.update(overrides)
    return await asyncpg.create_pool(settings.database_url, **options)


async def connect(settings: Settings) -> asyncpg.Connection:
    """A single connection, for the CLI and one-off jobs."""
    conn = await asyncpg.connect(settings.database_url)
    await _init_connection(conn)
    return conn
