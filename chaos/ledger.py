"""The ledger: what was acknowledged against what the receivers got, what Postgres says and what the workers
said about themselves.

Expected: every event acknowledged with a 202, at every endpoint of its business whose event types match.

- At ``ok`` and fault-scripted endpoints (``HEALTHY_KINDS``): a complete 2xx answer must have been received
  for it (``lost`` otherwise), and its delivery row must say ``succeeded`` (``unsettled`` otherwise).
- At the ``gone`` and ``g410`` endpoints (disabled by a 410, by design): received with a 2xx, or its delivery
  ended ``failed`` by a 410 or by the endpoint being disabled, or it has no delivery because the event was
  fanned out after the endpoint was disabled. Anything else is lost. Requests that started more than
  ``GONE_GRACE_S`` after the disable are counted (``after_disable``) and fail the drill.
- At the ``dead`` endpoint (always 500): its delivery exists and has ended ``failed`` with every attempt of
  the schedule spent or at its deadline (its breaker deferred it there), or is still pending and not overdue
  (its breaker defers it, no attempt spent).
- At the other hostile endpoints (``random``, ``badretry``, ``huge``, ``drip``, ``midreset``, ``silent``): its
  delivery exists (it may end ``failed``: the receiver is hostile). A complete 2xx answer that Postgres does
  not record as ``succeeded`` is ``unsettled``.
- At the ``churn`` endpoints (see churn.py), by the endpoint's state while the event was being accepted
  (between its first request and its 202): an endpoint deleted by the end is left out (its deliveries went
  with it). Surely enabled: its delivery exists, and it was received with a 2xx (and says ``succeeded``) or
  it ended ``failed`` after the endpoint was disabled; anything else is lost. Surely disabled: there is no
  delivery, unless a recover (``include_missed``) made it; one made otherwise was **queued while disabled**.
  A change in flight meanwhile: any outcome. Also counted, each a failure: requests that started more than
  ``GONE_GRACE_S`` after a disable was acknowledged (while it lasted), after the deletion was acknowledged,
  or at a path more than ``GONE_GRACE_S`` after a re-point away from it was acknowledged.

A **duplicate** is a second complete 2xx answer for the same endpoint and event (at any of its paths). It is
*explained* when the earlier one was in flight at a worker's SIGKILL (started before the kill and finished at
most ``KILL_WINDOW_S`` before it: sent, answered, not yet recorded) and Postgres recorded at most one 2xx
attempt for the delivery (the dead worker's never reached it). Every other duplicate fails the drill.

**Stuck**: a pending delivery whose due time is more than ``OVERDUE_LIMIT_S`` past (R4: a minute). The
``dead`` and hostile endpoints are measured apart: while a circuit breaker is open (``KAIHOOKS_CIRCUIT_OPEN_S``,
doubling up to 10 minutes by design) its due retries wait unclaimed, so their overdue is reported beside the
longest breaker opening and fails the drill only when the breaker does not explain it.

**Settled by the deadline** (``check_deadlines``): every delivery row left at the end (those of deleted
endpoints are gone) must have settled, ``succeeded`` or ``failed``, by its deadline plus a margin. The deadline
is ``deliveries.deadline_at`` when the engine sets it; otherwise ``created_at`` plus the retry schedule's
total, or, for a delivery re-sent by a retry or a recover, the replay schedule's total from when that replay
began (a retry: when the drill's retry was acknowledged; a recover: the job's ``created_at`` plus its pacing,
``total / rate``). It settled at its ``updated_at``; one still pending is late once ``now`` is past. The margin
(``Timing.margin_s``) is the delivery timeout (an attempt begun just before the deadline may run that long),
plus one lease (a delivery held by a worker killed just before its deadline waits that long to be claimed
again), plus 5 s for polls, batched writes and jitter; and, when a Postgres outage comes within that margin
of the deadline, the outage's length and 5 s to reconnect (nothing can be settled while Postgres is down).

**Workers** (``check_workers``, from their ``/metrics``): held deliveries stay under ``HELD_LIMIT`` and fall
to at most ``HELD_AFTER_DRAIN`` after the drain; the oldest held delivery's age stays under
``Timing.oldest_held_limit_s`` (when the worker exports it); the result writer does not keep failing
(flush failures rising for ``WRITER_FAILING_S`` outside Postgres outages); and every worker keeps working
during the hostile phase: its claimed counter (else its attempts counter) never stands still for more than
``STALL_LIMIT_S`` outside Postgres outages. **Receipts** (``check_receipt_gaps``): the ``ok`` endpoints'
complete 2xx answers never stop for more than ``STALL_LIMIT_S`` during the phase, outside Postgres outages.
"""

from __future__ import annotations

import itertools
import statistics
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
from churn import History
from load import Ack
from scrape import ATTEMPTS, CLAIMED, DROPPED, FLUSH_FAILURES, HELD, OLDEST, LifeMetrics
from world import CHURN_KIND, GONE_KINDS, HEALTHY_KINDS, HOSTILE_KINDS, World

from shared import ids

