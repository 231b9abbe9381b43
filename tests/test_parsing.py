"""Request bodies are refused at their route's limit before they are buffered: at the declared
Content-Length on every route, and as soon as a chunked body passes the limit. Raw sockets, so the test
controls exactly what is sent and when."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestServer

from tests.helpers import Tenant

MIB = 1024 * 1024


async def _status_line(server: TestServer, head: str, body: bytes = b"", timeout_s: float = 5.0) -> str:
    """Send ``head`` (and ``body``) without finishing the body; the answer's status line, read with a deadline."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        await writer.drain()
        return (await asyncio.wait_for(reader.readline(), timeout_s)).decode().strip()
    finally:
        writer.close()


def _session(tenant: Tenant) -> str:
    token = next(c.value for c in tenant.owner.http.cookie_jar if c.key == "kaihooks_session")
    return f"Cookie: kaihooks_session={token}\nX-CSRF-Token: {tenant.owner.csrf}"


async def test_a_declared_length_over_the_v1_limit_is_refused_on_every_route(tenant: Tenant,
                                                                             server: TestServer) -> None:
    """Even a route that never reads a body says 413 at once, and does nothing."""
    head = (f"POST /v1/auth/logout HTTP/1.1\nHost: x\nContent-Type: application/json\n{_session(tenant)}\n"
            f"Content-Length: {2 * MIB}\n")
    assert (await _status_line(server, head, b"{")).startswith("HTTP/1.1 413")
    assert (await tenant.owner.get("/v1/me")).status == 200  # still signed in: the logout did not run
    head = f"POST /v1/auth/login HTTP/1.1\nHost: x\nContent-Type: application/json\nContent-Length: {MIB + 1}\n"
    assert (await _status_line(server, head, b"{")).startswith("HTTP/1.1 413")


async def test_a_chunked_body_is_refused_once_it_passes_the_limit(server: TestServer) -> None:
    """The answer comes while the client is still sending: nothing past the limit is waited for or kept."""
    chunk = b"x" * (64 * 1024)
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(MIB // len(chunk) + 2))
    head = "POST /v1/auth/login HTTP/1.1\nHost: x\nContent-Type: application/json\nTransfer-Encoding: chunked\n"
    assert (await _status_line(server, head, body)).startswith("HTTP/1.1 413")


async def test_a_body_within_the_limit_is_read_whole(tenant: Tenant, server: TestServer) -> None:
    body = b'{"email": "%s", "password": "%s"}' % (tenant.owner_email.encode(), tenant.password.encode())
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    head = "POST /v1/auth/login HTTP/1.1\nHost: x\nContent-Type: application/json\nTransfer-Encoding: chunked\n"
    assert (await _status_line(server, head, chunked)).startswith("HTTP/1.1 200")
