"""The drill's webhook receivers: one aiohttp process on 127.0.0.1 serving every endpoint, each path with
its own scripted faults. It does not import the project.

``python chaos/receiver.py --port N`` answers ``POST /<kind>/<n>``. What a request gets depends on the kind,
on a hash of ``(path, webhook-id)`` (so each endpoint fails a different share of events) and on how many
requests this ``(path, webhook-id)`` has had before (faults hit the first attempts only, so every delivery
can still succeed within the retry schedule):

- ``ok``: 200 after 1-15 ms;
- ``flaky``: a sixth of the events get 500 twice, another sixth once, then 200;
- ``r429``: a third get ``429`` with ``Retry-After: 2`` on the first attempt, then 200;
- ``hang``: an eighth hang on the first attempt (held ``--hang-s``, far past the sender's timeout);
- ``reset``: a quarter have the connection reset (RST) on the first attempt, after the body was read;
- ``trickle``: every answer is a 200 whose body trickles; a sixth trickle for ``--hang-s`` on the first
  attempt (past the sender's timeout), the rest finish in about 0.1 s;
- ``redirect``: a fifth get ``302`` on the first attempt (redirects are failures), then 200;
- ``gone``: 200 until ``POST /_chaos/gone`` (the runner's switch), then ``410 Gone`` for good;
- ``dead``: always 500.

Every request is recorded: ``[path, webhook-id, start, end, status, outcome, signature_ok]`` with wall-clock
times (``time.time()``, comparable with the runner's and Postgres' clocks on this box) and ``outcome`` one of
``done`` (the whole answer was written), ``cancelled`` (the sender hung up first) or ``reset`` (we reset it).
Only ``done`` with a 2xx status counts as received. Control routes (the runner's):

- ``POST /_chaos/secrets`` ``{path: "whsec_..."}``: secrets to check signatures with;
- ``POST /_chaos/gone``: from now on every ``gone`` endpoint answers 410; returns the switch time;
- ``GET /_chaos/count``: ``{"requests": n, "received": n}`` (received: distinct (path, id) with a done 2xx);
- ``GET /_chaos/records``: every record (bounded: at most MAX_RECORDS are kept; ``dropped`` says how many not).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hashlib
import hmac
import random
import socket
import struct
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field

import orjson
from aiohttp import web

MAX_RECORDS = 3_000_000
TOLERANCE_S = 300


@dataclass
class State:
    hang_s: float
    secrets: dict[str, bytes] = field(default_factory=dict)
    records: list[list[object]] = field(default_factory=list)
    nth: Counter[tuple[str, str]] = field(default_factory=Counter)
    received: set[tuple[str, str]] = field(default_factory=set)
    gone_since: float | None = None
    dropped: int = 0


def verify(key: bytes, msg_id: str, stamp: str, signatures: str, body: bytes) -> bool:
    if not msg_id or not stamp.isdigit() or abs(time.time() - int(stamp)) > TOLERANCE_S:
        return False
    mac = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    expected = "v1," + base64.b64encode(mac).decode()
    return any(hmac.compare_digest(expected, s) for s in signatures.split(" "))


def fault(kind: str, path: str, msg_id: str, nth: int, gone: bool) -> str:
    """What this request gets: ``ok``, ``500``, ``429``, ``hang``, ``reset``, ``trickle-long``, ``302``,
    ``410`` (``trickle`` endpoints answer ``ok`` with a short trickle)."""
    h = zlib.crc32(f"{path}|{msg_id}".encode())
    if kind == "flaky":
        fails = 2 if h % 6 == 0 else 1 if h % 6 == 1 else 0
        return "500" if nth <= fails else "ok"
    if kind == "r429":
        return "429" if nth == 1 and h % 3 == 0 else "ok"
    if kind == "hang":
        return "hang" if nth == 1 and h % 8 == 0 else "ok"
    if kind == "reset":
        return "reset" if nth == 1 and h % 4 == 0 else "ok"
    if kind == "trickle":
        return "trickle-long" if nth == 1 and h % 6 == 0 else "ok"
    if kind == "redirect":
        return "302" if nth == 1 and h % 5 == 0 else "ok"
    if kind == "gone":
        return "410" if gone else "ok"
    if kind == "dead":
        return "500"
    return "ok"


def _reset(request: web.Request) -> None:
    """Close the connection with a TCP RST (SO_LINGER 0), as a crashing proxy would."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def build(state: State) -> web.Application:
    async def hook(request: web.Request) -> web.StreamResponse:
        start = time.time()
        path = request.path
        msg_id = request.headers.get("webhook-id", "")
        body = await request.read()
        key = state.secrets.get(path)
        signed = key is not None and verify(key, msg_id, request.headers.get("webhook-timestamp", ""),
                                            request.headers.get("webhook-signature", ""), body)
        state.nth[(path, msg_id)] += 1
        kind = path.strip("/").partition("/")[0]
        what = fault(kind, path, msg_id, state.nth[(path, msg_id)], state.gone_since is not None)
        record: list[object] = [path, msg_id, start, None, None, "cancelled", signed]
        if len(state.records) < MAX_RECORDS:
            state.records.append(record)
        else:
            state.dropped += 1
        try:
            if what == "reset":
                record[3], record[5] = time.time(), "reset"
                _reset(request)
                raise asyncio.CancelledError  # nothing more to write on this connection
            if what == "hang":
                await asyncio.sleep(state.hang_s)
            status = {"500": 500, "429": 429, "302": 302, "410": 410}.get(what, 200)
            record[4] = status
            if kind == "trickle":
                response = web.StreamResponse(status=status)
                response.content_length = 10 if what == "trickle-long" else 5
                await response.prepare(request)
                for _ in range(response.content_length):
                    await asyncio.sleep(state.hang_s / 10 if what == "trickle-long" else 0.02)
                    await response.write(b".")
                await response.write_eof()
            else:
                if kind == "ok":
                    await asyncio.sleep(random.uniform(0.001, 0.015))
                headers = {"Retry-After": "2"} if status == 429 else {"Location": "/moved"} if status == 302 else {}
                response = web.Response(status=status, text="ok" if status == 200 else what, headers=headers)
                await response.prepare(request)
                await response.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            if record[5] == "cancelled":
                record[3] = time.time()
            raise
        record[3], record[5] = time.time(), "done"
        if 200 <= status < 300 and msg_id:
            state.received.add((path, msg_id))
        return response

    async def set_secrets(request: web.Request) -> web.Response:
        try:
            given = orjson.loads(await request.read())
            state.secrets.update({p: base64.b64decode(s.removeprefix("whsec_")) for p, s in given.items()})
        except (orjson.JSONDecodeError, AttributeError, binascii.Error) as exc:
            return web.Response(status=400, text=repr(exc))
        return web.json_response({"secrets": len(state.secrets)})

    async def gone(request: web.Request) -> web.Response:
        if state.gone_since is None:
            state.gone_since = time.time()
        return web.json_response({"gone_since": state.gone_since})

    async def count(request: web.Request) -> web.Response:
        return web.json_response({"requests": len(state.records) + state.dropped, "received": len(state.received)})

    async def records(request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps({"records": state.records, "dropped": state.dropped,
                                               "gone_since": state.gone_since}),
                            content_type="application/json")

    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_post("/_chaos/secrets", set_secrets)
    app.router.add_post("/_chaos/gone", gone)
    app.router.add_get("/_chaos/count", count)
    app.router.add_get("/_chaos/records", records)
    app.router.add_post("/{tail:.+}", hook)
    return app


async def serve(port: int, hang_s: float) -> None:
    state = State(hang_s=hang_s)
    # handler_cancellation: a request ends (and is recorded as cancelled) when the sender hangs up.
    runner = web.AppRunner(build(state), handler_cancellation=True, access_log=None, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=2048)
    await site.start()
    print(f"receiver listening on 127.0.0.1:{port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--hang-s", type=float, default=20.0, help="how long a hang or a long trickle lasts")
    args = parser.parse_args()
    asyncio.run(serve(args.port, min(120.0, args.hang_s)))


if __name__ == "__main__":
    main()
