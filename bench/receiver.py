"""The webhook receiver of the delivery scenarios (limit, P1-P4, P7): one aiohttp process on 127.0.0.1.

``python bench/receiver.py --port N`` answers every ``POST /<kind>/<tag>/<n>``:

- ``kind`` ``h`` (healthy): 200 at once;
- ``kind`` ``hang``: holds the request for ``--hang-s`` seconds (bounded; P3 sets it above the
  dispatcher's delivery timeout, so the sender gives up first), then 200.

For every request it records the receipt time (``time.time_ns()``, the same clock as the
publisher's on the same box), the latency ``receipt - data.sent_at_ns`` (the publisher puts its
send time in the event's data), whether the Standard Webhooks signature checks out against the
secret registered for the path, and whether ``(path, webhook-id)`` was seen before (a duplicate).
Figures are kept per group ``<kind>/<tag>``. Control routes (for the runner only):

- ``POST /_bench/secrets`` ``{path: "whsec_..."}``: secrets to verify signatures with;
- ``GET /_bench/count``: ``{group: requests so far}`` (cheap; the P1 publisher polls it);
- ``GET /_bench/stats?group=h/p1&since_ns=..&until_ns=..``: count, latency percentiles, first and
  last receipt, bad signatures, of the requests received in that window; duplicates, unverified
  requests and distinct connections (at least; ids of closed ones may be reused) since the start;
- ``GET /_bench/raw?group=..&since_ns=..&until_ns=..``: ``[[receipt_ns, latency_ns], ...]`` of that window;
- ``POST /_bench/reset``: forget everything recorded (secrets stay).

It verifies signatures as a careful receiver would (HMAC-SHA256 over ``id.timestamp.body``,
timestamp within 5 minutes), so the limit and the dispatcher pay the same receiver cost.
Bounded: at most MAX_RECORDS requests are recorded. It does not import the project.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hashlib
import hmac
import math
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson
from aiohttp import web

from shared.runtime import new_event_loop

MAX_RECORDS = 2_000_000
TOLERANCE_S = 300


@dataclass
class Group:
    received_ns: list[int] = field(default_factory=list)
    latency_ns: list[int] = field(default_factory=list)  # -1 when the body carried no sent_at_ns
    bad_signature: list[int] = field(default_factory=list)  # receipt times of requests that failed the check
    unverified: int = 0  # no secret registered for the path
    duplicates: int = 0


@dataclass
class State:
    hang_s: float
    secrets: dict[str, bytes] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)
    seen: set[tuple[str, str]] = field(default_factory=set)
    counts: Counter[str] = field(default_factory=Counter)
    connections: Counter[str] = field(default_factory=Counter)  # distinct connections per group
    protocols: set[tuple[str, int]] = field(default_factory=set)
    records: int = 0


def _verify(key: bytes, headers: Mapping[str, str], body: bytes) -> bool:
    msg_id, stamp = headers.get("webhook-id"), headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not msg_id or not stamp or not signatures or not stamp.isdigit():
        return False
    if abs(time.time() - int(stamp)) > TOLERANCE_S:
        return False
    expected = "v1," + base64.b64encode(hmac.new(key, f"{msg_id}.{stamp}.".encode() + body,
                                                 hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(expected, s) for s in signatures.split(" "))


def _secret_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def build(state: State) -> web.Application:
    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time_ns()
        path = request.path
        kind, _, rest = path[1:].partition("/")
        tag = rest.partition("/")[0]
        name = f"{kind}/{tag}"
        state.counts[name] += 1
        connection = (name, id(request.protocol))  # an id may be reused once a connection is gone: a floor
        if connection not in state.protocols and len(state.protocols) < MAX_RECORDS:
            state.protocols.add(connection)
            state.connections[name] += 1
        if state.records < MAX_RECORDS:
            state.records += 1
            group = state.groups.get(name)
            if group is None:
                group = state.groups[name] = Group()
            try:
                sent = orjson.loads(body)["data"]["sent_at_ns"]
                latency = now - int(sent)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                latency = -1
            group.received_ns.append(now)
            group.latency_ns.append(latency)
            key = state.secrets.get(path)
            if key is None:
                group.unverified += 1
            elif not _verify(key, request.headers, body):
                group.bad_signature.append(now)
            seen = (path, request.headers.get("webhook-id", ""))
            if seen in state.seen:
                group.duplicates += 1
            else:
                state.seen.add(seen)
        if kind == "hang":
            await asyncio.sleep(state.hang_s)
        return web.Response(text="ok")

    async def secrets(request: web.Request) -> web.Response:
        try:
            given = orjson.loads(await request.read())
            state.secrets.update({path: _secret_key(secret) for path, secret in given.items()})
        except (orjson.JSONDecodeError, AttributeError, binascii.Error) as exc:
            return web.Response(status=400, text=repr(exc))
        return web.json_response({"secrets": len(state.secrets)})

    async def count(request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(state.counts), content_type="application/json")

    async def stats(request: web.Request) -> web.Response:
        group = state.groups.get(request.query.get("group", ""), Group())
        since = int(request.query.get("since_ns", "0"))
        until = int(request.query.get("until_ns", str(2**63)))
        picked = [(t, lat) for t, lat in zip(group.received_ns, group.latency_ns, strict=True) if since <= t <= until]
        latencies = sorted(lat for _, lat in picked if lat >= 0)

        def pct(q: float) -> float | None:
            if not latencies:
                return None
            return round(latencies[min(len(latencies) - 1, max(0, math.ceil(q * len(latencies)) - 1))] / 1e6, 2)

        return web.Response(body=orjson.dumps({
            "count": len(picked),
            "with_latency": len(latencies),
            "first_ns": picked[0][0] if picked else None,
            "last_ns": picked[-1][0] if picked else None,
            "p50_ms": pct(0.50), "p95_ms": pct(0.95), "p99_ms": pct(0.99), "max_ms": pct(1.0),
            "bad_signatures": sum(1 for t in group.bad_signature if since <= t <= until),
            "unverified_total": group.unverified,
            "duplicates_total": group.duplicates,
            "received_total": len(group.received_ns),
            "connections_total": state.connections[request.query.get("group", "")],
        }), content_type="application/json")

    async def raw(request: web.Request) -> web.Response:
        """[[receipt_ns, latency_ns], ...] of the group's requests received in the window."""
        group = state.groups.get(request.query.get("group", ""), Group())
        since = int(request.query.get("since_ns", "0"))
        until = int(request.query.get("until_ns", str(2**63)))
        picked = [[t, lat] for t, lat in zip(group.received_ns, group.latency_ns, strict=True) if since <= t <= until]
        return web.Response(body=orjson.dumps(picked), content_type="application/json")

    async def reset(request: web.Request) -> web.Response:
        state.groups.clear()
        state.seen.clear()
        state.counts.clear()
        state.connections.clear()
        state.protocols.clear()
        state.records = 0
        return web.json_response({"reset": True})

    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_post("/_bench/secrets", secrets)
    app.router.add_get("/_bench/count", count)
    app.router.add_get("/_bench/stats", stats)
    app.router.add_get("/_bench/raw", raw)
    app.router.add_post("/_bench/reset", reset)
    app.router.add_post("/{tail:.+}", hook)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--hang-s", type=float, default=30.0, help="how long /hang/ requests are held (at most 120)")
    args = parser.parse_args()
    state = State(hang_s=min(120.0, args.hang_s))
    web.run_app(build(state), loop=new_event_loop(), host="127.0.0.1", port=args.port, access_log=None,
                shutdown_timeout=1, print=None, backlog=2048)


if __name__ == "__main__":
    main()
