"""Response headers every route gets: no caching of API data, no sniffing, no framing, no CORS, and
(outside KAIHOOKS_DEV) HTTPS only for a year, subdomains included.

Pages (the dashboard's, and the errors page at /docs/errors) get a Content-Security-Policy that allows only
the service's own scripts, styles and API calls (no inline script or style, no other origin); everything
else gets one that allows nothing, since a JSON or problem body is never meant to run or load anything in a
browser.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from api.context import SETTINGS
from shared.errors import ERRORS_PATH

_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
DASHBOARD_PREFIX = "/dashboard"
DASHBOARD_CSP = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    "connect-src 'self'",
    "form-action 'self'",
    "base-uri 'none'",
    "object-src 'none'",
    "frame-ancestors 'none'",
])
API_CSP = "default-src 'none'; frame-ancestors 'none'"
_DASHBOARD_HEADERS = {
    "Content-Security-Policy": DASHBOARD_CSP,
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}


def _is_page(path: str) -> bool:
    return path == DASHBOARD_PREFIX or path.startswith(DASHBOARD_PREFIX + "/") or path == ERRORS_PATH


@web.middleware
async def security_headers_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    extra = _DASHBOARD_HEADERS if _is_page(request.path) else {"Content-Security-Policy": API_CSP}
    for name, value in (_HEADERS | extra).items():
        response.headers.setdefault(name, value)
    settings = request.app[SETTINGS]
    if not settings.dev and settings.hsts_max_age_s:
        # A browser that once reached us over HTTPS never again sends a session cookie over plain HTTP
        # (the cookie is Secure too; this also covers the first request a downgrade attack would take).
        response.headers.setdefault("Strict-Transport-Security",
                                    f"max-age={settings.hsts_max_age_s}; includeSubDomains")
    return response
