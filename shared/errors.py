"""The one error vocabulary: raised anywhere, rendered as RFC 9457 problem details by the API.

``CODES`` is the registry of every ``code`` a problem can carry: its status, its title, when it happens
and what a client should do. Each problem's ``type`` is ``/docs/errors#<code>``, the anchor of that code on
the page the API serves (``GET /docs/errors``), rendered from this registry along with docs/errors.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

ERRORS_PATH = "/docs/errors"


@dataclass(frozen=True, slots=True)
class ErrorCode:
    code: str
    status: int
    title: str
    when: str  # when it happens (plain text, with `code` spans)
    todo: str  # what the client should do about it (likewise)

    @property
    def type(self) -> str:
        """The problem ``type``: a full-path reference to this code's anchor on the errors page. Relative
        (RFC 9457 allows it, and asks that a relative one be a full path) so that it reads the same from
        every host and process, whatever Host header or proxy a request came through; resolved against the
        API's own address it is the page."""
        return f"{ERRORS_PATH}#{self.code}"


CODES: dict[str, ErrorCode] = {entry.code: entry for entry in [
    ErrorCode(
        "bad_request", 400, "Bad request",
        "The request body is not JSON at all (malformed, truncated, or empty where a JSON object is expected). "
        "An HTTP-level refusal with no code of its own is answered with this code too, under its own 4xx "
        "status. (A request the HTTP parser cannot read, such as a request line or header over 8,190 bytes, "
        "is refused with a plain-text 400 before the service sees it.)",
        "Send a JSON object with `Content-Type: application/json`. The detail says where parsing stopped. "
        "Retrying the same request gets the same answer.",
    ),
    ErrorCode(
        "unauthorized", 401, "Unauthorized",
        "No valid credential: the API key is missing, malformed, unknown, expired or deleted, or belongs to "
        "another business than the one in the URL; the session cookie is missing or has ended; an internal "
        "route got no valid internal token; a sign-in gave a wrong email or password; or an API key was sent "
        "to a sign-in route. Every key failure gets the same body, so the answer never tells whether a key "
        "exists. The response carries `WWW-Authenticate: Bearer`.",
        "Check the `Authorization: Bearer` header (a `kc_live_` key of this business) or sign in again. Do not "
        "retry with the same credential.",
    ),
    ErrorCode(
        "forbidden", 403, "Forbidden",
        "The caller is known but may not do this: a signed-in request that changes something lacks the "
        "session's `X-CSRF-Token` header (or sends a wrong one), a member who is not an owner or admin tried "
        "a change, or an API key was sent from a browser (a request with an `Origin` header).",
        "Send the `X-CSRF-Token` value that sign-in (or `GET /v1/me`) returned; ask an owner or admin of the "
        "business; keep API keys in server-side code.",
    ),
    ErrorCode(
        "insufficient_scope", 403, "Insufficient scope",
        "The API key is valid for this business but lacks the scope the route needs; the detail names it.",
        "Create a key with that scope (from the dashboard) and use it for this route.",
    ),
    ErrorCode(
        "not_found", 404, "Not found",
        "No route matches the URL, or the thing it names does not exist in this business. An id of another "
        "business, a malformed id and a deleted thing all get this same answer, and so does a business the "
        "signed-in user is no member of.",
        "Check the path and the ids in it (ids carry their type's prefix: `biz_`, `key_`, `ep_`, `evt_`, `dlv_`, "
        "`rcv_`). Do not retry.",
    ),
    ErrorCode(
        "method_not_allowed", 405, "Method not allowed",
        "The route exists but does not take this HTTP method. The `Allow` header lists the methods it does take.",
        "Use one of the methods in `Allow` (the OpenAPI document at `/openapi.json` lists each route's).",
    ),
    ErrorCode(
        "conflict", 409, "Conflict",
        "The request is valid but the current state refuses it: a documented limit is reached (the problem "
        "carries `limit: {\"name\", \"max\"}`, e.g. `endpoints_per_business`), the endpoint is disabled (for a "
        "test send, a retry or a recover), a recover of the endpoint is running already (the problem carries "
        "its `job_id`), or the endpoint's signing secret cannot be read (it was sealed under a master key that "
        "is no longer configured).",
        "Change the state first, as the detail says: delete something to make room, enable the endpoint, "
        "watch or cancel the running recover; then send the request again.",
    ),
    ErrorCode(
        "payload_too_large", 413, "Payload too large",
        "The request body is over its route's limit (1 MiB on `/v1`, 8 MiB on `/internal`), or one event's "
        "`data` is over 256 KiB. A body that declares a larger `Content-Length` is refused before any of it is "
        "read.",
        "Send less: split a batch of events into several requests, or trim the event's data.",
    ),
    ErrorCode(
        "unsupported_media_type", 415, "Unsupported media type",
        "A route that reads a JSON body got another media type (a form, `text/plain`, …).",
        "Send the body as JSON with `Content-Type: application/json`.",
    ),
    ErrorCode(
        "validation_error", 422, "Validation error",
        "The request is well-formed JSON but breaks the route's rules: a missing or unknown field, a value "
        "of the wrong type or out of range (a limit, an event type, a timestamp without an offset), a NUL "
        "character, JSON nested deeper than 64 levels, more than 500 events in a batch, an unknown "
        "`business_id` in a published event, a recover window longer than retention, or a bad limit or cursor "
        "on a list. The problem carries `errors: [{\"loc\", \"msg\"}]`, `loc` naming the place (`\"body\"` or "
        "`\"query\"` first, then the field). Nothing was written.",
        "Fix what `errors` names and send the request again; the same request gets the same answer.",
    ),
    ErrorCode(
        "rate_limited", 429, "Too many requests",
        "Too many requests for one API key or one signed-in session in a short time, or too many failed "
        "sign-ins for one email or from one address. The `Retry-After` header says how many seconds to wait.",
        "Wait at least `Retry-After` seconds before retrying, and spread requests out (a backoff with jitter "
        "keeps several clients from retrying at once).",
    ),
    ErrorCode(
        "internal_error", 500, "Internal error",
        "Something failed on the service's side that it did not expect. Bad input is never meant to get "
        "this answer: every refusal of a request is a 4xx above.",
        "Retry later with backoff (publishing with an `idempotency_key` makes a retry safe). If it persists, "
        "report the time and route: the service logs the cause.",
    ),
    ErrorCode(
        "service_unavailable", 503, "Service unavailable",
        "A dependency (Postgres or Redis) is out of reach or failing, too many sign-ins are being checked at "
        "once, or a publish raced the deletion of an endpoint it matched. Nothing was written. `/readyz` "
        "answers this too, with `checks` naming the dependency. The `Retry-After` header says when to retry.",
        "Retry after `Retry-After` seconds, with backoff; the request is safe to send again as it was.",
    ),
]}


