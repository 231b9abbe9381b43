"""The send stage: the HTTP call. One shared session per worker, a connect-time address guard, no
redirects, a bounded read, and an ``Outcome`` for whatever happens (``post`` never raises, except to
let a cancellation through)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from datetime import UTC, datetime

import aiohttp
from aiohttp.abc import AbstractResolver

from dispatcher.outcome import AddressNotAllowed, Outcome, excerpt, from_exception, from_response
from shared.signing import USER_AGENT
from shared.url_policy import address_problem


def guarded_socket_factory(addr_info: tuple[object, ...]) -> socket.socket:
    """aiohttp calls this for the very address it is about to connect to: refuse private ones here,
    after DNS, so a name that changes its answer after the endpoint was saved gains nothing."""
    family, type_, proto, _, sockaddr = addr_info
    host = str(sockaddr[0])  # type: ignore[index]
    why = address_problem(ipaddress.ip_address(host.split("%", 1)[0]))
    if why is not None:
        raise AddressNotAllowed(f"address not allowed: {host} is {why}")
    return socket.socket(family, type_, proto)  # type: ignore[arg-type]


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
    """POST ``body`` and describe what came of it."""
    start = time.monotonic()
    try:
        async with session.post(url, data=body, headers=headers, allow_redirects=False) as resp:
            raw = await _read_upto(resp.content, max_read)
            if not resp.content.at_eof():
                resp.close()  # more than we read: do not reuse this connection
            took = int((time.monotonic() - start) * 1000)
            if 200 <= resp.status < 300:  # the hot path: no headers to read
                return Outcome(resp.status, excerpt(raw), took, None, None)
            return from_response(resp.status, resp.headers.get("Retry-After"), resp.headers.get("Location"), raw,
                                 took, datetime.now(UTC), retry_after_cap_s)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # whatever a receiver (or a bug of ours) causes, the attempt gets an outcome
        return from_exception(exc, int((time.monotonic() - start) * 1000), timeout_s)
