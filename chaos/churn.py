"""The endpoint churn of the hostile phase: on a fixed, seeded plan, the drill changes its ``churn`` endpoints
through the public API (``/v1/businesses/{id}/…`` with the business's API key, over both API processes)
while the load's deliveries to them are queued and in flight, and re-sends failed deliveries of the hostile
endpoints:

- ``delete``: ``DELETE …/webhook-endpoints/{id}`` (its deliveries go with it);
- ``disable`` / ``enable``: ``PATCH {"enabled": false|true}``;
- ``repoint``: ``PATCH {"url": …}`` to a new path on the receiver (told the endpoint's keys for it first);
- ``rotate``: ``POST …/secret/rotate {"grace_seconds": ROTATE_GRACE_S}``; the receiver is told the new secret
  and keeps the old one valid for the grace period (plus ``KEY_SLACK_S``), as a receiver following
  docs/receiving-webhooks.md would;
- ``recover`` / ``recover_missed``: ``POST …/recover {"since", "include_missed", "rate"}`` from the start of
  the load (``include_missed`` also sends the events it never got while it was disabled);
- ``retry`` (hostile endpoints): the first failed delivery of ``GET …/deliveries?status=failed``, then
  ``POST …/deliveries/{id}/retry``.

A delete or a disable comes right after a burst of ``BURST_EVENTS`` events for the endpoint's business (through
the publisher, acknowledged like the rest), once the receiver has a request of it in flight: the endpoint's
lane then has deliveries queued and in flight when the change lands. Every delete, disable, re-point and
rotation waits (up to ``IN_FLIGHT_WAIT_S``) for a request in flight at the endpoint, and the log says how many
there were. Each endpoint has a script (``SCRIPTS``, one per churn endpoint in turn) started at a seeded offset
into the phase; scripts without a delete start again every ``period_s`` until the phase ends. An action that meets a
503 or no answer is tried again (on the other API process) for up to ``ACTION_RETRY_S``, longer than a
Postgres outage of the drill. Everything is logged with the wall-clock window in which it took effect: from
the first request to the answer that settled it. ``History`` keeps, per endpoint, its paths, its enabled
state, its deletion, its keys and the deliveries retried, for the ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
from world import CHURN_KIND, HOSTILE_KINDS, Business, Endpoint, World

ACTION_RETRY_S = 15.0
ROTATE_GRACE_S = 10
KEY_SLACK_S = 2.0  # the receiver accepts an old secret this long after its grace period ends
RECOVER_RATE = 20.0
REQUEST_TIMEOUT_S = 10.0
# (action, seconds after the script's start)
# A disable lasts 10-12 s: long enough for a request sent more than GONE_GRACE_S after it to show.
SCRIPTS: tuple[tuple[tuple[str, float], ...], ...] = (
    (("repoint", 0), ("rotate", 3), ("delete", 14)),
    (("disable", 0), ("enable", 12), ("recover_missed", 13), ("rotate", 17)),
    (("rotate", 0), ("repoint", 4), ("disable", 8), ("enable", 20), ("recover", 21)),
    (("delete", 0),),
    (("repoint", 0), ("rotate", 5), ("repoint", 9), ("recover", 12)),
    (("disable", 0), ("enable", 10), ("recover_missed", 11)),
)
RETRY_TARGETS = ("silent", "badretry", "random", "drip", "huge", "midreset", "dead")
IN_FLIGHT_WAIT_S = 3.0  # a delete, disable, re-point or rotation waits this long, at most, for a request in flight
WAITS_FOR_IN_FLIGHT = ("delete", "disable", "repoint", "rotate")
# Before a delete or a disable, a burst of this many events for the endpoint's business, which the churn
# receiver answers in 1.4-1.5 s each: its lane (10 requests at once per worker) then holds a queue for several
# seconds (longer than ledger.GONE_GRACE_S) when the change lands, so that "queued" is not an empty word.
BURST_EVENTS = 200
BURST_BEFORE = ("delete", "disable")
BURST_SETTLE_S = 0.5  # from the burst's first request in flight to the change


@dataclass
class Action:
    at: float  # seconds into the load
    kind: str
    endpoint: Endpoint


@dataclass
class Done:
    """One action as it happened."""

    kind: str
    endpoint: str  # ep_…
    label: str  # the endpoint's first path
    planned_s: float
    sent_at: float
    acked_at: float | None  # the answer that settled it (None: no answer within ACTION_RETRY_S)
    status: str  # "204", "200", "202", "409", … or "no answer"
    tries: int
    in_flight: int  # requests the receiver was answering at the endpoint when the action was sent
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status.startswith("2")


@dataclass
class History:
    """What the churn did to one endpoint. Each change took effect at some instant between its request being
    sent and its answer: ``(sent, acked)`` windows, wall clock."""

    endpoint: Endpoint
    keys: list[tuple[str, float | None]]  # whsec_…, valid until (None: for good), as the receiver knows them
    paths: list[tuple[str, float, float]] = field(default_factory=list)  # (path, sent, acked)
    enabled: list[tuple[bool | None, float, float]] = field(default_factory=list)  # None: outcome unknown
    deleted: tuple[float, float] | None = None
    retried: dict[str, float] = field(default_factory=dict)  # dlv_… -> when its retry was acknowledged

    def __post_init__(self) -> None:
        if not self.paths:
            self.paths.append((self.endpoint.path, 0.0, 0.0))

    def enabled_during(self, start: float, end: float) -> bool | None:
        """True/False when the endpoint was surely enabled/disabled over all of ``[start, end]``; None when a
        change may have taken effect in between (or its outcome is unknown)."""
        state: bool | None = True
        for new, sent, acked in self.enabled:
            if sent <= end and acked >= start:
                return None
            if acked < start:
                state = new
        return state

    def disabled_spans(self) -> list[tuple[float, float]]:
        """Wall-clock spans in which the endpoint was surely disabled: from a disable's answer to the next
        enable's request (or forever)."""
        spans: list[tuple[float, float]] = []
        since: float | None = None
        for new, sent, acked in self.enabled:
            if new is False and since is None:
                since = acked
            elif new is not False and since is not None:
                spans.append((since, sent))
                since = None
        if since is not None:
            spans.append((since, math.inf))
        return spans