class KaihooksError(Exception):
    """Base of every error a client can be told about. A subclass names its ``code`` in ``CODES``, and
    takes its status and title from there."""

    code: ClassVar[str] = "internal_error"
    status: ClassVar[int]
    title: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        entry = CODES[cls.code]  # a KeyError at import for a code the registry lacks
        cls.status, cls.title = entry.status, entry.title

    def __init__(self, detail: str | None = None, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.headers = headers or {}

    def extra(self) -> dict[str, Any]:
        return {}


KaihooksError.status, KaihooksError.title = CODES["internal_error"].status, CODES["internal_error"].title


class BadRequest(KaihooksError):
    code = "bad_request"


class Unauthorized(KaihooksError):
    """Always ``WWW-Authenticate: Bearer`` (the contract's word), whichever credential the route also takes."""

    code = "unauthorized"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or "Missing or invalid credentials.", headers={"WWW-Authenticate": "Bearer"})


class Forbidden(KaihooksError):
    code = "forbidden"


class InsufficientScope(KaihooksError):
    code = "insufficient_scope"


class NotFound(KaihooksError):
    code = "not_found"


class Conflict(KaihooksError):
    code = "conflict"


class PayloadTooLarge(KaihooksError):
    code = "payload_too_large"


class UnsupportedMediaType(KaihooksError):
    code = "unsupported_media_type"


class ValidationFailed(KaihooksError):
    code = "validation_error"

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
    code = "rate_limited"

    def __init__(self, retry_after_s: float, detail: str | None = None) -> None:
        seconds = max(1, int(retry_after_s + 0.999))
        super().__init__(detail or f"Rate limit exceeded; retry in {seconds} s.",
                         headers={"Retry-After": str(seconds)})


class ServiceUnavailable(KaihooksError):
    code = "service_unavailable"


class LimitReached(Conflict):
    """A growable thing is at its documented limit (docs/security.md): the answer names it and its value."""

    def __init__(self, detail: str, *, name: str, maximum: int) -> None:
        super().__init__(detail)
        self.name = name
        self.maximum = maximum

    def extra(self) -> dict[str, Any]:
        return {"limit": {"name": self.name, "max": self.maximum}}
