"""/dashboard (sign in, then the dashboard home) and /dashboard/settings/api-keys, and their assets.

The pages are static: everything a person sees is fetched by ``assets/dashboard.js`` from /v1 with the
session cookie, so the dashboard can do nothing the API would not let the same person do.
"""

from __future__ import annotations

import functools
from pathlib import Path

from aiohttp import web

from api.routing import Routes

routes = Routes("dashboard", pages=True)  # none of it is in the OpenAPI document
_HERE = Path(__file__).parent
_HTML = "text/html"
# The files served from assets/, with their media types (each its own route: nothing else there is reachable).
_ASSETS = {
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
    "icon.svg": "image/svg+xml",
}


@functools.cache
def _read(relative: str) -> bytes:
    """A page or asset, read once per process (they change only with a deploy)."""
    return (_HERE / relative).read_bytes()


def _file(relative: str, content_type: str) -> web.Response:
    return web.Response(body=_read(relative), content_type=content_type, charset="utf-8")


@routes.get("/dashboard", summary="Dashboard: sign in (HTML page)", auth="none")
async def home(request: web.Request) -> web.StreamResponse:
    return _file("pages/home.html", _HTML)


@routes.get("/dashboard/settings/api-keys", summary="Dashboard: API keys and outbound webhooks (HTML page)",
            auth="none")
async def api_keys_page(request: web.Request) -> web.StreamResponse:
    return _file("pages/api-keys.html", _HTML)


def _asset_route(name: str, content_type: str) -> None:
    """One route per asset, so that nothing else under assets/ can be asked for."""

    async def asset(request: web.Request) -> web.StreamResponse:
        response = _file(f"assets/{name}", content_type)
        # Revalidate rather than store: a deploy's new script is picked up on the next load.
        response.headers["Cache-Control"] = "no-cache"
        return response

    asset.__name__ = "asset_" + name.replace(".", "_")  # a name of its own in tracebacks
    routes.get(f"/dashboard/assets/{name}", summary=f"Dashboard asset: {name}", auth="none")(asset)


for _name, _content_type in _ASSETS.items():
    _asset_route(_name, _content_type)