def plan(world: World, phase: tuple[float, float], period_s: float, seed: int) -> list[Action]:
    """The phase's actions, in time order: each churn endpoint runs a script (in turn) from a seeded offset;
    the hostile endpoints get a retry every ``period_s / 3`` and the ``random`` ones a recover."""
    rng = random.Random(seed)
    start, end = phase
    actions: list[Action] = []
    churn = [e for e in world.endpoints if e.kind == CHURN_KIND]
    for n, endpoint in enumerate(churn):
        script = SCRIPTS[n % len(SCRIPTS)]
        length = max(offset for _, offset in script)
        at = start + 1 + rng.uniform(0, max(0.0, min(period_s, end - start - length - 2)))
        while at + length <= end:
            actions.extend(Action(round(at + offset, 1), kind, endpoint) for kind, offset in script)
            if any(kind == "delete" for kind, _ in script):
                break
            at += period_s
    hostile = [e for e in world.endpoints if e.kind in RETRY_TARGETS]
    if hostile:
        step = period_s / 3
        at, n = start + step, 0
        while at < end - 2:
            actions.append(Action(round(at, 1), "retry", hostile[n % len(hostile)]))
            at, n = at + step, n + 1
    for n, endpoint in enumerate(e for e in world.endpoints if e.kind == "random"):
        actions.append(Action(round(start + (end - start) * (0.6 + 0.1 * n), 1), "recover", endpoint))
    actions.sort(key=lambda a: a.at)
    return actions


