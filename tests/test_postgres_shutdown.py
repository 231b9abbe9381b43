"""Postgres stopping under the API is a 503, never a 500 (quality.md R3).

Found by the reliability drill (``make chaos``): when Postgres shuts down (``pg_ctl stop -m fast``) while
requests are in flight, asyncpg reports the dying pooled connections as ``AdminShutdownError`` or, raised
before the statement is even sent, ``InternalClientError`` ("cannot switch to state 12; another operation
(2) is in progress"). Both reached the API's catch-all and were answered ``500 internal_error``."""

from __future__ import annotations

import asyncpg
import pytest

from shared.repos import ingest
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
