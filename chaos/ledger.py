"""The ledger: what was acknowledged against what the receivers got and what Postgres says.

Expected: every event acknowledged with a 202, at every endpoint of its business whose event types match.

- At ``ok`` and fault-scripted endpoints (``HEALTHY_KINDS``): a complete 2xx answer must have been received
  for it (``lost`` otherwise), and its delivery row must say ``succeeded`` (``unsettled`` otherwise).
- At the ``gone`` endpoint (disabled by its 410, by design): received with a 2xx, or its delivery ended
  ``failed`` by a 410 or by the endpoint being disabled, or it has no delivery because the event was fanned
  out after the endpoint was disabled. Anything else is lost. Requests that started more than
  ``GONE_GRACE_S`` after the disable are counted (``after_disable``) and fail the drill.
- At the ``dead`` endpoint (always 500): its delivery exists and has ended ``failed`` with every attempt of
  the schedule spent or at its deadline (its breaker deferred it there), or is still pending and not overdue
  (its breaker defers it, no attempt spent).

A **duplicate** is a second complete 2xx answer for the same endpoint and event. It is *explained* when the
earlier one was in flight at a worker's SIGKILL (started before the kill and finished at most
``KILL_WINDOW_S`` before it: sent, answered, not yet recorded) and Postgres recorded at most one 2xx attempt
for the delivery (the dead worker's never reached it). Every other duplicate fails the drill.

**Stuck**: a pending delivery whose due time is more than ``OVERDUE_LIMIT_S`` past (R4: a minute). The
``dead`` endpoint is measured apart: while its circuit breaker is open (``KAIHOOKS_CIRCUIT_OPEN_S``, doubling
up to 10 minutes by design) its due retries wait unclaimed, so its overdue is reported beside the longest
breaker opening and fails the drill only when the breaker does not explain it.
"""

from __future__ import annotations

import statistics
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
from load import Ack
from world import HEALTHY_KINDS, World

from shared import ids

KILL_WINDOW_S = 2.0
GONE_GRACE_S = 5.0
OVERDUE_LIMIT_S = 60.0


@dataclass
class Fault:
    kind: str  # worker_kill, api_kill, redis_restart, postgres_stop, postgres_crash, gone_switch
    target: str
    at: float  # wall clock
    until: float | None = None  # back up (restarted and ready)


@dataclass
class Receipt:
    path: str
    msg_id: str
    start: float
    end: float
    status: int | None
    outcome: str  # done | cancelled | reset
    signed: bool

    @property
    def ok(self) -> bool:
        return self.outcome == "done" and self.status is not None and 200 <= self.status < 300


@dataclass
class DbDelivery:
    id: uuid.UUID
    status: str
    attempt_count: int
    last_response_status: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    ok_attempts: int
    failed_at_deadline: bool = False  # settled at or after its deadline_at (the schedule is a deadline)


@dataclass
class DbState:
    now: datetime
    deliveries: dict[tuple[str, str], DbDelivery]  # (evt_…, ep_…) -> delivery
    fanned_out_at: dict[str, datetime | None]  # evt_… -> when
    disabled_at: dict[str, datetime]  # ep_… -> when its endpoint.disabled notice was made
    stuck: int  # pending more than OVERDUE_LIMIT_S past due, the dead endpoint's excepted
    unfanned: int
    max_overdue_s: float  # the dead endpoint's excepted
    dead_max_overdue_s: float


OVERDUE_SQL = """SELECT coalesce(endpoint_id = ANY($1::uuid[]), false) AS dead,
                         count(*) FILTER (WHERE next_attempt_at < now() - make_interval(secs => $2)) AS stuck,
                         coalesce(extract(epoch FROM now() - min(next_attempt_at)), 0)::float8 AS overdue
                  FROM deliveries WHERE status = 'pending' AND next_attempt_at < now() GROUP BY 1"""


def overdue_split(rows: list[asyncpg.Record]) -> tuple[int, float, float]:
    """(stuck, max overdue) of every endpoint but the dead ones, and the dead ones' max overdue."""
    live = [r for r in rows if not r["dead"]]
    dead = [r for r in rows if r["dead"]]
    return (sum(int(r["stuck"]) for r in live), max((float(r["overdue"]) for r in live), default=0.0),
            max((float(r["overdue"]) for r in dead), default=0.0))


