"""/healthz, /readyz and the OpenAPI document (checked with openapi-spec-validator, and against the
pydantic models its parameters come from)."""

from __future__ import annotations

import base64
import copy
import os
import re
import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from openapi_spec_validator import OpenAPIV31SpecValidator
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from api.app import ROUTE_GROUPS, create_app
from api.schemas import CallsQuery, DeliveriesQuery, EventsQuery, ListQuery
from shared import ids
from shared.errors import CODES
from shared.events import PUBLISHABLE_TYPES
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


async def test_openapi_passes_the_openapi_3_1_validator(api: Api) -> None:
    doc = (await api.get("/openapi.json")).body
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in OpenAPIV31SpecValidator(doc).iter_errors()]
    assert errors == []
    # The validator is not a formality: a parameter without "in" and a dangling $ref are reported.
    broken = copy.deepcopy(doc)
    op = broken["paths"]["/v1/businesses/{business_id}/calls"]["get"]
    del op["parameters"][0]["in"]
    op["responses"]["200"]["content"]["application/json"]["schema"] = {"$ref": "#/components/schemas/Nothing"}
    with pytest.raises(OpenAPIValidationError):
        OpenAPIV31SpecValidator(broken).validate()


def _parameters(doc: dict[str, Any], path: str, method: str = "get") -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in doc["paths"][path][method]["parameters"]}


async def test_openapi_parameters_are_typed(api: Api) -> None:
    doc = (await api.get("/openapi.json")).body
    base = "/v1/businesses/{business_id}"
    calls = _parameters(doc, base + "/calls")
    assert calls["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}
    assert calls["since"]["schema"] == calls["until"]["schema"] == {"type": "string", "format": "date-time"}
    assert calls["status"]["schema"]["enum"] == ["ringing", "in_progress", "completed", "missed", "failed",
                                                 "voicemail"]
    assert calls["agent_id"]["schema"] == {"type": "string", "maxLength": 200}
    assert not any(p["required"] for p in calls.values() if p["in"] == "query")
    assert _parameters(doc, base + "/events")["type"]["schema"] == {"type": "string", "enum": list(PUBLISHABLE_TYPES)}
    deliveries = _parameters(doc, base + "/webhook-endpoints/{endpoint_id}/deliveries")
    assert deliveries["status"]["schema"] == {"type": "string", "enum": ["pending", "succeeded", "failed"]}
    # Every query parameter is its model's field, named the same (no null: an absent parameter is how to omit it).
    for path, model in [(base + "/api-keys", ListQuery), (base + "/calls", CallsQuery), (base + "/events", EventsQuery),
                        (base + "/webhook-endpoints/{endpoint_id}/deliveries", DeliveriesQuery)]:
        query = {name for name, p in _parameters(doc, path).items() if p["in"] == "query"}
        assert query == set(model.model_fields), path
    # Path ids: the prefix and shape shared/ids.py makes and accepts, no more, no less.
    seen = set()
    for path, ops in doc["paths"].items():
        for op in ops.values():
            for p in op["parameters"]:
                if p["in"] != "path":
                    continue
                assert p["required"] is True
                seen.add(p["name"])
                if p["name"] == "item_id":
                    assert p["schema"] == {"type": "string", "minLength": 1, "maxLength": 200}
                    continue
                prefix = {"business_id": "biz", "key_id": "key", "endpoint_id": "ep", "event_id": "evt",
                          "delivery_id": "dlv", "job_id": "rcv"}[p["name"]]
                pattern = re.compile(p["schema"]["pattern"])
                for _ in range(50):
                    value, text = ids.new(prefix)
                    assert pattern.search(text) and ids.decode(prefix, text) == value, (path, text)
                max_id = ids.encode(prefix, uuid.UUID(int=(1 << 128) - 1))
                assert pattern.search(max_id)
                for wrong in [f"{prefix}_", f"{prefix}_" + "0" * 25, f"{prefix}_" + "8" + "0" * 25,
                              f"{prefix}_" + "0" * 25 + "u", "x" + max_id, max_id.upper()]:
                    assert not pattern.search(wrong) and ids.decode(prefix, wrong) is None, (path, wrong)
    assert seen == {"business_id", "key_id", "endpoint_id", "event_id", "delivery_id", "job_id", "item_id"}


async def test_problem_codes_in_the_document_are_the_registry(api: Api) -> None:
    doc = (await api.get("/openapi.json")).body
    problem = doc["components"]["schemas"]["Problem"]
    assert problem["properties"]["code"]["enum"] == list(CODES)
    assert "/docs/errors" in doc["info"]["description"]
