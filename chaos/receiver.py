"""The drill's webhook receivers: one aiohttp process on 127.0.0.1 serving every endpoint, each path with
its own scripted faults. It does not import the project.

``python chaos/receiver.py --port N`` answers ``POST /<kind>/<n>``. What a request gets depends on the kind,
on a hash of ``(path, webhook-id)`` (so each endpoint fails a different share of events) and on how many
requests this ``(path, webhook-id)`` has had before (the scripted faults hit the first attempts only, so every
delivery can still succeed within the retry schedule):

- ``ok``: 200 after 1-15 ms;
- ``flaky``: a sixth of the events get 500 twice, another sixth once, then 200;
- ``r429``: a third get ``429`` with ``Retry-After: 2`` on the first attempt, then 200;
- ``hang``: an eighth hang on the first attempt (held ``--hang-s``, far past the sender's timeout);
- ``reset``: a quarter have the connection reset (RST) on the first attempt, after the body was read;
- ``trickle``: every answer is a 200 whose body trickles; a sixth trickle for ``--hang-s`` on the first
  attempt (past the sender's timeout), the rest finish in about 0.1 s;
- ``redirect``: a fifth get ``302`` on the first attempt (redirects are failures), then 200;
- ``gone``: 200 until ``POST /_chaos/gone`` (the runner's switch), then ``410 Gone`` for good;
- ``dead``: always 500;
- ``churn``: 200 after 0.05-1.2 s (so that the runner's churn, which deletes, disables, re-points and
  re-keys these endpoints, finds requests in flight); after 1.4-1.5 s for events whose data has
  ``"chaos_slow"`` (the churn's bursts: their deliveries queue up in the endpoint's lane).

The **hostile** kinds answer as ``ok`` except between ``POST /_chaos/hostile`` and ``POST
/_chaos/hostile?on=0`` (the drill's hostile phase), when (``nth`` is the request's number for its
``(path, webhook-id)``):

- ``random``: a status drawn per request from 2xx (200, 201, 204, 299), 3xx (301, 307, 308 with
  ``Location``; 302 and 304 without), 4xx (400, 401, 404, 408, 418, 422, 429 without ``Retry-After``) and
  5xx (500, 502, 503 without ``Retry-After``, 504, 599); about 40 % are 2xx. Never 410 (see ``g410``);
- ``badretry``: the first request gets 429 or 503 with a garbage ``Retry-After`` (``retry_after_values``:
  ``²``, which ``str.isdigit()`` accepts and ``float()`` refuses, ``-1``, ``NaN``, ``1e9``, twenty 9s,
  ``'  12  '``, an HTTP date an hour ago and one ten years ahead, ``Wed, 99 Foo 2026``, 6 KiB of digits and
  6 KiB of words, non-ASCII text); the next ones 200 (so that failures and successes alternate and the
  endpoint's breaker seldom opens: the values keep being served);
- ``huge``: the first two requests get a response with huge headers: one header of 8,000 bytes (within
  the common 8 KiB limit), one of 9,000 bytes, 90 headers, 1,000 headers, or a 500 with a 16 KiB header;
  then 200. Answers past the usual limits (a header line over 8 KiB, over 100 headers) are recorded as
  ``oversized``: a sender may refuse to parse them, so they do not count as delivered;
- ``drip``: the first two requests get a 200 whose body drips: a third in about 1 s (fine), a third one
  byte a second for 10 bytes, a third one byte every 2 s for ``--hang-s`` (both far past the sender's
  timeout); then 200;
- ``midreset``: the first request (and a third of the second ones) gets a status line, headers and 2 KiB of
  a longer body (``Content-Length`` or chunked), then the connection is reset (RST); then 200;
- ``silent``: reads the request and never answers, until the sender hangs up (at most 120 s, then RST):
  every time for three quarters of the events, on the first request only for the rest;
- ``g410``: a fifth of the first requests get ``410 Gone`` (the service disables the endpoint: by design),
  the rest 200 or 500.

Every request is recorded: ``[path, webhook-id, start, end, status, outcome, signature_ok, fault]`` with wall-clock
times (``time.time()``, comparable with the runner's and Postgres' clocks on this box) and ``outcome`` one of
``done`` (the whole answer was written), ``oversized`` (written, but past the usual header limits),
``cancelled`` (the sender hung up first) or ``reset`` (we reset it). Only ``done`` with a 2xx status counts
as received; ``fault`` is what ``fault()`` chose. Control routes (the runner's):

- ``POST /_chaos/secrets`` ``{path: "whsec_..."}``: secrets to check signatures with (valid for good);
- ``POST /_chaos/keys`` ``{"paths": [...], "keys": [["whsec_...", until or null], ...]}``: the signing
  secrets of an endpoint (at each of its paths), each valid until a wall-clock time or for good (a
  rotation keeps the old one valid for its grace period);
- ``POST /_chaos/gone``: from now on every ``gone`` endpoint answers 410; returns the switch time;
- ``POST /_chaos/hostile`` (``?on=0``): the hostile kinds are hostile from now on (no longer); returns the
  switch times;
- ``GET /_chaos/count``: ``{"requests": n, "received": n}`` (received: distinct (path, id) with a done 2xx);
- ``GET /_chaos/inflight``: ``{path: requests being answered now}``;
- ``GET /_chaos/records``: every record (bounded: at most MAX_RECORDS are kept; ``dropped`` says how many not).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import email.utils
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
SILENT_MAX_S = 120.0
HOSTILE_KINDS = ("random", "badretry", "huge", "drip", "midreset", "silent", "g410")
RANDOM_STATUSES = (200, 200, 200, 200, 200, 201, 204, 299, 200, 200, 201,
                   301, 302, 307, 308, 304,
                   400, 401, 404, 408, 418, 422, 429,
                   500, 502, 503, 504, 599)
OVERSIZED = ("huge-big-over", "huge-many-over", "huge-500")
SLOW_MARK = b'"chaos_slow"'  # in an event's data: the churn's bursts, answered in 1.4-1.5 s by churn endpoints


def retry_after_values(now: float) -> tuple[str, ...]:
    """Garbage (and borderline) ``Retry-After`` values, in a fixed order."""
    return ("²", "-1", "NaN", "1e9", "99999999999999999999", "  12  ",
            email.utils.formatdate(now - 3600, usegmt=True),
            email.utils.formatdate(now + 10 * 365 * 86400, usegmt=True),
            "Wed, 99 Foo 2026", "9" * 6144, ("soon " * 1229)[:6144], "bientôt", "五秒後")


RETRY_AFTER_COUNT = len(retry_after_values(0.0))
RETRY_AFTER_LABELS = ("'²'", "'-1'", "'NaN'", "'1e9'", "twenty 9s", "'  12  '", "an HTTP date an hour ago",
                      "an HTTP date 10 years ahead", "'Wed, 99 Foo 2026'", "6 KiB of digits", "6 KiB of words",
                      "'bientôt'", "'五秒後'")


@dataclass
class State:
    hang_s: float
    keys: dict[str, list[tuple[bytes, float | None]]] = field(default_factory=dict)  # path -> (key, valid until)
    records: list[list[object]] = field(default_factory=list)
    nth: Counter[tuple[str, str]] = field(default_factory=Counter)
    received: set[tuple[str, str]] = field(default_factory=set)
    inflight: Counter[str] = field(default_factory=Counter)
    gone_since: float | None = None
    hostile_since: float | None = None
    hostile_until: float | None = None
    dropped: int = 0


def verify(keys: list[tuple[bytes, float | None]], msg_id: str, stamp: str, signatures: str, body: bytes) -> bool:
    now = time.time()
    if not msg_id or not stamp.isascii() or not stamp.isdigit() or abs(now - int(stamp)) > TOLERANCE_S:
        return False
    for key, until in keys:
        if until is not None and now > until:
            continue
        mac = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
        expected = "v1," + base64.b64encode(mac).decode()
        if any(hmac.compare_digest(expected, s) for s in signatures.split(" ")):
            return True
    return False


def fault(kind: str, path: str, msg_id: str, nth: int, gone: bool, hostile: bool) -> str:
    """What this request gets: ``ok``, ``500``, ``429``, ``hang``, ``reset``, ``trickle-long``, ``302``,
    ``410`` (``trickle`` endpoints answer ``ok`` with a short trickle), ``churn``, or for the hostile kinds
    ``status-<n>``, ``badretry-<i>``, ``huge-…``, ``drip-…``, ``midreset-…``, ``silent``."""
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
    if kind == "churn":
        return "churn"
    if kind not in HOSTILE_KINDS or not hostile:
        return "ok"
    per_request = zlib.crc32(f"{path}|{msg_id}|{nth}".encode())
    if kind == "random":
        return f"status-{RANDOM_STATUSES[per_request % len(RANDOM_STATUSES)]}"
    if kind == "badretry":
        return f"badretry-{h % RETRY_AFTER_COUNT}" if nth == 1 else "ok"
    if kind == "huge":
        variants = ("huge-big-near", "huge-big-over", "huge-many-near", "huge-many-over", "huge-500")
        return variants[(h + nth) % len(variants)] if nth <= 2 else "ok"
    if kind == "drip":
        return ("drip-short", "drip-long", "drip-forever")[(h + nth) % 3] if nth <= 2 else "ok"
    if kind == "midreset":
        if nth == 1 or (nth == 2 and h % 3 == 0):
            return ("midreset-length", "midreset-chunked")[(h + nth) % 2]
        return "ok"
    if kind == "silent":
        return "silent" if nth == 1 or h % 4 != 0 else "ok"
    if kind == "g410":
        if nth == 1 and h % 5 == 0:
            return "410"
        return "status-500" if per_request % 3 == 0 else "ok"
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


def _huge_headers(what: str) -> dict[str, str]:
    if what == "huge-big-near":
        return {"X-Chaos-Big": "a" * 8000}
    if what == "huge-big-over":
        return {"X-Chaos-Big": "b" * 9000}
    if what == "huge-many-near":
        return {f"X-Chaos-{i:03d}": "v" * 40 for i in range(90)}
    if what == "huge-many-over":
        return {f"X-Chaos-{i:04d}": "v" * 40 for i in range(1000)}
    return {"X-Chaos-Big": "c" * 16384}  # huge-500


def build(state: State) -> web.Application:
    async def answer(request: web.Request, kind: str, what: str, record: list[object],
                     body: bytes) -> web.StreamResponse:
        """Write the answer ``what``; the status it had (the record's outcome is set by the caller)."""
        if what.startswith("midreset"):
            record[4] = 200
            response = web.StreamResponse(status=200)
            if what == "midreset-length":
                response.content_length = 100_000
            else:
                response.enable_chunked_encoding()
            await response.prepare(request)
            await response.write(b"x" * 2048)
            await asyncio.sleep(0.05)
            record[3], record[5] = time.time(), "reset"
            _reset(request)
            raise asyncio.CancelledError
        if what == "silent":
            await asyncio.sleep(SILENT_MAX_S)
            record[3], record[5] = time.time(), "reset"
            _reset(request)
            raise asyncio.CancelledError
        if what.startswith("drip"):
            record[4] = 200
            response = web.StreamResponse(status=200)
            if what == "drip-long":
                response.content_length = 10
                pieces, pause = 10, 1.0
            elif what == "drip-forever":
                response.enable_chunked_encoding()
                pieces, pause = max(1, int(state.hang_s / 2)), 2.0
            else:
                response.enable_chunked_encoding()
                pieces, pause = 10, 0.1
            await response.prepare(request)
            for _ in range(pieces):
                await asyncio.sleep(pause)
                await response.write(b".")
            await response.write_eof()
            return response
        if kind == "trickle":
            record[4] = 200
            response = web.StreamResponse(status=200)
            response.content_length = 10 if what == "trickle-long" else 5
            await response.prepare(request)
            for _ in range(response.content_length):
                await asyncio.sleep(state.hang_s / 10 if what == "trickle-long" else 0.02)
                await response.write(b".")
            await response.write_eof()
            return response
        headers: dict[str, str] = {}
        text: str | None = None
        if what.startswith("status-"):
            status = int(what.removeprefix("status-"))
            if status in (301, 307, 308):
                headers["Location"] = "/elsewhere"
        elif what.startswith("badretry-"):
            h = zlib.crc32(request.headers.get("webhook-id", "").encode())
            status = 429 if h % 2 else 503
            headers["Retry-After"] = retry_after_values(time.time())[int(what.removeprefix("badretry-"))]
        elif what.startswith("huge-"):
            status = 500 if what == "huge-500" else 200
            headers.update(_huge_headers(what))
        else:
            status = {"500": 500, "429": 429, "302": 302, "410": 410}.get(what, 200)
            if status == 429:
                headers["Retry-After"] = "2"
            elif status == 302:
                headers["Location"] = "/moved"
        record[4] = status
        if what == "churn":
            h = zlib.crc32(f"{request.path}|{request.headers.get('webhook-id', '')}".encode())
            slow = SLOW_MARK in body
            await asyncio.sleep(1.4 + (h % 100) / 1000 if slow else 0.05 + (h % 1150) / 1000)
        elif kind in ("ok", *HOSTILE_KINDS):
            await asyncio.sleep(random.uniform(0.001, 0.015))
        if status not in (204, 304):
            text = "ok" if status == 200 else what
        response = web.Response(status=status, text=text, headers=headers)
        await response.prepare(request)
        await response.write_eof()
        return response

    async def hook(request: web.Request) -> web.StreamResponse:
        start = time.time()
        path = request.path
        msg_id = request.headers.get("webhook-id", "")
        state.inflight[path] += 1
        try:
            body = await request.read()
            keys = state.keys.get(path)
            signed = keys is not None and verify(keys, msg_id, request.headers.get("webhook-timestamp", ""),
                                                 request.headers.get("webhook-signature", ""), body)
            state.nth[(path, msg_id)] += 1
            kind = path.strip("/").partition("/")[0]
            what = fault(kind, path, msg_id, state.nth[(path, msg_id)], state.gone_since is not None,
                         state.hostile_since is not None and state.hostile_until is None)
            record: list[object] = [path, msg_id, start, None, None, "cancelled", signed, what]
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
                response = await answer(request, kind, what, record, body)
            except (ConnectionError, asyncio.CancelledError):
                if record[5] == "cancelled":
                    record[3] = time.time()
                raise
            record[3], record[5] = time.time(), "oversized" if what in OVERSIZED else "done"
            status = record[4]
            if isinstance(status, int) and 200 <= status < 300 and msg_id and record[5] == "done":
                state.received.add((path, msg_id))
            return response
        finally:
            state.inflight[path] -= 1
            if state.inflight[path] <= 0:
                del state.inflight[path]

    async def set_secrets(request: web.Request) -> web.Response:
        try:
            given = orjson.loads(await request.read())
            state.keys.update({p: [(base64.b64decode(s.removeprefix("whsec_")), None)] for p, s in given.items()})
        except (orjson.JSONDecodeError, AttributeError, binascii.Error) as exc:
            return web.Response(status=400, text=repr(exc))
        return web.json_response({"secrets": len(state.keys)})

    async def set_keys(request: web.Request) -> web.Response:
        try:
            given = orjson.loads(await request.read())
            keys = [(base64.b64decode(str(s).removeprefix("whsec_")), None if until is None else float(until))
                    for s, until in given["keys"]]
            for path in given["paths"]:
                state.keys[str(path)] = list(keys)
        except (orjson.JSONDecodeError, AttributeError, binascii.Error, KeyError, TypeError, ValueError) as exc:
            return web.Response(status=400, text=repr(exc))
        return web.json_response({"paths": len(given["paths"]), "keys": len(keys)})

    async def gone(request: web.Request) -> web.Response:
        if state.gone_since is None:
            state.gone_since = time.time()
        return web.json_response({"gone_since": state.gone_since})

    async def hostile(request: web.Request) -> web.Response:
        on = request.query.get("on", "1") == "1"
        if on and state.hostile_since is None:
            state.hostile_since = time.time()
        elif not on and state.hostile_since is not None and state.hostile_until is None:
            state.hostile_until = time.time()
        return web.json_response({"hostile_since": state.hostile_since, "hostile_until": state.hostile_until})

    async def count(request: web.Request) -> web.Response:
        return web.json_response({"requests": len(state.records) + state.dropped, "received": len(state.received)})

    async def inflight(request: web.Request) -> web.Response:
        return web.json_response(dict(state.inflight))

    async def records(request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps({"records": state.records, "dropped": state.dropped,
                                               "gone_since": state.gone_since,
                                               "hostile_since": state.hostile_since,
                                               "hostile_until": state.hostile_until}),
                            content_type="application/json")

    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_post("/_chaos/secrets", set_secrets)
    app.router.add_post("/_chaos/keys", set_keys)
    app.router.add_post("/_chaos/gone", gone)
    app.router.add_post("/_chaos/hostile", hostile)
    app.router.add_get("/_chaos/count", count)
    app.router.add_get("/_chaos/inflight", inflight)
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
