"""/healthz, /readyz and the OpenAPI document."""

from __future__ import annotations

import base64
import os

from aiohttp.test_utils import TestServer

from api.app import create_app
from shared.settings import Settings
from tests.helpers import Api


async def test_healthz_answers_ok(api: Api) -> None:
    r = await api.get("/healthz")
    assert r.status == 200
    assert r.body == {"status": "ok"}


async def test_readyz_ok_when_postgres_and_redis_answer(api: Api) -> None:
    r = await api.get("/readyz")
    assert r.status == 200
    assert r.body["checks"] == {"postgres": "ok", "redis": "ok"}


async def test_readyz_is_503_problem_when_redis_is_unreachable(database_url: str) -> None:
    settings = Settings(  # type: ignore[call-arg]
        DATABASE_URL=database_url, REDIS_URL="redis://127.0.0.1:1/0",
        secret_key=base64.b64encode(os.urandom(32)).decode(),
    )
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        async with Api(str(server.make_url(""))) as api:
            r = await api.get("/readyz")
    finally:
        await server.close()
    assert r.status == 503
    assert r.problem["code"] == "service_unavailable"
    assert r.problem["checks"]["postgres"] == "ok"
    assert r.problem["checks"]["redis"].startswith("unavailable")


async def test_openapi_is_3_1_and_lists_every_route(api: Api, server: TestServer) -> None:
    r = await api.get("/openapi.json")
    assert r.status == 200
    doc = r.body
    assert doc["openapi"] == "3.1.0"
    declared = {
        (route.method.lower(), route.resource.canonical)  # type: ignore[union-attr]
        for route in server.app.router.routes()
        if route.method != "HEAD"
    }
    documented = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    assert declared == documented