KILL_WINDOW_S = 2.0
GONE_GRACE_S = 5.0
OVERDUE_LIMIT_S = 60.0
RECONNECT_S = 5.0  # after Postgres is back, until the processes' pools have reconnected
HELD_LIMIT = 1000
HELD_AFTER_DRAIN = 10
STALL_LIMIT_S = 10.0
WRITER_FAILING_S = 15.0
WRITER_STUCK_BATCH = 100  # from the log: a writer whose waiting results grew to this many between two complaints
WARM_S = 5.0  # a worker's counters are watched from this long after its start


@dataclass
class Fault:
    kind: str  # worker_kill, api_kill, redis_restart, postgres_stop, postgres_crash, gone_switch, hostile_on
    target: str
    at: float  # wall clock
    until: float | None = None  # back up (restarted and ready)


@dataclass
class Timing:
    """The drill's clock and the bounds that follow from its settings (wall clock, seconds)."""

    retry_total_s: float  # KAIHOOKS_RETRY_SCHEDULE's total
    replay_total_s: float  # KAIHOOKS_REPLAY_SCHEDULE's total
    margin_s: float  # see the module docstring
    oldest_held_limit_s: float
    outages: list[tuple[float, float]]  # Postgres down: from the stop to ready again
    phase: tuple[float, float]  # the hostile phase
    load: tuple[float, float]
    drain_end: float

    def outside_outages(self, t: float) -> bool:
        return not any(a <= t <= b + RECONNECT_S for a, b in self.outages)

    def margin(self, deadline: float) -> float:
        extra = sum(b - a + RECONNECT_S for a, b in self.outages
                    if a <= deadline + self.margin_s and b >= deadline - self.margin_s)
        return self.margin_s + extra


@dataclass
class Receipt:
    path: str
    msg_id: str
    start: float
    end: float
    status: int | None
    outcome: str  # done | oversized | cancelled | reset
    signed: bool
    fault: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome == "done" and self.status is not None and 200 <= self.status < 300


@dataclass
class DbDelivery:
    id: uuid.UUID
    endpoint_id: uuid.UUID
    status: str
    attempt_count: int
    last_response_status: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    ok_attempts: int
    created_at: datetime
    updated_at: datetime
    deadline_at: datetime | None
    recover_job_id: uuid.UUID | None


@dataclass
class RecoverJob:
    created_at: datetime
    total: int
    rate: float


@dataclass
class DbState:
    now: datetime
    deliveries: dict[tuple[str, str], DbDelivery]  # (evt_…, ep_…) -> delivery
    fanned_out_at: dict[str, datetime | None]  # evt_… -> when
    disabled_at: dict[str, datetime]  # ep_… -> when its endpoint.disabled notice was made
    stuck: int  # pending more than OVERDUE_LIMIT_S past due, the dead and hostile endpoints' excepted
    unfanned: int
    max_overdue_s: float  # the dead and hostile endpoints' excepted
    dead_max_overdue_s: float
    hostile_max_overdue_s: float
    endpoints: set[str]  # ep_… that exist
    jobs: dict[uuid.UUID, RecoverJob]
    has_deadline_column: bool


OVERDUE_SQL = """SELECT CASE WHEN endpoint_id = ANY($1::uuid[]) THEN 'dead'
                              WHEN endpoint_id = ANY($3::uuid[]) THEN 'hostile' ELSE 'live' END AS cat,
                         count(*) FILTER (WHERE next_attempt_at < now() - make_interval(secs => $2)) AS stuck,
                         coalesce(extract(epoch FROM now() - min(next_attempt_at)), 0)::float8 AS overdue
                  FROM deliveries WHERE status = 'pending' AND next_attempt_at < now() GROUP BY 1"""


def overdue_split(rows: list[asyncpg.Record]) -> tuple[int, float, float, float]:
    """(stuck, max overdue) of every endpoint but the dead and hostile ones; the dead ones' max overdue; the
    hostile ones'."""
    by = {r["cat"]: r for r in rows}
    live = by.get("live")

    def overdue(cat: str) -> float:
        row = by.get(cat)
        return float(row["overdue"]) if row is not None else 0.0

    return (int(live["stuck"]) if live is not None else 0, overdue("live"), overdue("dead"), overdue("hostile"))


async def deadline_column(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_name = 'deliveries' "
        "AND column_name = 'deadline_at')"))


