"""Liveness, readiness, the OpenAPI document and the errors page."""

from __future__ import annotations

import asyncio

import prometheus_client
from aiohttp import web

from api import auth, errors_page, render
from api.context import DB, OPENAPI, REDIS
from api.problems import problem
from api.routing import Routes
from api.schemas import AliveOut
from shared.errors import ERRORS_PATH

routes = Routes("system")
_CHECK_TIMEOUT_S = 2.0


@routes.get("/healthz", summary="The process is alive", auth="none", response=AliveOut)
async def healthz(request: web.Request) -> web.StreamResponse:
    return render.json({"status": "ok"})


async def _check(coro: object) -> str:
    try:
        await asyncio.wait_for(coro, _CHECK_TIMEOUT_S)  # type: ignore[arg-type]
    except Exception as exc:  # any failure means not ready; say which kind
        return f"unavailable ({type(exc).__name__})"
    return "ok"


@routes.get("/readyz", summary="Postgres and Redis are reachable (503 otherwise)", auth="none",
            response=AliveOut, errors=(503,))
async def readyz(request: web.Request) -> web.StreamResponse:
    postgres, redis = await asyncio.gather(
        _check(request.app[DB].fetchval("SELECT 1")), _check(request.app[REDIS].ping())
    )
    checks = {"postgres": postgres, "redis": redis}
    if postgres == "ok" and redis == "ok":
        return render.json({"status": "ok", "checks": checks})
    return problem("service_unavailable", "A dependency is unreachable.", {"Retry-After": "1"},
                   status_text="unavailable", checks=checks)


@routes.get("/openapi.json", summary="This document", auth="none")
async def openapi(request: web.Request) -> web.StreamResponse:
    return render.json(request.app[OPENAPI])


@routes.get(ERRORS_PATH, summary="What each error code means and what to do about it (HTML page)", auth="none",
            page=True)
async def errors(request: web.Request) -> web.StreamResponse:
    return web.Response(body=errors_page.html(), content_type="text/html", charset="utf-8")


@routes.get("/metrics", summary="Prometheus metrics of this process (internal token required)", auth="internal")
async def metrics(request: web.Request) -> web.StreamResponse:
    auth.internal(request)
    return web.Response(body=prometheus_client.generate_latest(),
                        headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST})
