"""The access log (KAIHOOKS_ACCESS_LOG): one JSON line per request with the route template, the status, the
client and who authenticated it by public id; never a key, never a query string. The app runs on a real
port with its access log on, as ``python -m api`` runs it; each line is checked as the JSON formatter writes it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestServer

from api.app import create_app, runner_options
from shared import apikeys
from shared.logs import JsonFormatter
from shared.settings import Settings
from tests.helpers import Api, Tenant, until


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"access_log": True}


@pytest.fixture
async def logged(settings: Settings, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Api]:
    """A client of the app with its access log on (captured)."""
    caplog.set_level(logging.INFO, logger="kaihooks.access")
    srv = TestServer(create_app(settings), host="127.0.0.1")
    await srv.start_server(**runner_options(settings))
    async with Api(str(srv.make_url(""))) as client:
        yield client
    await srv.close()


async def _lines(caplog: pytest.LogCaptureFixture, count: int) -> list[tuple[str, dict[str, Any]]]:
    """The first ``count`` access log lines, as written and as parsed (they are written after the response)."""
    def records() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "kaihooks.access"]

    await until(lambda: len(records()) >= count, 5, f"{count} access log lines")
    formatter = JsonFormatter()
    return [(line, orjson.loads(line)) for line in (formatter.format(r) for r in records()[:count])]


async def test_a_key_request_is_logged_with_the_key_id_and_never_the_key(
        tenant: Tenant, logged: Api, caplog: pytest.LogCaptureFixture) -> None:
    created = await tenant.create_key(scopes=["calls:read"])
    key = created["key"]
    r = await logged.get(f"{tenant.path}/calls?limit=5&api_key={key}", key=key)
    assert r.status == 200
    [(line, entry)] = await _lines(caplog, 1)
    assert key not in line and key[8:-6] not in line and "api_key=" not in line and "limit=" not in line
    assert entry["msg"] == "request" and entry["level"] == "info"
    assert {k: entry[k] for k in ("method", "route", "path", "status", "client", "key_id", "user_id")} == {
        "method": "GET", "route": "/v1/businesses/{business_id}/calls", "path": f"{tenant.path}/calls",
        "status": 200, "client": "127.0.0.1", "key_id": created["id"], "user_id": None}
    assert isinstance(entry["duration_ms"], float) and entry["duration_ms"] >= 0


async def test_a_refused_key_is_not_logged(logged: Api, caplog: pytest.LogCaptureFixture) -> None:
    """Unknown, malformed, or (by mistake) in the path: the presented key appears in no line."""
    unknown = apikeys.generate().secret
    assert (await logged.get("/v1/me", key=unknown)).status == 401
    assert (await logged.get("/v1/me", key=unknown[:-3])).status == 401
    assert (await logged.get(f"/v1/{unknown}")).status == 404
    lines = await _lines(caplog, 3)
    for line, _ in lines:
        assert unknown not in line and unknown[8:-6] not in line
    assert [(e["route"], e["status"], e["key_id"]) for _, e in lines] == [
        ("/v1/me", 401, None), ("/v1/me", 401, None), ("unmatched", 404, None)]
    assert lines[2][1]["path"] == "/v1/kc_live_[redacted]"


async def test_a_dashboard_request_is_logged_with_the_user_id(
        tenant: Tenant, logged: Api, caplog: pytest.LogCaptureFixture) -> None:
    assert (await logged.login(tenant.owner_email, tenant.password)).status == 200
    me = await logged.get("/v1/me")
    assert me.status == 200
    [_, (line, entry)] = await _lines(caplog, 2)
    assert entry["route"] == "/v1/me" and entry["key_id"] is None
    assert entry["user_id"] == me.body["user"]["id"] and entry["user_id"].startswith("usr_")
    assert me.body["csrf_token"] not in line
