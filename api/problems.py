"""One middleware turns every error into RFC 9457 problem details."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import orjson
import redis.exceptions
from aiohttp import web
from aiohttp.typedefs import Handler

from shared import redis_client
from shared.errors import KaihooksError

log = logging.getLogger("kaihooks.api")

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


def problem(
    status: int, code: str, title: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> web.Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, "code": code, **extra}
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        content_type="application/problem+json",
        headers=headers,
    )


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except KaihooksError as exc:
        return problem(exc.status, exc.code, exc.title, exc.detail, exc.headers, **exc.extra())
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "error")
        detail = _DETAILS.get(exc.status, exc.reason).format(method=request.method)
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return problem(exc.status, code, exc.reason, detail, headers)
    except (asyncpg.exceptions.DataError, OverflowError):
        # A value Postgres cannot hold (a NUL in a path segment, a date out of range) that no
        # earlier check caught: the transaction rolled back, so it is the client's input to fix.
        log.warning("unstorable value in request", exc_info=True, extra={"path": request.path})
        return problem(422, "validation_error", "Validation error",
                       "A value in the request cannot be stored (out of range or containing NUL).",
                       errors=[{"loc": ["request"], "msg": "a value cannot be stored"}])
    except _UNAVAILABLE:
        log.warning("dependency unavailable", exc_info=True, extra={"path": request.path})
        return problem(503, "service_unavailable", "Service unavailable",
                       "A dependency is unavailable; retry shortly.", {"Retry-After": "1"})
    except redis.exceptions.ResponseError as exc:
        # Redis answering an error (out of memory, read-only after a failover) where nothing could carry on
        # without it (say, a key's revocation marker): as unavailable as a Redis that is down.
        redis_client.note_failure("request", exc)
        return problem(503, "service_unavailable", "Service unavailable",
                       "A dependency is unavailable; retry shortly.", {"Retry-After": "1"})
    except Exception:
        log.exception("unhandled error", extra={"path": request.path, "method": request.method})
        return problem(500, "internal_error", "Internal error", "Something went wrong on our side.")
