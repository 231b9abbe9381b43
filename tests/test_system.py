"""/healthz, /readyz and the OpenAPI document."""

from __future__ import annotations

import base64
import os

from aiohttp.test_utils import TestServer

from api.app import ROUTE_GROUPS, create_app
from shared.errors import CODES
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
    assert r.problem["type"] == CODES["service_unavailable"].type == "/docs/errors#service_unavailable"
    assert r.headers["Retry-After"] == "1"
    assert r.problem["checks"]["postgres"] == "ok"
    assert r.problem["checks"]["redis"].startswith("unavailable")


async def test_openapi_is_3_1_and_lists_every_api_route_but_no_page(api: Api, server: TestServer) -> None:
    r = await api.get("/openapi.json")
    assert r.status == 200
    doc = r.body
    assert doc["openapi"] == "3.1.0"
    pages = {(op.method.lower(), op.path) for group in ROUTE_GROUPS for op in group.operations if op.page}
    declared = {
        (route.method.lower(), route.resource.canonical)  # type: ignore[union-attr]
        for route in server.app.router.routes()
        if route.method != "HEAD"
    }
    documented = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    assert documented == declared - pages
    # The pages are the dashboard's (HTML and assets) and the errors page: nothing else is left out.
    assert {path for _, path in pages} == {"/docs/errors", "/dashboard", "/dashboard/settings/api-keys",
                                           "/dashboard/assets/dashboard.js", "/dashboard/assets/dashboard.css",
                                           "/dashboard/assets/icon.svg"}
    assert not [path for path in doc["paths"] if path.startswith(("/dashboard", "/docs"))]


async def test_problem_codes_in_the_document_are_the_registry(api: Api) -> None:
    doc = (await api.get("/openapi.json")).body
    problem = doc["components"]["schemas"]["Problem"]
    assert problem["properties"]["code"]["enum"] == list(CODES)
    assert "/docs/errors" in doc["info"]["description"]
