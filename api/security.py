"""Response headers every route gets: no caching of API data, no sniffing, no framing, no CORS, and
(outside KAIHOOKS_DEV) HTTPS only for a year, subdomains included.

Pages (the dashboard's, and the errors page at /docs/errors) get a Content-Security-Policy that allows only
the service's own scripts, styles and API calls (no inline script or style, no other origin); everything
else gets one that allows nothing, since a JSON or problem body is never meant to run or load anything in a
browser.
"""

from __future__ import annotations

from aiohttp import web

from shared.errors import ERRORS_PATH
from shared.settings import Settings

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


class SecurityHeaders:
    """The headers of every answer, worked out once for the app's settings (``api.middleware`` adds them)."""

    def __init__(self, settings: Settings) -> None:
        hsts = {}
        if not settings.dev and settings.hsts_max_age_s:
            # A browser that once reached us over HTTPS never again sends a session cookie over plain HTTP
            # (the cookie is Secure too; this also covers the first request a downgrade attack would take).
            hsts["Strict-Transport-Security"] = f"max-age={settings.hsts_max_age_s}; includeSubDomains"
        self.api = tuple((_HEADERS | {"Content-Security-Policy": API_CSP} | hsts).items())
        self.page = tuple((_HEADERS | _DASHBOARD_HEADERS | hsts).items())

    def add(self, request: web.BaseRequest, response: web.StreamResponse) -> None:
        """Each header the response does not set itself (a dashboard asset sets its own Cache-Control)."""
        headers = response.headers
        for name, value in self.page if _is_page(request.path) else self.api:
            headers.setdefault(name, value)
