"""The delivery HTTP client: one shared session per worker, a connect-time address guard, no
redirects, a bounded read, and failures described in words a person can act on."""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
from aiohttp.abc import AbstractResolver

from shared.signing import USER_AGENT
from shared.url_policy import address_problem

EXCERPT_BYTES = 2048


class AddressNotAllowed(ConnectionError):
    """The name resolved to (or the URL named) an address webhooks may not reach."""


def guarded_socket_factory(addr_info: tuple[object, ...]) -> socket.socket:
    """aiohttp calls this for the very address it is about to connect to: refuse private ones here,
    after DNS, so a name that changes its answer after the endpoint was saved gains nothing."""
    family, type_, proto, _, sockaddr = addr_info
    host = str(sockaddr[0])  # type: ignore[index]
    why = address_problem(ipaddress.ip_address(host.split("%", 1)[0]))
    if why is not None:
        raise AddressNotAllowed(f"address not allowed: {host} is {why}")
    return socket.socket(family, type_, proto)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int | None
    body_excerpt: str | None
    duration_ms: int
    error_kind: str | None  # None on success
    error: str | None
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def new_session(timeout_s: float, allow_private: bool, max_connections: int,
                resolver: AbstractResolver | None = None) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=max_connections, limit_per_host=0, ttl_dns_cache=60, enable_cleanup_closed=True,
        socket_factory=None if allow_private else guarded_socket_factory, resolver=resolver,
    )
    return aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s), auto_decompress=False,
        headers={"User-Agent": USER_AGENT}, skip_auto_headers=("Accept-Encoding",), cookie_jar=aiohttp.DummyCookieJar(),
    )


def excerpt(raw: bytes) -> str:
    return raw[:EXCERPT_BYTES].decode("utf-8", "replace").replace("\x00", "")


def parse_retry_after(value: str | None, cap_s: float) -> float | None:
    """Seconds from a Retry-After header (delay-seconds or an HTTP date), capped; None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), cap_s)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, (when - datetime.now(UTC)).total_seconds()), cap_s)


async def _read_upto(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """The body up to its end or ``limit`` bytes, whichever comes first (a body that trickles on
    forever runs into the attempt's timeout)."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await stream.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


async def post(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], *,
               timeout_s: float, max_read: int, retry_after_cap_s: float) -> Outcome:
    start = time.monotonic()

    def took() -> int:
        return int((time.monotonic() - start) * 1000)

    try:
        async with session.post(url, data=body, headers=headers, allow_redirects=False) as resp:
            raw = await _read_upto(resp.content, max_read)
            if not resp.content.at_eof():
                resp.close()  # more than we read: do not reuse this connection
            status = resp.status
            text = excerpt(raw)
            if 200 <= status < 300:
                return Outcome(status, text, took(), None, None)
            retry_after = parse_retry_after(resp.headers.get("Retry-After"), retry_after_cap_s) \
                if status in (429, 503) else None
            if 300 <= status < 400:
                where = resp.headers.get("Location", "")[:200]
                return Outcome(status, text, took(), "redirect",
                               f"HTTP {status} redirect refused (redirects are not followed)"
                               + (f"; Location: {where}" if where else ""))
            return Outcome(status, text, took(), "http_status",
                           f"HTTP {status}" + (f": {text[:200]}" if text.strip() else ""), retry_after)
    except TimeoutError:
        return Outcome(None, None, took(), "timeout", f"timed out after {timeout_s:g} s")
    except aiohttp.ClientConnectorDNSError as exc:
        return Outcome(None, None, took(), "dns", f"DNS name not found: {exc.host}")
    except aiohttp.ClientConnectorCertificateError as exc:
        return Outcome(None, None, took(), "tls", f"TLS certificate problem: {exc.certificate_error}")
    except aiohttp.ClientConnectorSSLError as exc:
        return Outcome(None, None, took(), "tls", f"TLS handshake failed: {exc.os_error}")
    except aiohttp.ClientConnectorError as exc:
        cause = exc.os_error
        if isinstance(cause, AddressNotAllowed) or isinstance(cause.__cause__, AddressNotAllowed):
            return Outcome(None, None, took(), "address_not_allowed", str(cause))
        if isinstance(cause, ConnectionRefusedError):
            return Outcome(None, None, took(), "connection_refused", f"connection refused by {exc.host}:{exc.port}")
        return Outcome(None, None, took(), "connection_failed", f"could not connect to {exc.host}:{exc.port}: "
                                                                 f"{cause.strerror or cause}")
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError,
            ConnectionResetError) as exc:
        return Outcome(None, None, took(), "connection_reset",
                       f"the connection was closed before a complete answer ({type(exc).__name__})")
    except ssl.SSLError as exc:
        return Outcome(None, None, took(), "tls", f"TLS problem: {exc.reason or exc}")
    except aiohttp.InvalidURL:
        return Outcome(None, None, took(), "invalid_url", "the endpoint URL is not valid")
    except aiohttp.ClientError as exc:
        return Outcome(None, None, took(), "http_error", f"HTTP error: {type(exc).__name__}")
    except asyncio.CancelledError:
        raise
