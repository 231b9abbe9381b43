"""Every error becomes RFC 9457 problem details (``answer``, asked by ``api.middleware``), each with a code of
``shared.errors.CODES`` and that code's ``type`` (``/docs/errors#<code>``) and title."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import orjson
import redis.exceptions
from aiohttp import web

from shared import redis_client
from shared.errors import CODES, KaihooksError

log = logging.getLogger("kaihooks.api")

# aiohttp's own refusals (the router's 404 and 405, a body over the app-wide cap), by status. Any other
# status keeps its status under the nearest code: bad_request for a 4xx, internal_error for a 5xx.
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "service_unavailable",
}
_DETAILS = {
    404: "No route matches this URL.",
    405: "{method} is not allowed on this route.",
    413: "The request body is larger than this route accepts.",
}
# Postgres or Redis out of reach: the request may be retried, so 503 rather than 500.
_UNAVAILABLE = (
    OSError,
    # Postgres shutting down or crashing under a pooled connection. asyncpg then may also report the
    # broken connection as an InternalClientError ("cannot switch to state …; another operation is in
    # progress"), raised before the statement is sent: nothing was written, a retry is safe.
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.TooManyConnectionsError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    TimeoutError,
)


def problem(code: str, detail: str, headers: dict[str, str] | None = None, *, status: int | None = None,
            **extra: Any) -> web.Response:
    """A problem+json answer for one of the registry's codes (with its status, unless ``status`` says
    otherwise: an HTTP-level refusal with no code of its own)."""
    entry = CODES[code]
    status = status or entry.status
    body = {"type": entry.type, "title": entry.title, "status": status, "detail": detail, "code": code, **extra}
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        content_type="application/problem+json",
        headers=headers,
    )


def answer(request: web.BaseRequest, exc: Exception) -> web.Response:
    """The problem answer to an error a handler raised (``api.middleware`` asks). A redirect (an
    HTTPException below 400) is not an error: it is raised again, for aiohttp to send."""
    if isinstance(exc, KaihooksError):
        return problem(exc.code, exc.detail, exc.headers, **exc.extra())
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        code = _HTTP_CODES.get(exc.status, "internal_error" if exc.status >= 500 else "bad_request")
        detail = _DETAILS.get(exc.status, f"{exc.reason}.").format(method=request.method)
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return problem(code, detail, headers, status=exc.status)
    if isinstance(exc, asyncpg.exceptions.DataError | OverflowError):
        # A value Postgres cannot hold (a NUL in a path segment, a date out of range) that no
        # earlier check caught: the transaction rolled back, so it is the client's input to fix.
        log.warning("unstorable value in request", exc_info=exc, extra={"path": request.path})
        return problem("validation_error",
                       "A value in the request cannot be stored (out of range or containing NUL).",
                       errors=[{"loc": ["request"], "msg": "a value cannot be stored"}])
    if isinstance(exc, _UNAVAILABLE):
        log.warning("dependency unavailable", exc_info=exc, extra={"path": request.path})
        return problem("service_unavailable", "A dependency is unavailable; retry shortly.", {"Retry-After": "1"})
    if isinstance(exc, redis.exceptions.ResponseError):
        # Redis answering an error (out of memory, read-only after a failover) where nothing could carry on
        # without it (say, a key's revocation marker): as unavailable as a Redis that is down.
        redis_client.note_failure("request", exc)
        return problem("service_unavailable", "A dependency is unavailable; retry shortly.", {"Retry-After": "1"})
    log.error("unhandled error", exc_info=exc, extra={"path": request.path, "method": request.method})
    return problem("internal_error", "Something went wrong on our side.")