async def read_db(database_url: str, dead_endpoints: list[uuid.UUID], hostile_endpoints: list[uuid.UUID]) -> DbState:
    conn = await asyncpg.connect(database_url)
    try:
        now = await conn.fetchval("SELECT now()")
        has_deadline = await deadline_column(conn)
        rows = await conn.fetch(
            f"""SELECT d.id, d.event_id, d.endpoint_id, d.status, d.attempt_count, d.last_response_status,
                       d.last_error, d.next_attempt_at, coalesce(a.ok, 0) AS ok_attempts, d.created_at, d.updated_at,
                       {'d.deadline_at' if has_deadline else 'NULL::timestamptz'} AS deadline_at, d.recover_job_id
                FROM deliveries d LEFT JOIN (
                    SELECT delivery_id, count(*) AS ok FROM attempts WHERE response_status BETWEEN 200 AND 299
                    GROUP BY delivery_id) a ON a.delivery_id = d.id""")
        events = await conn.fetch("SELECT id, fanned_out_at FROM events")
        disabled = await conn.fetch("SELECT endpoint_id, min(created_at) AS at FROM notices "
                                    "WHERE kind = 'endpoint.disabled' GROUP BY endpoint_id")
        endpoints = await conn.fetch("SELECT id FROM endpoints")
        jobs = await conn.fetch("SELECT id, created_at, total, rate_per_s FROM recover_jobs")
        stuck, overdue, dead_overdue, hostile_overdue = overdue_split(
            await conn.fetch(OVERDUE_SQL, dead_endpoints, OVERDUE_LIMIT_S, hostile_endpoints))
    finally:
        await conn.close()
    deliveries = {
        (ids.encode("evt", r["event_id"]), ids.encode("ep", r["endpoint_id"])): DbDelivery(
            r["id"], r["endpoint_id"], r["status"], r["attempt_count"], r["last_response_status"], r["last_error"],
            r["next_attempt_at"], int(r["ok_attempts"]), r["created_at"], r["updated_at"], r["deadline_at"],
            r["recover_job_id"])
        for r in rows
    }
    return DbState(now, deliveries, {ids.encode("evt", r["id"]): r["fanned_out_at"] for r in events},
                   {ids.encode("ep", r["endpoint_id"]): r["at"] for r in disabled}, stuck,
                   sum(1 for r in events if r["fanned_out_at"] is None), overdue, dead_overdue, hostile_overdue,
                   {ids.encode("ep", r["id"]) for r in endpoints},
                   {r["id"]: RecoverJob(r["created_at"], int(r["total"]), float(r["rate_per_s"])) for r in jobs},
                   has_deadline)


def deadline_of(created_at: datetime, deadline_at: datetime | None, recover_job: RecoverJob | None,
                retried_at: float | None, timing: Timing) -> tuple[float, str]:
    """A delivery's deadline (wall clock) and where it came from: ``deadline_at``, ``replay`` or ``schedule``."""
    if deadline_at is not None:
        return deadline_at.timestamp(), "deadline_at"
    replays = []
    if recover_job is not None:
        replays.append(recover_job.created_at.timestamp() + recover_job.total / max(recover_job.rate, 1e-6)
                       + timing.replay_total_s)
    if retried_at is not None:
        replays.append(retried_at + timing.replay_total_s)
    if replays:
        return max(replays), "replay"
    return created_at.timestamp() + timing.retry_total_s, "schedule"


@dataclass
class Ledger:
    figures: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {"passed", "bound", figures…}

    def fail(self, message: str) -> None:
        self.failures.append(message)

    def named(self, name: str, failures: list[str], **figures: Any) -> None:
        """Record a named check with its figures; each failure message is prefixed with the check's name."""
        self.checks[name] = {"passed": not failures, **figures}
        for message in failures:
            self.fail(f"[{name}] {message}")


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.999999) - 1))], 2)


def path_owners(world: World, histories: dict[str, History]) -> dict[str, str]:
    """Receiver path -> ep_… (an endpoint re-pointed by the churn has several)."""
    owners = {e.path: e.id for e in world.endpoints}
    for h in histories.values():
        for path, _, _ in h.paths:
            owners[path] = h.endpoint.id
    return owners


