"""The dispatcher process: the delivery engine (Postgres only: it claims due deliveries when notified
and at every poll) and the housekeeping crons (``dispatcher.crons``, on arq and Redis). Losing Redis pauses
only the crons."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any

import prometheus_client

from dispatcher import crons, send
from dispatcher.engine import Engine
from shared.db import create_pool
from shared.settings import Settings

log = logging.getLogger("kaihooks.dispatcher")



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


async def serve(settings: Settings, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set, then shut down in order: no more crons, running ones finish,
    the engine finishes or hands back its deliveries, connections close. ``ready`` is set once
    the engine runs. If Redis goes away, the crons wait for it; deliveries never stop."""
    ctx = await startup(settings)
    if ready is not None:
        ready.set()
    try:
        await crons.run(settings, ctx, stop)
    finally:
        await shutdown(ctx)

