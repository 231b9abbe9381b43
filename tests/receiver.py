"""A real webhook receiver on 127.0.0.1 whose behaviour is chosen by the URL path (no mocks).

/ok -> 200; /status/<n> -> n; /flaky/<k> -> 500 for the first k requests of each webhook-id, then 200;
/retry-after/<status>/<value> -> that status with Retry-After: value; /redirect -> 301;
/hang -> never answers; /reset -> closes the connection; /trickle -> a 200 whose body never ends;
/slow/<ms>[/...] -> 200 after that many milliseconds; /hostile -> 500 whose body is terminal escape sequences
(``HOSTILE``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.test_utils import TestServer

# What a receiver that attacks the on-call engineer's terminal answers: a title change, a screen clear, a C1
# control sequence introducer (U+009B) and a right-to-left override.
HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x9b31m\u202egnp.exe"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    server: TestServer | None = None
    received: list[Received] = field(default_factory=list)
    seen: Counter[tuple[str, str]] = field(default_factory=Counter)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    def url(self, path: str) -> str:
        assert self.server is not None
        return str(self.server.make_url(path))

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def wait_for(self, count: int, path: str | None = None, timeout_s: float = 10.0) -> list[Received]:
        """Poll (with a deadline) until ``count`` requests arrived (at ``path``)."""

        def matching() -> list[Received]:
            return [r for r in self.received if path is None or r.path == path]

        async with self.arrived:
            await asyncio.wait_for(self.arrived.wait_for(lambda: len(matching()) >= count), timeout_s)
        return matching()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        record = Received(request.path, dict(request.headers), body, time.monotonic())
        msg_id = request.headers.get("webhook-id", "")
        self.seen[(request.path, msg_id)] += 1
        nth = self.seen[(request.path, msg_id)]
        async with self.arrived:
            self.received.append(record)
            self.arrived.notify_all()
        parts = request.path.strip("/").split("/")
        kind = parts[0]
        if kind == "status":
            return web.Response(status=int(parts[1]), text=f"answer {parts[1]}")
        if kind == "flaky":
            return web.Response(status=500 if nth <= int(parts[1]) else 200, text=f"try {nth}")
        if kind == "retry-after":
            return web.Response(status=int(parts[1]), headers={"Retry-After": parts[2].replace("_", " ")})
        if kind == "slow":
            await asyncio.sleep(int(parts[1]) / 1000)
            return web.Response(status=200, text="slowly")
        if kind == "redirect":
            raise web.HTTPMovedPermanently(location="https://elsewhere.example/hook")
        if kind == "hang":
            await asyncio.sleep(3600)
        if kind == "reset":
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        if kind == "trickle":
            response = web.StreamResponse(status=200)
            await response.prepare(request)
            for _ in range(3600):
                await response.write(b"x")
                await asyncio.sleep(0.2)
            return response
        if kind == "hostile":
            return web.Response(status=500, text=HOSTILE)
        if kind == "big":
            return web.Response(status=500, body=b"\x00" * 10 + b"e" * 100_000)
        return web.Response(status=200, text="ok")


@contextlib.asynccontextmanager
async def running_receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", receiver.handle)
    receiver.server = TestServer(app, host="127.0.0.1")
    await receiver.server.start_server()
    try:
        yield receiver
    finally:
        await receiver.server.close()