class Churn:
    """Runs the plan against the API processes and the receiver; ``log`` and ``histories`` say what it did."""

    def __init__(self, world: World, apis: list[str], receiver: str, load_start: float, actions: list[Action],
                 burst: Callable[[Business, int], None] | None = None) -> None:
        self.world = world
        self.burst = burst
        self.apis = apis
        self.receiver = receiver
        self.load_start = load_start
        self.actions = actions
        self.log: list[Done] = []
        self.answers: list[tuple[float, str, int, str]] = []  # (at, api, status, body excerpt) of every call
        self.histories: dict[str, History] = {
            e.id: History(e, [(world.secrets[e.path], None)])
            for e in world.endpoints if e.kind in (CHURN_KIND, *HOSTILE_KINDS, "dead")}
        self._api = 0
        self._repoints = 0

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            by_endpoint: dict[str, list[Action]] = {}
            for action in self.actions:
                by_endpoint.setdefault(action.endpoint.id, []).append(action)
            # One task per endpoint: its actions in order (an enable never overtakes its disable), while the
            # other endpoints' go on.
            await asyncio.gather(*(self._script(http, acts) for acts in by_endpoint.values()))

    async def _script(self, http: aiohttp.ClientSession, actions: list[Action]) -> None:
        for action in actions:
            await asyncio.sleep(max(0.0, self.load_start + action.at - time.time()))
            history = self.histories[action.endpoint.id]
            if history.deleted is not None:
                return
            try:
                await self._do(http, action, history)
            except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:  # the drill's own trouble
                self.log.append(Done(action.kind, action.endpoint.id, action.endpoint.path, action.at, time.time(),
                                     None, "drill error", 0, 0, repr(exc)[:200]))

    # ---- the actions -------------------------------------------------------------------------------

    async def _do(self, http: aiohttp.ClientSession, action: Action, history: History) -> None:
        ep = action.endpoint
        business = self.world.business(ep.business)
        base = f"/v1/businesses/{business.id}/webhook-endpoints/{ep.id}"
        kind = action.kind
        if kind in BURST_BEFORE and self.burst is not None:
            self.burst(business, BURST_EVENTS)
            if await self._in_flight(http, history, IN_FLIGHT_WAIT_S) > 0:
                await asyncio.sleep(BURST_SETTLE_S)
        in_flight = await self._in_flight(http, history, IN_FLIGHT_WAIT_S if kind in WAITS_FOR_IN_FLIGHT else 0.0)
        if kind == "delete":
            done, _ = await self._call(http, business, "DELETE", base, None, action, in_flight)
            if done.acked_at is not None and (done.ok or (done.status == "404" and done.tries > 1)):
                history.deleted = (done.sent_at, done.acked_at)
                if not done.ok:
                    done.detail = "gone already: an earlier try (its answer lost) had deleted it"
        elif kind in ("disable", "enable"):
            done, _ = await self._call(http, business, "PATCH", base, {"enabled": kind == "enable"}, action, in_flight)
            if done.ok and done.acked_at is not None:
                history.enabled.append((kind == "enable", done.sent_at, done.acked_at))
            elif done.acked_at is None or done.status.startswith("5"):
                history.enabled.append((None, done.sent_at, math.inf))  # may or may not have applied
        elif kind == "repoint":
            self._repoints += 1
            path = f"{history.endpoint.path}r{self._repoints}"
            await self._tell_keys(http, history, [path])  # before the change: requests may come at once
            done, _ = await self._call(http, business, "PATCH", base, {"url": self.receiver + path}, action,
                                       in_flight)
            if done.ok and done.acked_at is not None:
                history.paths.append((path, done.sent_at, done.acked_at))
            elif done.acked_at is None or done.status.startswith("5"):
                history.paths.append((path, done.sent_at, math.inf))
            done.detail = f"to {path}" if done.ok else done.detail
        elif kind == "rotate":
            done, raw = await self._call(http, business, "POST", base + "/secret/rotate",
                                         {"grace_seconds": ROTATE_GRACE_S}, action, in_flight)
            if done.ok and done.acked_at is not None:
                now = done.acked_at
                old = [(s, now + ROTATE_GRACE_S + KEY_SLACK_S if until is None else until)
                       for s, until in history.keys if until is None or until > now]
                history.keys = [(str(orjson.loads(raw)["secret"]), None), *old]
                done.detail = f"{len(history.keys)} secrets valid at the receiver"
                await self._tell_keys(http, history, [p for p, _, _ in history.paths])
        elif kind in ("recover", "recover_missed"):
            since = datetime.fromtimestamp(self.load_start - 10, UTC).isoformat()
            done, raw = await self._call(http, business, "POST", base + "/recover",
                                         {"since": since, "include_missed": kind == "recover_missed",
                                          "rate": RECOVER_RATE}, action, in_flight)
            if done.ok:
                got = orjson.loads(raw)
                done.detail = f"count {got.get('count')}, job {got.get('job_id')}"
        elif kind == "retry":
            # The first failed delivery of this endpoint, else of the next retry targets in turn.
            candidates = [e for e in self.world.endpoints if e.kind in RETRY_TARGETS]
            start = next((i for i, e in enumerate(candidates) if e.id == ep.id), 0)
            failed: list[str] = []
            for target in candidates[start:] + candidates[:start]:
                business = self.world.business(target.business)
                base = f"/v1/businesses/{business.id}/webhook-endpoints/{target.id}"
                listed, raw = await self._call(http, business, "GET", base + "/deliveries?status=failed&limit=5",
                                               None, action, in_flight)
                failed = [str(d["id"]) for d in orjson.loads(raw).get("data", [])] if listed.ok else []
                if failed or not listed.ok:
                    history = self.histories.get(target.id, history)
                    break
            if not failed:
                if listed.ok:
                    listed.status, listed.detail = "nothing to retry", ""
                self.log.append(listed)
                return
            done, _ = await self._call(http, business, "POST",
                                       f"/v1/businesses/{business.id}/deliveries/{failed[0]}/retry", None, action,
                                       in_flight)
            if done.ok and done.acked_at is not None:
                history.retried[failed[0]] = done.acked_at
            done.detail = f"{history.endpoint.path}: {failed[0]}" if done.ok else done.detail
        else:
            raise ValueError(f"unknown churn action {kind}")
        self.log.append(done)

    async def _call(self, http: aiohttp.ClientSession, business: Business, method: str, path: str,
                    body: dict[str, Any] | None, action: Action, in_flight: int) -> tuple[Done, bytes]:
        """One API call, tried again on 503 or no answer for up to ACTION_RETRY_S, on alternating processes.
        The answer that settled it (its body), or ``no answer``."""
        assert business.api_key is not None
        headers = {"Authorization": f"Bearer {business.api_key}"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        data = None if body is None else orjson.dumps(body)
        sent = time.time()
        tries = 0
        while True:
            tries += 1
            api = self.apis[self._api % len(self.apis)]
            try:
                async with http.request(method, api + path, headers=headers, data=data) as r:
                    raw = await r.read()
                    at = time.time()
                    status = r.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                self._api += 1
                if time.time() - sent > ACTION_RETRY_S:
                    return Done(action.kind, action.endpoint.id, action.endpoint.path, action.at, sent, None,
                                "no answer", tries, in_flight, repr(exc)[:200]), b""
                await asyncio.sleep(0.5)
                continue
            self.answers.append((at, api, status, raw[:200].decode(errors="replace")))
            if status == 503 and time.time() - sent <= ACTION_RETRY_S:
                self._api += 1
                await asyncio.sleep(0.5)
                continue
            detail = "" if 200 <= status < 300 else raw[:300].decode(errors="replace")
            return Done(action.kind, action.endpoint.id, action.endpoint.path, action.at, sent, at, str(status),
                        tries, in_flight, detail), raw

    async def _tell_keys(self, http: aiohttp.ClientSession, history: History, paths: list[str]) -> None:
        body = {"paths": paths, "keys": [[s, until] for s, until in history.keys]}
        async with http.post(self.receiver + "/_chaos/keys", data=orjson.dumps(body)) as r:
            if r.status != 200:
                raise ValueError(f"the receiver refused the keys: {await r.text()}")

    async def _in_flight(self, http: aiohttp.ClientSession, history: History, wait_s: float) -> int:
        """Requests the receiver is answering at the endpoint now; waits up to ``wait_s`` for one (-1: unknown)."""
        until = time.monotonic() + wait_s
        while True:
            n = -1
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(self.receiver + "/_chaos/inflight") as r:
                    now = await r.json()
                    n = sum(int(now.get(p, 0)) for p, _, _ in history.paths)
            if n > 0 or time.monotonic() >= until:
                return n
            await asyncio.sleep(0.05)

    # ---- figures -----------------------------------------------------------------------------------

    def figures(self) -> dict[str, Any]:
        by_kind: dict[str, dict[str, int]] = {}
        for d in self.log:
            outcome = ("done" if d.ok else "refused (409)" if d.status == "409" else
                       "nothing to retry" if d.status == "nothing to retry" else
                       "done by an earlier try" if d.status == "404" and d.kind == "delete" else f"failed: {d.status}")
            row = by_kind.setdefault(d.kind, {})
            row[outcome] = row.get(outcome, 0) + 1
        in_flight = [d.in_flight for d in self.log if d.in_flight > 0 and d.kind != "retry"]
        return {
            "planned": len(self.actions), "logged": len(self.log), "by_action": by_kind,
            "actions_with_requests_in_flight": len(in_flight),
            "requests_in_flight_at_deletes": [d.in_flight for d in self.log if d.kind == "delete"],
            "endpoints_deleted": sum(1 for h in self.histories.values() if h.deleted is not None),
            "log": [{"t_s": round(d.sent_at - self.load_start, 1), "action": d.kind, "endpoint": d.label,
                     "status": d.status, "took_s": round(d.acked_at - d.sent_at, 2) if d.acked_at else None,
                     "tries": d.tries, "in_flight": d.in_flight, "detail": d.detail[:120]} for d in self.log],
        }
