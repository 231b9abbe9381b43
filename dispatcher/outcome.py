"""The outcome stage: what an attempt's answer (or failure) means, and when the delivery goes next.

Pure functions of their inputs, with no I/O and no clock of their own: a receiver is somebody else's
server and may answer anything, so every function here returns a value for any input and never raises
(``tests/test_outcome.py`` drives them with hypothesis). ``send`` turns the HTTP exchange into an
``Outcome`` with ``from_response`` / ``from_exception``; the engine asks ``decide`` for the verdict.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiohttp

from shared.models import DeliveryStatus

EXCERPT_BYTES = 2048
REASON_CHARS = 200  # of a response body or header quoted in an attempt's error
_DIGITS = re.compile(r"[0-9]{1,16}")  # delay-seconds (RFC 9110 §10.2.3): ASCII digits only
_MAX_DATE_CHARS = 64  # an IMF-fixdate is 29 characters; anything much longer is not a date


class AddressNotAllowed(ConnectionError):
    """The name resolved to (or the URL named) an address webhooks may not reach."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """One attempt, as recorded: the answer's status and excerpt, or why there was none."""

    status: int | None
    body_excerpt: str | None
    duration_ms: int
    error_kind: str | None  # None on success; otherwise a stable word (timeout, http_status, ...)
    error: str | None  # a plain reason a person can act on
    retry_after_s: float | None = None  # a 429's or 503's Retry-After, parsed and capped

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def excerpt(raw: bytes) -> str:
    """The start of a body as text for the attempt log (NULs removed: Postgres text cannot hold them)."""
    return raw[:EXCERPT_BYTES].decode("utf-8", "replace").replace("\x00", "")


def parse_retry_after(value: str | None, now: datetime, cap_s: float) -> float | None:
    """Seconds from a ``Retry-After`` value: ASCII digits or an HTTP date, capped at ``cap_s``; None for
    anything else (absent, negative, fractional, non-ASCII digits, a malformed date)."""
    if not value:
        return None
    value = value.strip(" \t")
    if _DIGITS.fullmatch(value):
        return min(float(value), cap_s)
    if len(value) > _MAX_DATE_CHARS:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    except Exception:  # malformed dates raise TypeError, ValueError, IndexError, OverflowError, ...
        return None
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), cap_s)


def _printable(text: str, limit: int = REASON_CHARS) -> str:
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


def from_response(status: int, retry_after: str | None, location: str | None, body: bytes, duration_ms: int,
                  now: datetime, retry_after_cap_s: float) -> Outcome:
    """An answer: 2xx succeeds; a 3xx is a refused redirect; anything else failed with its status (a 429
    or 503 also carries its ``Retry-After``)."""
    text = excerpt(body)
    if 200 <= status < 300:
        return Outcome(status, text, duration_ms, None, None)
    if 300 <= status < 400:
        where = _printable(location or "")
        return Outcome(status, text, duration_ms, "redirect",
                       f"HTTP {status} redirect refused (redirects are not followed)"
                       + (f"; Location: {where}" if where else ""))
    retry_after_s = parse_retry_after(retry_after, now, retry_after_cap_s) if status in (429, 503) else None
    quoted = _printable(text.strip())
    return Outcome(status, text, duration_ms, "http_status", f"HTTP {status}" + (f": {quoted}" if quoted else ""),
                   retry_after_s)


def from_exception(exc: BaseException, duration_ms: int, timeout_s: float) -> Outcome:
    """Why an attempt got no usable answer, in words a person can act on. Anything unforeseen is an
    ``internal_error`` (the delivery still goes on with its schedule)."""
    kind, reason = _describe(exc, timeout_s)
    return Outcome(None, None, duration_ms, kind, reason)


def _describe(exc: BaseException, timeout_s: float) -> tuple[str, str]:
    try:
        if isinstance(exc, TimeoutError | asyncio.TimeoutError):
            return "timeout", f"timed out after {timeout_s:g} s"
        if isinstance(exc, aiohttp.ClientConnectorDNSError):
            return "dns", f"DNS name not found: {exc.host}"
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            return "tls", f"TLS certificate problem: {exc.certificate_error}"
        if isinstance(exc, aiohttp.ClientConnectorSSLError):
            return "tls", f"TLS handshake failed: {exc.os_error}"
        if isinstance(exc, aiohttp.ClientConnectorError):
            cause = exc.os_error
            if isinstance(cause, AddressNotAllowed) or isinstance(cause.__cause__, AddressNotAllowed):
                return "address_not_allowed", str(cause)
            if isinstance(cause, ConnectionRefusedError):
                return "connection_refused", f"connection refused by {exc.host}:{exc.port}"
            return "connection_failed", f"could not connect to {exc.host}:{exc.port}: {cause.strerror or cause}"
        if isinstance(exc, aiohttp.ClientResponseError | aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError
                      | aiohttp.ClientOSError | ConnectionResetError):
            if isinstance(exc, aiohttp.ClientResponseError) and exc.status == 400:
                return "bad_response", "the answer was not valid HTTP (a malformed or oversized header)"
            return "connection_reset", f"the connection was closed before a complete answer ({type(exc).__name__})"
        if isinstance(exc, ssl.SSLError):
            return "tls", f"TLS problem: {exc.reason or exc}"
        if isinstance(exc, aiohttp.InvalidURL):
            return "invalid_url", "the endpoint URL is not valid"
        if isinstance(exc, aiohttp.ClientError):
            return "http_error", f"HTTP error: {type(exc).__name__}"
    except Exception:  # noqa: S110 - an exception whose own attributes fail to render is described by type
        pass
    return "internal_error", f"internal error while sending ({type(exc).__name__}); the delivery will be retried"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What an attempt means for its delivery."""

    status: DeliveryStatus
    next_attempt_at: datetime | None  # when pending


def deadline(created_at: datetime, schedule: Sequence[float]) -> datetime:
    """When a delivery whose schedule began at ``created_at`` is failed at the latest."""
    return created_at + timedelta(seconds=sum(schedule))


def decide(outcome: Outcome, *, attempt: int, schedule_start: int, schedule: Sequence[float], started_at: datetime,
           deadline_at: datetime, jitter: float) -> Verdict:
    """Succeeded, failed (410, the schedule's attempts spent, or its deadline passed) or pending until the
    next attempt: the schedule's delay after ``started_at`` (times ``jitter``, 0.8-1.2), or the answer's
    ``Retry-After`` if later, but never after the deadline (the last attempt is made at it)."""
    if outcome.ok:
        return Verdict("succeeded", None)
    index = attempt - schedule_start - 1  # delays used so far in this schedule
    if outcome.status == 410 or not 0 <= index < len(schedule) or started_at >= deadline_at:
        return Verdict("failed", None)
    jitter = jitter if math.isfinite(jitter) else 1.0
    delay = schedule[index] * min(1.2, max(0.8, jitter))
    if outcome.retry_after_s is not None and math.isfinite(outcome.retry_after_s):
        delay = max(delay, outcome.retry_after_s)
    room = (deadline_at - started_at).total_seconds()
    return Verdict("pending", started_at + timedelta(seconds=min(delay, room)))


def paused_reason(failures: int, failing_since: datetime | None) -> str:
    """Why a delivery failed unsent: its deadline came while its endpoint was paused."""
    since = f" since {failing_since.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC" if failing_since else ""
    return (f"endpoint paused after {failures} consecutive failure{'s' if failures != 1 else ''}{since}; "
            "the retry schedule ran out while it was paused")
