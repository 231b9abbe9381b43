"""Postgres stopping under the API is a 503, never a 500 (quality.md R3), and the API's background work
outlives it.

Found by the reliability drill (``make chaos``): when Postgres shuts down (``pg_ctl stop -m fast``) while
requests are in flight, asyncpg reports the dying pooled connections as ``AdminShutdownError`` or, raised
before the statement is even sent, ``InternalClientError`` ("cannot switch to state 12; another operation
(2) is in progress"). Both reached the API's catch-all and were answered ``500 internal_error``; the same
InternalClientError ended the task that records API keys' ``last_used_at``, for the life of the process."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from api.keyauth import KeyVerifier
from shared import redis_client
from shared.repos import api_keys, ingest
from shared.settings import Settings
from tests.helpers import INTERNAL_TOKEN, Api, Tenant
from tests.test_publishing import event

SHUTDOWN_ERRORS = [
    asyncpg.exceptions.InternalClientError("cannot switch to state 12; another operation (2) is in progress"),
    asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.exceptions.CrashShutdownError("terminating connection because of crash of another server process"),
]


@pytest.mark.parametrize("error", SHUTDOWN_ERRORS, ids=lambda e: type(e).__name__)
async def test_publishing_while_postgres_shuts_down_is_503_problem(
    api: Api, tenant: Tenant, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    async def shutting_down(*args: object, **kwargs: object) -> object:
        raise error

    monkeypatch.setattr(ingest, "accept", shutting_down)
    r = await api.post("/internal/v1/events", json=event(tenant.business_id), key=INTERNAL_TOKEN)
    assert r.status == 503, (r.status, r.body)
    assert r.problem["code"] == "service_unavailable"
    assert r.headers["Retry-After"] == "1"


async def test_last_used_stamps_survive_a_postgres_shutdown(settings: Settings,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    async def shutting_down(*args: object, **kwargs: object) -> None:
        raise SHUTDOWN_ERRORS[0]

    monkeypatch.setattr(api_keys, "touch_many", shutting_down)
    redis = redis_client.connect(settings)
    try:
        verifier = KeyVerifier(settings, db=None, redis=redis)  # type: ignore[arg-type]
        key_id, at = uuid.uuid4(), datetime.now(UTC)
        verifier._used[key_id] = at
        await verifier.flush_last_used()  # the flusher's loop would have ended here
        assert verifier._used == {key_id: at}, "the stamp is kept for the next flush"
    finally:
        await redis.aclose(close_connection_pool=True)