async def read_db(database_url: str, dead_endpoints: list[uuid.UUID]) -> DbState:
    conn = await asyncpg.connect(database_url)
    try:
        now = await conn.fetchval("SELECT now()")
        rows = await conn.fetch(
            """SELECT d.id, d.event_id, d.endpoint_id, d.status, d.attempt_count, d.last_response_status,
                      d.last_error, d.next_attempt_at, coalesce(a.ok, 0) AS ok_attempts,
                      coalesce(d.status = 'failed' AND d.updated_at >= d.deadline_at, false) AS at_deadline
               FROM deliveries d LEFT JOIN (
                   SELECT delivery_id, count(*) AS ok FROM attempts WHERE response_status BETWEEN 200 AND 299
                   GROUP BY delivery_id) a ON a.delivery_id = d.id""")
        events = await conn.fetch("SELECT id, fanned_out_at FROM events")
        disabled = await conn.fetch("SELECT endpoint_id, min(created_at) AS at FROM notices "
                                    "WHERE kind = 'endpoint.disabled' GROUP BY endpoint_id")
        stuck, overdue, dead_overdue = overdue_split(await conn.fetch(OVERDUE_SQL, dead_endpoints, OVERDUE_LIMIT_S))
    finally:
        await conn.close()
    deliveries = {
        (ids.encode("evt", r["event_id"]), ids.encode("ep", r["endpoint_id"])): DbDelivery(
            r["id"], r["status"], r["attempt_count"], r["last_response_status"], r["last_error"],
            r["next_attempt_at"], int(r["ok_attempts"]), r["at_deadline"])
        for r in rows
    }
    return DbState(now, deliveries, {ids.encode("evt", r["id"]): r["fanned_out_at"] for r in events},
                   {ids.encode("ep", r["endpoint_id"]): r["at"] for r in disabled}, stuck,
                   sum(1 for r in events if r["fanned_out_at"] is None), overdue, dead_overdue)


@dataclass
class Ledger:
    figures: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def fail(self, message: str) -> None:
        self.failures.append(message)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.999999) - 1))], 2)


