"""The application factory: ``create_app(settings)`` builds everything; nothing happens at import."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from api import openapi
from api.context import DB, KEYS, OPENAPI, PAGES, REDIS, SETTINGS
from api.dashboard import routes as dashboard
from api.keyauth import KeyVerifier
from api.pagecache import PageCache
from api.problems import problem_middleware
from api.routes import account, api_keys, events_internal, internal, reads, system, webhooks
from api.routing import install
from api.security import security_headers_middleware
from shared import redis_client
from shared.db import create_pool
from shared.settings import Settings

ROUTE_GROUPS = [system.routes, account.routes, api_keys.routes, reads.routes, webhooks.routes, internal.routes,
                events_internal.routes, dashboard.routes]


async def _postgres(app: web.Application) -> AsyncIterator[None]:
    app[DB] = await create_pool(app[SETTINGS])
    yield
    await app[DB].close()


async def _redis(app: web.Application) -> AsyncIterator[None]:
    app[REDIS] = redis_client.connect(app[SETTINGS])
    yield
    await app[REDIS].aclose(close_connection_pool=True)


async def _key_verifier(app: web.Application) -> AsyncIterator[None]:
    verifier = KeyVerifier(app[SETTINGS], app[DB], app[REDIS])
    app[KEYS] = verifier
    flusher = asyncio.create_task(verifier.run_flusher())
    yield
    flusher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await flusher


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[security_headers_middleware, problem_middleware],
        client_max_size=settings.max_body_bytes_internal,
    )
    app[SETTINGS] = settings
    app[PAGES] = PageCache()
    app.cleanup_ctx.extend([_postgres, _redis, _key_verifier])
    operations = install(app, ROUTE_GROUPS)
    app[OPENAPI] = openapi.build(operations)
    return app
