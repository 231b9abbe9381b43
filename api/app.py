"""The application factory: ``create_app(settings)`` builds everything; nothing happens at import."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from api import openapi
from api.client_address import ClientAccessLogger
from api.context import DB, KEYS, OPENAPI, PAGES, REDIS, SESSION_LIMIT, SETTINGS, SIGN_INS
from api.dashboard import routes as dashboard
from api.keyauth import KeyVerifier
from api.middleware import middleware
from api.pagecache import PageCache
from api.ratelimit import SessionRateLimit
from api.routes import account, api_keys, events_internal, internal, reads, system, webhooks
from api.routing import install
from shared import redis_client
from shared.db import create_pool
from shared.settings import Settings
from shared.sign_in import SignIns

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


async def _sign_in(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    app[SIGN_INS] = SignIns(settings, app[DB], app[REDIS])
    app[SESSION_LIMIT] = SessionRateLimit(app[REDIS], settings.session_rate_limit_per_s,
                                          settings.session_rate_limit_burst)
    yield


async def _key_verifier(app: web.Application) -> AsyncIterator[None]:
    verifier = KeyVerifier(app[SETTINGS], app[DB], app[REDIS])
    app[KEYS] = verifier
    flusher = asyncio.create_task(verifier.run_flusher())
    yield
    flusher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await flusher
    await verifier.aclose()


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[middleware(settings)],  # metrics, security headers, problem details, body limit
        client_max_size=settings.max_body_bytes_internal,
    )
    app[SETTINGS] = settings
    app[PAGES] = PageCache()
    app.cleanup_ctx.extend([_postgres, _redis, _key_verifier, _sign_in])
    operations = install(app, ROUTE_GROUPS)
    app[OPENAPI] = openapi.build(operations)
    return app


def runner_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``web.run_app`` (and test servers): the access log, when configured, names the
    client as the rest of the service does (``api.client_address``)."""
    return {"access_log_class": ClientAccessLogger,
            "access_log": logging.getLogger("kaihooks.access") if settings.access_log else None}
