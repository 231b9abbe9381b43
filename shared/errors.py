"""The one error vocabulary: raised anywhere, rendered as RFC 9457 problem details by the API."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class KaihooksError(Exception):
    """Base of every error a client can be told about."""

    status = 500
    code = "internal_error"
    title = "Internal error"

    def __init__(self, detail: str | None = None, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.headers = headers or {}

    def extra(self) -> dict[str, Any]:
        return {}


class BadRequest(KaihooksError):
    status, code, title = 400, "bad_request", "Bad request"


class Unauthorized(KaihooksError):
    """Always ``WWW-Authenticate: Bearer`` (the contract's word), whichever credential the route also takes."""

    status, code, title = 401, "unauthorized", "Unauthorized"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or "Missing or invalid credentials.", headers={"WWW-Authenticate": "Bearer"})


class Forbidden(KaihooksError):
    status, code, title = 403, "forbidden", "Forbidden"


class InsufficientScope(KaihooksError):
    status, code, title = 403, "insufficient_scope", "Insufficient scope"


class NotFound(KaihooksError):
    status, code, title = 404, "not_found", "Not found"


class MethodNotAllowed(KaihooksError):
    status, code, title = 405, "method_not_allowed", "Method not allowed"


class Conflict(KaihooksError):
    status, code, title = 409, "conflict", "Conflict"


class PayloadTooLarge(KaihooksError):
    status, code, title = 413, "payload_too_large", "Payload too large"


class UnsupportedMediaType(KaihooksError):
    status, code, title = 415, "unsupported_media_type", "Unsupported media type"


class ValidationFailed(KaihooksError):
    status, code, title = 422, "validation_error", "Validation error"

    def __init__(self, errors: Sequence[dict[str, Any]], detail: str | None = None) -> None:
        super().__init__(detail or "The request is not valid; see errors.")
        self.errors = list(errors)

    def extra(self) -> dict[str, Any]:
        return {"errors": self.errors}

    @classmethod
    def at(cls, loc: Sequence[str | int], msg: str) -> ValidationFailed:
        """One error at one location: ``ValidationFailed.at(["body", "name"], "is required")``."""
        return cls([{"loc": list(loc), "msg": msg}], detail=msg)


class RateLimited(KaihooksError):
    status, code, title = 429, "rate_limited", "Too many requests"

    def __init__(self, retry_after_s: float, detail: str | None = None) -> None:
        seconds = max(1, int(retry_after_s + 0.999))
        super().__init__(detail or f"Rate limit exceeded; retry in {seconds} s.",
                         headers={"Retry-After": str(seconds)})


class ServiceUnavailable(KaihooksError):
    status, code, title = 503, "service_unavailable", "Service unavailable"


class LimitReached(Conflict):
    """A growable thing is at its documented limit (docs/security.md): the answer names it and its value."""

    def __init__(self, detail: str, *, name: str, maximum: int) -> None:
        super().__init__(detail)
        self.name = name
        self.maximum = maximum

    def extra(self) -> dict[str, Any]:
        return {"limit": {"name": self.name, "max": self.maximum}}
