"""What every request leaves behind: ``kaihooks_http_requests_total`` and ``kaihooks_http_request_duration_seconds``
(by method and route template, the counter also by status), and what the access log says of it (the route, and
who authenticated it: the API key's or the user's public id, never a credential).

``api.middleware`` records every request once it has its answer, so this counts what the client got:
problem responses, 401s from the key check, 413s from the body limit. Its label sets are bounded: the route
is the matched template, never the raw path (``unmatched`` when no route matched: a 404, or a 405 on a path
with no route for that method); any method but the standard ones is ``other``.
"""

from __future__ import annotations

import uuid

from aiohttp import web
from prometheus_client import Counter, Histogram

from shared import metrics

UNMATCHED = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# Set by ``api.auth`` once a credential is verified: the access log names them by their public ids.
KEY_ID = web.RequestKey("key_id", uuid.UUID)
USER_ID = web.RequestKey("user_id", uuid.UUID)

# (method, route, status) -> the counter's and the histogram's children. prometheus-client's ``labels()`` checks
# and joins its arguments on every call (a few µs); the children are cached, the label sets being bounded.
_series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}


def route_of(request: web.BaseRequest) -> str:
    """The template of the route the request matched (``/v1/businesses/{business_id}/calls``), or ``unmatched``."""
    match_info = getattr(request, "match_info", None)  # a BaseRequest (never routed) has none
    resource = match_info.route.resource if match_info is not None else None
    return resource.canonical if resource is not None else UNMATCHED


def record(request: web.BaseRequest, status: int, seconds: float) -> None:
    """Count one answered request (``api.middleware`` calls this last, with the status the client gets)."""
    method = request.method
    key = (method if method in _METHODS else "other", route_of(request), status)
    series = _series.get(key)
    if series is None:
        series = _series[key] = (metrics.HTTP_REQUESTS.labels(key[0], key[1], str(status)),
                                 metrics.HTTP_SECONDS.labels(key[0], key[1]))
    series[0].inc()
    series[1].observe(seconds)