def check(world: World, acks: dict[str, Ack], raw_records: list[list[Any]], db: DbState, faults: list[Fault],
          max_attempts: int, histories: dict[str, History] | None = None) -> Ledger:
    histories = histories or {}
    ledger = Ledger()
    receipts = [Receipt(*r) for r in raw_records]
    owners = path_owners(world, histories)
    ep_by_id = {e.id: e for e in world.endpoints}
    by_pair: dict[tuple[str, str], list[Receipt]] = defaultdict(list)  # (ep_…, evt_…)
    unknown_paths = 0
    for r in receipts:
        owner = owners.get(r.path)
        if owner is None:
            unknown_paths += 1
            continue
        by_pair[(owner, r.msg_id)].append(r)
    for group in by_pair.values():
        group.sort(key=lambda r: r.start)
    by_event = {a.event_id: a for a in acks.values()}
    kills = [f.at for f in faults if f.kind == "worker_kill"]

    lost: list[str] = []
    unsettled: list[str] = []
    queued_while_disabled: list[str] = []
    lags: list[float] = []
    slowest: list[tuple[float, Ack, Any, int]] = []
    expected = {"healthy": 0, "gone": 0, "dead": 0, "hostile": 0, "churn": 0}
    gone_outcomes: Counter[str] = Counter()
    g410_outcomes: Counter[str] = Counter()
    dead_outcomes: Counter[str] = Counter()
    churn_outcomes: Counter[str] = Counter()
    hostile_outcomes: Counter[str] = Counter()
    for ack in acks.values():
        for ep in world.business(ack.business).endpoints:
            if not ep.matches(ack.type):
                continue
            pair = by_pair.get((ep.id, ack.event_id), [])
            got = [r for r in pair if r.ok]
            delivery = db.deliveries.get((ack.event_id, ep.id))
            if ep.kind in HEALTHY_KINDS:
                expected["healthy"] += 1
                if not got:
                    lost.append(f"{ack.event_id} -> {ep.path} ({ep.kind}): never received; delivery "
                                f"{_describe(delivery)}")
                    continue
                lags.append(got[0].end - ack.acked_at)
                slowest.append((got[0].end - ack.acked_at, ack, ep, len(pair)))
                if delivery is None or delivery.status != "succeeded":
                    unsettled.append(f"{ack.event_id} -> {ep.path}: received, but the delivery is "
                                     f"{_describe(delivery)}")
            elif ep.kind in GONE_KINDS:
                expected["gone"] += 1
                disabled = db.disabled_at.get(ep.id)
                fanned = db.fanned_out_at.get(ack.event_id)
                outcomes = gone_outcomes if ep.kind == "gone" else g410_outcomes
                if got:
                    outcomes["received"] += 1
                elif delivery is not None and delivery.status == "failed" and (
                        delivery.last_response_status == 410 or delivery.last_error == "endpoint disabled"
                        or (disabled is not None and delivery.updated_at >= disabled)):
                    outcomes["failed: endpoint gone"] += 1
                elif delivery is None and disabled is not None and fanned is not None and fanned >= disabled:
                    outcomes["not sent: fanned out after the disable"] += 1
                elif delivery is not None and delivery.status == "failed" and ep.kind == "g410":
                    outcomes["failed (hostile receiver)"] += 1
                elif delivery is not None and delivery.status == "pending" and ep.kind == "g410":
                    outcomes["pending (see the deadline check)"] += 1
                else:
                    outcomes["lost"] += 1
                    lost.append(f"{ack.event_id} -> {ep.path} ({ep.kind}): neither received nor ended by the "
                                f"disable; delivery {_describe(delivery)}, fanned out {fanned}, disabled {disabled}")
            elif ep.kind == "dead":
                expected["dead"] += 1
                if delivery is None:
                    dead_outcomes["no delivery"] += 1
                    lost.append(f"{ack.event_id} -> {ep.path} (dead): no delivery row")
                elif delivery.status == "failed" and delivery.attempt_count >= max_attempts:
                    dead_outcomes["failed: schedule spent"] += 1
                elif delivery.status == "failed" and delivery.deadline_at is not None and \
                        delivery.updated_at >= delivery.deadline_at:
                    dead_outcomes["failed: at its deadline"] += 1
                elif delivery.status == "pending" and delivery.next_attempt_at is not None and \
                        (db.now - delivery.next_attempt_at).total_seconds() <= OVERDUE_LIMIT_S:
                    dead_outcomes["pending: waiting for its next attempt"] += 1
                elif delivery.status == "pending":
                    dead_outcomes["pending: overdue"] += 1
                else:
                    dead_outcomes["other"] += 1
                    lost.append(f"{ack.event_id} -> {ep.path} (dead): {_describe(delivery)}")
                if pair:
                    dead_outcomes["reached at least once"] += 1
            elif ep.kind in HOSTILE_KINDS:
                expected["hostile"] += 1
                if delivery is None:
                    hostile_outcomes["lost: no delivery"] += 1
                    lost.append(f"{ack.event_id} -> {ep.path} ({ep.kind}): no delivery row")
                    continue
                hostile_outcomes[f"{delivery.status}{' (received)' if got else ''}"] += 1
                if got and delivery.status != "succeeded":
                    unsettled.append(f"{ack.event_id} -> {ep.path} ({ep.kind}): a complete 2xx was received, "
                                     f"but the delivery is {_describe(delivery)}")
            elif ep.kind == CHURN_KIND:
                history = histories.get(ep.id)
                if ep.id not in db.endpoints:
                    churn_outcomes["endpoint deleted"] += 1
                    continue
                expected["churn"] += 1
                state = history.enabled_during(ack.sent_at or ack.acked_at, ack.acked_at) if history else True
                if state is None:
                    churn_outcomes[f"accepted during a change: {delivery.status if delivery else 'no delivery'}"] \
                        += 1
                    if got and delivery is not None and delivery.status == "failed":
                        unsettled.append(f"{ack.event_id} -> {ep.path} (churn): received, but the delivery is "
                                         f"{_describe(delivery)}")
                elif state is False:
                    if delivery is None:
                        churn_outcomes["accepted while disabled: no delivery"] += 1
                    elif delivery.recover_job_id is not None:
                        churn_outcomes[f"accepted while disabled: sent by a recover, {delivery.status}"] += 1
                    else:
                        churn_outcomes["accepted while disabled: queued anyway"] += 1
                        queued_while_disabled.append(f"{ack.event_id} -> {ep.path}: accepted while the endpoint "
                                                     f"was disabled, yet a delivery was made: {_describe(delivery)}")
                elif delivery is None:
                    churn_outcomes["lost: no delivery"] += 1
                    lost.append(f"{ack.event_id} -> {ep.path} (churn): accepted while enabled, no delivery row")
                elif got:
                    churn_outcomes["received"] += 1
                    if delivery.status != "succeeded":
                        unsettled.append(f"{ack.event_id} -> {ep.path} (churn): received, but the delivery is "
                                         f"{_describe(delivery)}")
                elif delivery.status == "failed" and history is not None and any(
                        new is not True and sent >= ack.sent_at - 1 for new, sent, _ in history.enabled):
                    churn_outcomes["failed: the endpoint was disabled"] += 1
                elif delivery.status == "pending":
                    churn_outcomes["pending (see the deadline check)"] += 1
                else:
                    churn_outcomes["lost"] += 1
                    lost.append(f"{ack.event_id} -> {ep.path} (churn): accepted while enabled, never received, "
                                f"never disabled after; delivery {_describe(delivery)}")

    # What arrived that should not have: unknown events, or events at endpoints that do not match them.
    misdelivered: list[str] = []
    unknown = 0
    for endpoint_id, msg_id in by_pair:
        sent = by_event.get(msg_id)
        at = ep_by_id.get(endpoint_id)
        if sent is None:
            unknown += 1
            continue
        if at is None or at.business != sent.business or not at.matches(sent.type):
            misdelivered.append(f"{msg_id} ({sent.type}, {sent.business}) arrived at {endpoint_id}")
    wrong_rows = 0
    for event_id, endpoint_id in db.deliveries:
        made = by_event.get(event_id)
        row_ep = ep_by_id.get(endpoint_id)
        if made is not None and (row_ep is None or row_ep.business != made.business or not row_ep.matches(made.type)):
            wrong_rows += 1

    # Duplicates: a second complete 2xx for the same endpoint and event.
    duplicates: list[dict[str, Any]] = []
    for (endpoint_id, msg_id), group in by_pair.items():
        ok = [r for r in group if r.ok]
        if len(ok) < 2:
            continue
        delivery = db.deliveries.get((msg_id, endpoint_id))
        in_flight_at_kill = all(any(r.start <= k + 0.05 and r.end >= k - KILL_WINDOW_S for k in kills)
                                for r in ok[:-1])
        recorded = delivery.ok_attempts if delivery else 0
        explained = in_flight_at_kill and recorded <= len(ok) - 1 and recorded >= 1
        duplicates.append({"endpoint": ok[0].path, "event": msg_id, "answers_2xx": len(ok), "recorded_2xx": recorded,
                           "first_start": round(ok[0].start, 3), "first_end": round(ok[0].end, 3),
                           "explained": explained,
                           "kind": ep_by_id[endpoint_id].kind if endpoint_id in ep_by_id else "?"})
    unexplained = [d for d in duplicates if not d["explained"]]

    # Requests to a gone endpoint after its disable.
    after_disable = 0
    for ep in world.endpoints:
        if ep.kind in GONE_KINDS and ep.id in db.disabled_at:
            cutoff = db.disabled_at[ep.id].timestamp() + GONE_GRACE_S
            after_disable += sum(1 for r in receipts if r.path == ep.path and r.start > cutoff)

    bad_signatures = [r for r in receipts if not r.signed]
    statuses = Counter(r.status for r in receipts if r.outcome == "done")
    kinds = {p: ep_by_id[e].kind for p, e in owners.items() if e in ep_by_id}
    old_kinds = {p for p, k in kinds.items() if k in (*HEALTHY_KINDS, "gone", "dead")}
    old_statuses = Counter(r.status for r in receipts if r.outcome == "done" and r.path in old_kinds)
    receiver_faults = {
        "500": old_statuses[500],
        "429 + Retry-After": old_statuses[429],
        "302 redirect": old_statuses[302],
        "410 gone": old_statuses[410],
        "hang (sender timed out)": sum(1 for r in receipts if kinds.get(r.path) == "hang" and r.outcome == "cancelled"),
        "connection reset": sum(1 for r in receipts if kinds.get(r.path) == "reset" and r.outcome == "reset"),
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
        "received_statuses": {str(k): v for k, v in sorted(statuses.items(), key=lambda kv: kv[0] or 0)},
        "receiver_faults": receiver_faults,
        "lost": len(lost),
        "unsettled": len(unsettled),
        "duplicates": len(duplicates),
        "duplicates_explained": len(duplicates) - len(unexplained),
        "duplicates_unexplained": len(unexplained),
        "duplicate_samples": duplicates[:10],
        "duplicates_unexplained_by_kind": dict(Counter(d["kind"] for d in unexplained)),
        "gone_endpoint": dict(gone_outcomes),
        "g410_endpoints": dict(g410_outcomes),
        "gone_requests_after_disable": after_disable,
        "dead_endpoint": dict(dead_outcomes),
        "hostile_endpoints": dict(hostile_outcomes),
        "churn_endpoints": dict(churn_outcomes),
        "queued_while_disabled": len(queued_while_disabled),
        "misdelivered": len(misdelivered),
        "deliveries_for_non_matching_endpoints": wrong_rows,
        "received_unknown_events": unknown,
        "received_at_unknown_paths": unknown_paths,
        "bad_signatures": len(bad_signatures),
        "stuck_at_end": db.stuck,
        "max_overdue_at_end_s": round(db.max_overdue_s, 1),
        "dead_endpoint_max_overdue_at_end_s": round(db.dead_max_overdue_s, 1),
        "hostile_endpoints_max_overdue_at_end_s": round(db.hostile_max_overdue_s, 1),
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
    if queued_while_disabled:
        ledger.fail(f"{len(queued_while_disabled)} deliveries made for events accepted while their endpoint was "
                    "disabled, e.g. " + "; ".join(queued_while_disabled[:3]))
    if unexplained:
        ledger.fail(f"{len(unexplained)} duplicates not explained by a worker kill, e.g. {unexplained[:3]}")
    if wrong_rows:
        ledger.fail(f"{wrong_rows} deliveries were made for endpoints that do not match their event")
    if unknown:
        ledger.fail(f"{unknown} (endpoint, event) pairs received for events never acknowledged")
    if unknown_paths:
        ledger.fail(f"{unknown_paths} requests at receiver paths no endpoint ever had")
    if bad_signatures:
        ledger.fail(f"{len(bad_signatures)} requests with a bad or missing signature, e.g. "
                    + "; ".join(f"{r.path} {r.msg_id} at {r.start:.1f}" for r in bad_signatures[:3]))
    if db.stuck:
        ledger.fail(f"{db.stuck} deliveries pending more than {OVERDUE_LIMIT_S:g} s past their due time")
    if db.unfanned:
        ledger.fail(f"{db.unfanned} events never fanned out")
    if after_disable:
        ledger.fail(f"{after_disable} requests to a gone endpoint more than {GONE_GRACE_S:g} s after its disable")
    _check_churn_requests(ledger, receipts, histories)
    return ledger


def _check_churn_requests(ledger: Ledger, receipts: list[Receipt], histories: dict[str, History]) -> None:
    """Requests that the churn's changes should have stopped: at a disabled or deleted endpoint, or at a path an
    endpoint was moved away from, more than GONE_GRACE_S after the change was acknowledged."""
    by_path: dict[str, list[Receipt]] = defaultdict(list)
    for r in receipts:
        by_path[r.path].append(r)
    while_disabled: list[str] = []
    after_delete: list[str] = []
    old_url: list[str] = []
    for h in histories.values():
        mine = [r for p, _, _ in h.paths for r in by_path.get(p, [])]
        for since, until in h.disabled_spans():
            while_disabled += [f"{r.path} {r.msg_id} {r.start - since:.1f} s after the disable"
                               for r in mine if since + GONE_GRACE_S < r.start < until]
        if h.deleted is not None:
            deleted = h.deleted[1]
            after_delete += [f"{r.path} {r.msg_id} {r.start - deleted:.1f} s after the delete"
                             for r in mine if r.start > deleted + GONE_GRACE_S]
        for (old, _, _), (new, _, moved) in zip(h.paths, h.paths[1:], strict=False):
            old_url += [f"{old} {r.msg_id} {r.start - moved:.1f} s after the move to {new}"
                        for r in by_path.get(old, []) if r.start > moved + GONE_GRACE_S]
    ledger.named("churn_obeyed", [
        *([f"{len(while_disabled)} requests to disabled endpoints, e.g. " + "; ".join(while_disabled[:3])]
          if while_disabled else []),
        *([f"{len(after_delete)} requests to deleted endpoints, e.g. " + "; ".join(after_delete[:3])]
          if after_delete else []),
        *([f"{len(old_url)} requests to an endpoint's old URL after it was changed, e.g. " + "; ".join(old_url[:3])]
          if old_url else []),
    ], grace_s=GONE_GRACE_S, sent_while_disabled=len(while_disabled), sent_after_delete=len(after_delete),
        sent_to_old_url=len(old_url))


def check_deadlines(ledger: Ledger, world: World, db: DbState, histories: dict[str, History],
                    timing: Timing) -> dict[str, dict[str, Any]]:
    """Every delivery left settles by its deadline plus a margin; the figures per endpoint kind."""
    kind_of = {e.uuid: e.kind for e in world.endpoints}
    retried = {uuid_: at for h in histories.values() for dlv, at in h.retried.items()
               if (uuid_ := ids.decode("dlv", dlv)) is not None}
    now = db.now.timestamp()
    per_kind: dict[str, dict[str, Any]] = {}
    late: list[str] = []
    pending_late = 0
    sources: Counter[str] = Counter()
    checked = 0
    for (event_id, endpoint_id), d in db.deliveries.items():
        kind = kind_of.get(d.endpoint_id, "?")
        row = per_kind.setdefault(kind, {"deliveries": 0, "succeeded": 0, "failed": 0, "pending": 0, "late": 0,
                                         "max_lateness_s": None})
        row["deliveries"] += 1
        row[d.status] = row.get(d.status, 0) + 1
        deadline, source = deadline_of(d.created_at, d.deadline_at, db.jobs.get(d.recover_job_id)
                                       if d.recover_job_id else None, retried.get(d.id), timing)
        sources[source] += 1
        checked += 1
        settled = d.updated_at.timestamp() if d.status != "pending" else None
        lateness = (settled if settled is not None else now) - deadline
        if settled is not None or lateness > 0:
            row["max_lateness_s"] = round(max(row["max_lateness_s"] or -1e9, lateness), 1)
        margin = timing.margin(deadline)
        if lateness > margin:
            row["late"] += 1
            if settled is None:
                pending_late += 1
            late.append(f"{kind} {endpoint_id} {event_id}: {d.status} "
                        f"{'still, ' if settled is None else ''}{lateness:.0f} s after its deadline "
                        f"({source}; margin {margin:.0f} s; {d.attempt_count} attempts, last "
                        f"{d.last_response_status or d.last_error})")
    worst = max((r["max_lateness_s"] for r in per_kind.values() if r["max_lateness_s"] is not None), default=None)
    ledger.named("settled_by_deadline", [
        f"{len(late)} deliveries settled more than the margin after their deadline ({pending_late} still pending), "
        "e.g. " + "; ".join(_spread(late, 5))] if late else [],
        margin_s=timing.margin_s, checked=checked, late=len(late), still_pending_past_deadline=pending_late,
        max_lateness_s=worst, deadline_from=dict(sources), deadline_column=db.has_deadline_column)
    return per_kind


def _spread(items: list[str], n: int) -> list[str]:
    """Up to n samples, one per endpoint kind first."""
    seen: set[str] = set()
    picked: list[str] = []
    for item in items:
        kind = item.split(" ", 1)[0]
        if kind not in seen:
            seen.add(kind)
            picked.append(item)
    return (picked + [i for i in items if i not in picked])[:n]


def _longest_standstill(points: Iterable[tuple[float, bool]], start: float, end: float, timing: Timing) -> float:
    """The longest time in [start, end] between two moments of progress (``True`` points), Postgres outages
    (and RECONNECT_S after each) not counted."""
    last = start
    longest = 0.0
    for t, progressed in sorted(points):
        if t < start or t > end:
            continue
        if progressed or not timing.outside_outages(t):
            longest = max(longest, _outside(last, t, timing))
            last = t
    return max(longest, _outside(last, end, timing))


def _outside(a: float, b: float, timing: Timing) -> float:
    """Seconds of [a, b] outside the Postgres outages (each extended by RECONNECT_S)."""
    length = max(0.0, b - a)
    for x, y in timing.outages:
        overlap = min(b, y + RECONNECT_S) - max(a, x)
        length -= max(0.0, overlap)
    return max(0.0, length)


def check_receipt_gaps(ledger: Ledger, world: World, raw_records: list[list[Any]], timing: Timing) -> None:
    ok_paths = {e.path for e in world.endpoints if e.kind == "ok"}
    start, end = timing.phase[0], min(timing.phase[1], timing.load[1])
    ends = sorted(r[3] for r in raw_records if r[0] in ok_paths and r[5] == "done" and r[4] is not None
                  and 200 <= r[4] < 300 and r[3] is not None)
    longest = _longest_standstill(((t, True) for t in ends), start, end, timing)
    empty = 0
    t = start
    while t + 5 <= end:
        if timing.outside_outages(t) and timing.outside_outages(t + 5) and not any(t <= e < t + 5 for e in ends):
            empty += 1
        t += 5
    ledger.named("healthy_receipts_never_stop", [
        f"the ok endpoints received nothing for {longest:.1f} s during the hostile phase (bound "
        f"{STALL_LIMIT_S:g} s, Postgres outages not counted)"] if longest > STALL_LIMIT_S else [],
        bound_s=STALL_LIMIT_S, longest_gap_s=round(longest, 1), empty_5s_windows=empty,
        receipts_in_phase=sum(1 for e in ends if start <= e <= end))


def check_workers(ledger: Ledger, lives: list[LifeMetrics], timing: Timing,
                  writer_complaints: dict[str, list[tuple[float, int, str]]] | None = None) -> dict[str, Any]:
    """Held deliveries, the oldest one's age, the writer and progress, per worker process life. Without the
    flush-failure counter, the writer's log is read instead (``writer_complaints``: per life, when it said it
    could not record its results, how many it held, the error): it kept failing when, between two complaints
    outside Postgres outages at least WRITER_FAILING_S apart, the results waiting grew (to WRITER_STUCK_BATCH
    or more): nothing was written in between."""
    figures: dict[str, Any] = {}
    held_fail: list[str] = []
    drained_fail: list[str] = []
    oldest_fail: list[str] = []
    writer_fail: list[str] = []
    stall_fail: list[str] = []
    for life in lives:
        name = life.name
        held = life.series(HELD)
        row: dict[str, Any] = {"samples": len(life.samples), "scrape_errors": life.errors}
        figures[name] = row
        if not life.samples:
            row["note"] = "no metrics scraped (the process lived too short)"
            continue
        if held:
            row["max_held"] = max(v for _, v in held)
            if row["max_held"] > HELD_LIMIT:
                at = next(t for t, v in held if v == row["max_held"])
                held_fail.append(f"{name} held {row['max_held']:.0f} deliveries at "
                                 f"{at - timing.load[0]:.0f} s into the load (bound {HELD_LIMIT})")
            after = [v for t, v in held if t >= timing.drain_end]
            if after and (life.killed is None or life.killed > timing.drain_end):
                row["held_after_drain"] = min(after)
                if min(after) > HELD_AFTER_DRAIN:
                    drained_fail.append(f"{name} still held {min(after):.0f} deliveries after the drain "
                                        f"(bound {HELD_AFTER_DRAIN})")
        oldest = life.series(OLDEST)
        if oldest:
            row["max_oldest_held_s"] = round(max(v for _, v in oldest), 1)
            if row["max_oldest_held_s"] > timing.oldest_held_limit_s:
                at = next(t for t, v in oldest if v == max(v for _, v in oldest))
                oldest_fail.append(f"{name} held a delivery for {row['max_oldest_held_s']:.0f} s at "
                                   f"{at - timing.load[0]:.0f} s into the load (bound "
                                   f"{timing.oldest_held_limit_s:g} s)")
        for metric, key in ((FLUSH_FAILURES, "writer_flush_failures"), (DROPPED, "results_dropped"),
                            (CLAIMED, "claimed")):
            series = life.series(metric)
            if series:
                row[key] = series[-1][1]
        failures = life.series(FLUSH_FAILURES)
        rising = [(t, b > a) for (_, a), (t, b) in itertools.pairwise(failures)]
        run_start: float | None = None
        last_rise = 0.0
        longest_failing = 0.0
        for t, rose in rising:
            if rose and timing.outside_outages(t):
                if run_start is None or t - last_rise > 5:
                    run_start = t
                last_rise = t
                longest_failing = max(longest_failing, t - run_start)
        if not failures and writer_complaints:
            said = [(t, n, e) for t, n, e in writer_complaints.get(name, []) if timing.outside_outages(t)]
            for (t1, n1, _), (t2, n2, e2) in itertools.pairwise(said):
                if n2 > n1 and n2 >= WRITER_STUCK_BATCH and t2 - t1 >= WRITER_FAILING_S:
                    longest_failing = max(longest_failing, t2 - t1)
                    row["writer_error"] = e2
                    row["writer_holding_results"] = n2
        row["writer_failing_longest_s"] = round(longest_failing, 1)
        if longest_failing >= WRITER_FAILING_S:
            writer_fail.append(f"{name}'s result writer kept failing for {longest_failing:.0f} s outside Postgres "
                               f"outages ({row.get('writer_flush_failures', 0):.0f} flush failures"
                               + (f"; its log: {row['writer_holding_results']} results waiting, "
                                  f"{row['writer_error']}" if "writer_error" in row else "") + ")")
        counter = CLAIMED if life.has(CLAIMED) else ATTEMPTS
        progress = life.series(counter)
        row["progress_counter"] = counter
        start = max(timing.phase[0], life.started + WARM_S)
        end = min(timing.phase[1], timing.load[1], life.killed or timing.load[1])
        if progress and end - start > STALL_LIMIT_S:
            points = [(t, b > a) for (_, a), (t, b) in itertools.pairwise(progress)]
            stall = _longest_standstill(points, start, end, timing)
            row["longest_standstill_s"] = round(stall, 1)
            if stall > STALL_LIMIT_S:
                stall_fail.append(f"{name}'s {counter} stood still for {stall:.0f} s during the hostile phase "
                                  f"(bound {STALL_LIMIT_S:g} s, Postgres outages not counted)")
    absent = [m for m in (HELD, OLDEST, FLUSH_FAILURES, DROPPED, CLAIMED) if not any(life.has(m) for life in lives)]
    ledger.named("held_bounded", held_fail + drained_fail, bound=HELD_LIMIT, after_drain_bound=HELD_AFTER_DRAIN,
                 max_held=max((r.get("max_held", 0) for r in figures.values()), default=None))
    ledger.named("oldest_held_bounded", oldest_fail, bound_s=timing.oldest_held_limit_s,
                 measured=OLDEST not in absent,
                 max_oldest_held_s=max((r.get("max_oldest_held_s", 0) for r in figures.values()), default=None))
    ledger.named("writer_recovers", writer_fail, bound_s=WRITER_FAILING_S,
                 flush_failures=sum(r.get("writer_flush_failures", 0) for r in figures.values()),
                 results_dropped=sum(r.get("results_dropped", 0) for r in figures.values()))
    ledger.named("workers_keep_claiming", stall_fail, bound_s=STALL_LIMIT_S,
                 counters=sorted({r.get("progress_counter", "") for r in figures.values()} - {""}))
    return {"per_life": figures, "metrics_absent": absent}


def _describe(d: DbDelivery | None) -> str:
    if d is None:
        return "missing"
    return (f"{d.status} after {d.attempt_count} attempt(s), last {d.last_response_status or d.last_error}, "
            f"next {d.next_attempt_at}")