def check(world: World, acks: dict[str, Ack], raw_records: list[list[Any]], db: DbState, faults: list[Fault],
          max_attempts: int) -> Ledger:
    ledger = Ledger()
    receipts = [Receipt(*r) for r in raw_records]
    by_pair: dict[tuple[str, str], list[Receipt]] = defaultdict(list)
    for r in receipts:
        by_pair[(r.path, r.msg_id)].append(r)
    for group in by_pair.values():
        group.sort(key=lambda r: r.start)
    endpoints = {e.path: e for e in world.endpoints}
    by_event = {a.event_id: a for a in acks.values()}
    kills = [f.at for f in faults if f.kind == "worker_kill"]

    lost: list[str] = []
    unsettled: list[str] = []
    lags: list[float] = []
    slowest: list[tuple[float, Ack, Any, int]] = []
    expected = {"healthy": 0, "gone": 0, "dead": 0}
    gone_outcomes: Counter[str] = Counter()
    dead_outcomes: Counter[str] = Counter()
    for ack in acks.values():
        for ep in world.business(ack.business).endpoints:
            if not ep.matches(ack.type):
                continue
            got = [r for r in by_pair.get((ep.path, ack.event_id), []) if r.ok]
            delivery = db.deliveries.get((ack.event_id, ep.id))
            if ep.kind in HEALTHY_KINDS:
                expected["healthy"] += 1
                if not got:
                    lost.append(f"{ack.event_id} -> {ep.path} ({ep.kind}): never received; delivery "
                                f"{_describe(delivery)}")
                    continue
                lags.append(got[0].end - ack.acked_at)
                slowest.append((got[0].end - ack.acked_at, ack, ep, len(by_pair[(ep.path, ack.event_id)])))
                if delivery is None or delivery.status != "succeeded":
                    unsettled.append(f"{ack.event_id} -> {ep.path}: received, but the delivery is "
                                     f"{_describe(delivery)}")
            elif ep.kind == "gone":
                expected["gone"] += 1
                disabled = db.disabled_at.get(ep.id)
                fanned = db.fanned_out_at.get(ack.event_id)
                if got:
                    gone_outcomes["received"] += 1
                elif delivery is not None and delivery.status == "failed" and (
                        delivery.last_response_status == 410 or delivery.last_error == "endpoint disabled"):
                    gone_outcomes["failed: endpoint gone"] += 1
                elif delivery is None and disabled is not None and fanned is not None and fanned >= disabled:
                    gone_outcomes["not sent: fanned out after the disable"] += 1
                else:
                    gone_outcomes["lost"] += 1
                    lost.append(f"{ack.event_id} -> {ep.path} (gone): neither received nor ended by the disable; "
                                f"delivery {_describe(delivery)}, fanned out {fanned}, disabled {disabled}")
            elif ep.kind == "dead":
                expected["dead"] += 1
                if delivery is None:
                    dead_outcomes["no delivery"] += 1
                    lost.append(f"{ack.event_id} -> {ep.path} (dead): no delivery row")
                elif delivery.status == "failed" and delivery.attempt_count >= max_attempts:
                    dead_outcomes["failed: schedule spent"] += 1
                elif delivery.failed_at_deadline:
                    dead_outcomes["failed: deadline passed"] += 1
                elif delivery.status == "pending" and delivery.next_attempt_at is not None and \
                        (db.now - delivery.next_attempt_at).total_seconds() <= OVERDUE_LIMIT_S:
                    dead_outcomes["pending: waiting for its next attempt"] += 1
                elif delivery.status == "pending":
                    dead_outcomes["pending: overdue"] += 1
                else:
                    dead_outcomes["other"] += 1
                    lost.append(f"{ack.event_id} -> {ep.path} (dead): {_describe(delivery)}")
                if any(True for _ in by_pair.get((ep.path, ack.event_id), [])):
                    dead_outcomes["reached at least once"] += 1

    # What arrived that should not have: unknown events, or events at endpoints that do not match them.
    misdelivered: list[str] = []
    unknown = 0
    for path, msg_id in by_pair:
        sent = by_event.get(msg_id)
        at = endpoints.get(path)
        if sent is None:
            unknown += 1
            continue
        if at is None or at.business != sent.business or not at.matches(sent.type):
            misdelivered.append(f"{msg_id} ({sent.type}, {sent.business}) arrived at {path}")
    wrong_rows = 0
    ep_by_id = {e.id: e for e in world.endpoints}
    for event_id, endpoint_id in db.deliveries:
        made = by_event.get(event_id)
        row_ep = ep_by_id.get(endpoint_id)
        if made is not None and (row_ep is None or row_ep.business != made.business or not row_ep.matches(made.type)):
            wrong_rows += 1

    # Duplicates: a second complete 2xx for the same endpoint and event.
    duplicates: list[dict[str, Any]] = []
    for (path, msg_id), group in by_pair.items():
        ok = [r for r in group if r.ok]
        if len(ok) < 2:
            continue
        dup_ep = endpoints.get(path)
        delivery = db.deliveries.get((msg_id, dup_ep.id)) if dup_ep else None
        in_flight_at_kill = all(any(r.start <= k + 0.05 and r.end >= k - KILL_WINDOW_S for k in kills)
                                for r in ok[:-1])
        recorded = delivery.ok_attempts if delivery else 0
        explained = in_flight_at_kill and recorded <= len(ok) - 1 and recorded >= 1
        duplicates.append({"endpoint": path, "event": msg_id, "answers_2xx": len(ok), "recorded_2xx": recorded,
                           "first_start": round(ok[0].start, 3), "first_end": round(ok[0].end, 3),
                           "explained": explained})
    unexplained = [d for d in duplicates if not d["explained"]]

    # Requests to the gone endpoint after its disable.
    after_disable = 0
    for ep in world.endpoints:
        if ep.kind == "gone" and ep.id in db.disabled_at:
            cutoff = db.disabled_at[ep.id].timestamp() + GONE_GRACE_S
            after_disable += sum(1 for r in receipts if r.path == ep.path and r.start > cutoff)

    bad_signatures = sum(1 for r in receipts if not r.signed)
    statuses = Counter(r.status for r in receipts if r.outcome == "done")
    kinds = {p: e.kind for p, e in endpoints.items()}
    receiver_faults = {
        "500": statuses[500],
        "429 + Retry-After": statuses[429],
        "302 redirect": statuses[302],
        "410 gone": statuses[410],
        "hang (sender timed out)": sum(1 for r in receipts if kinds.get(r.path) == "hang" and r.outcome == "cancelled"),
        "connection reset": sum(1 for r in receipts if r.outcome == "reset"),
        "slow body (sender timed out)": sum(1 for r in receipts
                                            if kinds.get(r.path) == "trickle" and r.outcome == "cancelled"),
    }
    attempts = Counter(d.attempt_count for d in db.deliveries.values())

    ledger.figures.update({
        "events_acknowledged": len(acks),
        "expected_deliveries": expected,
        "deliveries_in_postgres": len(db.deliveries),
        "delivery_statuses": dict(Counter(d.status for d in db.deliveries.values())),
        "attempts_per_delivery": {str(k): v for k, v in sorted(attempts.items())},
        "requests_received": len(receipts),
        "received_2xx": sum(1 for r in receipts if r.ok),
        "receiver_faults": receiver_faults,
        "lost": len(lost),
        "unsettled": len(unsettled),
        "duplicates": len(duplicates),
        "duplicates_explained": len(duplicates) - len(unexplained),
        "duplicates_unexplained": len(unexplained),
        "duplicate_samples": duplicates[:10],
        "gone_endpoint": dict(gone_outcomes),
        "gone_requests_after_disable": after_disable,
        "dead_endpoint": dict(dead_outcomes),
        "misdelivered": len(misdelivered),
        "deliveries_for_non_matching_endpoints": wrong_rows,
        "received_unknown_events": unknown,
        "bad_signatures": bad_signatures,
        "stuck_at_end": db.stuck,
        "max_overdue_at_end_s": round(db.max_overdue_s, 1),
        "dead_endpoint_max_overdue_at_end_s": round(db.dead_max_overdue_s, 1),
        "events_never_fanned_out": db.unfanned,
        "lag_s": {"p50": _pct(lags, 0.5), "p99": _pct(lags, 0.99), "max": _pct(lags, 1.0),
                  "mean": round(statistics.fmean(lags), 2) if lags else None},
        "slowest": [{"lag_s": round(lag, 1), "endpoint": ep.path, "event": ack.event_id, "acked_at": ack.acked_at,
                     "requests": n} for lag, ack, ep, n in sorted(slowest, key=lambda x: -x[0])[:5]],
    })
    for label, items in (("lost", lost), ("received but not settled in Postgres", unsettled),
                         ("misdelivered", misdelivered)):
        if items:
            ledger.fail(f"{len(items)} {label}, e.g. " + "; ".join(items[:5]))
    if unexplained:
        ledger.fail(f"{len(unexplained)} duplicates not explained by a worker kill, e.g. {unexplained[:3]}")
    if wrong_rows:
        ledger.fail(f"{wrong_rows} deliveries were made for endpoints that do not match their event")
    if unknown:
        ledger.fail(f"{unknown} (endpoint, event) pairs received for events never acknowledged")
    if bad_signatures:
        ledger.fail(f"{bad_signatures} requests with a bad or missing signature")
    if db.stuck:
        ledger.fail(f"{db.stuck} deliveries pending more than {OVERDUE_LIMIT_S:g} s past their due time")
    if db.unfanned:
        ledger.fail(f"{db.unfanned} events never fanned out")
    if after_disable:
        ledger.fail(f"{after_disable} requests to the gone endpoint more than {GONE_GRACE_S:g} s after its disable")
    return ledger


def _describe(d: DbDelivery | None) -> str:
    if d is None:
        return "missing"
    return (f"{d.status} after {d.attempt_count} attempt(s), last {d.last_response_status or d.last_error}, "
            f"next {d.next_attempt_at}")
