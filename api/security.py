"""Response headers every route gets: no caching of API data, no sniffing, no framing, no CORS."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


@web.middleware
async def security_headers_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    for name, value in _HEADERS.items():
        response.headers.setdefault(name, value)
    return response
