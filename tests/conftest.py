"""Fixtures: a fresh Postgres database per test session, real Redis, the app on a real port."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest
import redis
from aiohttp.test_utils import TestServer

from api.app import create_app
from shared.db import connect
from shared.migrations import migrate
from shared.settings import Settings
from tests.helpers import INTERNAL_TOKEN, Api, Tenant, make_tenant, with_database
from tests.receiver import running_receiver
from tests.test_delivery_reliability import PrivateRedis
from tests.worker import running_worker
from tests.world import World


def _server_url() -> str:
    return (
        os.environ.get("KAIHOOKS_TEST_PG_SERVER")
        or os.environ.get("DATABASE_URL")
        or "postgresql://postgres@127.0.0.1:5432/postgres"
    )


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A database of this test session's own, migrated; dropped when the session ends."""
    server = _server_url()
    name = f"kaihooks_test_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        conn = await asyncpg.connect(server)
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()
        settings = Settings(  # type: ignore[call-arg]
            DATABASE_URL=with_database(server, name), REDIS_URL="redis://unused", secret_key=_KEY
        )
        conn = await connect(settings)
        await migrate(conn)
        await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(server)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()

    asyncio.run(create())
    yield with_database(server, name)
    asyncio.run(drop())


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("KAIHOOKS_TEST_REDIS_URL") or os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/2"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


_KEY = base64.b64encode(b"k" * 32).decode()
# One master key for the whole session: rows sealed by one test stay readable by the next test's worker.
_SESSION_SECRET_KEY = base64.b64encode(os.urandom(32)).decode()
# This test session's own arq queue, so that two test runs sharing a Redis never take each other's jobs.
_QUEUE = f"kaihooks-test:{uuid.uuid4().hex[:8]}:queue"


@pytest.fixture
def clear_login_throttle(redis_url: str) -> Iterator[None]:
    """No sign-in failures counted before or after the test (they are per IP, and tests share 127.0.0.1)."""
    client = redis.Redis.from_url(redis_url)

    def clear() -> None:
        for key in client.scan_iter("kaihooks:login-failures:*"):
            client.delete(key)

    clear()
    yield
    clear()
    client.close()


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Override in a test module to change settings for its app."""
    return {}


@pytest.fixture
def settings(database_url: str, redis_url: str, settings_overrides: dict[str, Any]) -> Settings:
    values: dict[str, Any] = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "secret_key": _SESSION_SECRET_KEY,
        "internal_tokens": (INTERNAL_TOKEN, "test-internal-token-2"),
        "dev": True,
        "db_pool_min_size": 1,
        "db_pool_max_size": 5,
        # Every test signs in from 127.0.0.1; only the throttle's own tests use the real limit.
        "login_max_failures": 10_000,
        "login_max_failures_per_ip": 10_000,
        # Tests drive the dashboard's API far faster than a person: only the limit's own test uses a real one.
        "session_rate_limit_per_s": 10_000,
        "session_rate_limit_burst": 10_000,
        "queue_name": _QUEUE,
    }
    values.update(settings_overrides)
    return Settings(**values)


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[TestServer]:
    srv = TestServer(create_app(settings), host="127.0.0.1")
    await srv.start_server()
    yield srv
    await srv.close()


@pytest.fixture
async def api(server: TestServer) -> AsyncIterator[Api]:
    """An anonymous client of the running app (it keeps cookies, like a browser would)."""
    async with Api(str(server.make_url(""))) as client:
        yield client


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture
async def tenant(server: TestServer, database_url: str) -> AsyncIterator[Tenant]:
    """A business with a signed-in owner."""
    async with make_tenant(str(server.make_url("")), database_url) as t:
        yield t


@pytest.fixture
async def world(tenant: Tenant, api: Api, settings: Settings, db: asyncpg.Connection) -> AsyncIterator[World]:
    """A business with a key, a running worker and a receiver (use the FAST settings from tests.world)."""
    key = (await tenant.create_key(scopes=["webhooks:read", "webhooks:write", "events:read"]))["key"]
    async with running_receiver() as receiver, running_worker(settings):
        yield World(api, tenant, receiver, key, db)


@pytest.fixture
def own_redis() -> Iterator[PrivateRedis]:
    """A Redis of the test's own (to stop, restart or flush without touching other tests)."""
    server = PrivateRedis()
    try:
        yield server
    finally:
        with contextlib.suppress(Exception):  # a test may have stopped it
            server.stop()
