"""What every command's handler gets: the settings and a database pool, each opened on first use, and the
two errors a command raises besides the services' own (``shared.errors``).

A handler is ``async def handler(ctx: Context, args: argparse.Namespace) -> None``; ``app`` finds it by
name and imports its module only when that command runs.
"""

from __future__ import annotations

import argparse
import getpass
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the driver and the settings are imported when a command first needs them
    import asyncpg

    from shared.settings import Settings


class UsageError(Exception):
    """The command line is wrong (a malformed id, time, email or password): exit status 2."""


class CliError(Exception):
    """The command could not do its work: exit status 1 (like a ``KaihooksError`` from a service)."""


class Context:
    def __init__(self) -> None:
        self._settings: Settings | None = None
        self._pool: asyncpg.Pool | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from shared.settings import load_settings

            self._settings = load_settings()
        return self._settings

    async def db(self) -> asyncpg.Pool:
        """A small pool (a command runs a few statements, some in a transaction)."""
        if self._pool is None:
            from shared import db

            try:
                self._pool = await db.create_pool(self.settings, min_size=1, max_size=2)
            except db.ERRORS as exc:
                raise CliError(f"database unavailable: {exc}") from None
        return self._pool

    @property
    def has_db(self) -> bool:
        return self._pool is not None

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()


Handler = Callable[[Context, argparse.Namespace], Awaitable[None]]


async def run(handler: Handler, args: argparse.Namespace) -> None:
    ctx = Context()
    try:
        await handler(ctx, args)
    except Exception as exc:
        if ctx.has_db:
            from shared import db

            if isinstance(exc, db.ERRORS):
                raise CliError(f"database unavailable or refused the operation: {exc}") from None
        raise
    finally:
        await ctx.close()


def cli_actor() -> str:
    """Who ran the command, for the audit log: ``cli:<user>@<host>``."""
    return f"cli:{getpass.getuser()}@{socket.gethostname()}"
