"""The lanes stage: one lane per endpoint, as this worker sees it, and the decisions about it.

A lane holds the endpoint's queued deliveries and its state: requests in flight, the slow-start cap, the
failure streak and the circuit breaker. Everything here decides without I/O (times are passed in), so the
rules are unit-tested directly (``tests/test_lanes.py``); the engine carries out what they decide.

- Slow start: two requests at once, one more after each success up to the per-endpoint cap; after a
  timeout, one at a time until it answers in time again. A hanging endpoint holds few of the worker's slots.
- Breaker: ``failures`` consecutive failures or ``timeouts`` consecutive timeouts open it for ``open_s``
  (doubling on each re-opening up to ``max_open_s``, ±20 %); its deliveries wait without spending attempts,
  but never past their deadline. When it closes, one probe at a time until one succeeds.
- A 429 or 503 with ``Retry-After`` holds the whole endpoint back that long.
"""

from __future__ import annotations

import collections
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from dispatcher.outcome import Outcome

J = TypeVar("J")

MAX_OPEN_S = 600.0
SLOW_START_CAP = 2


@dataclass(frozen=True, slots=True)
class Policy:
    failures: int  # consecutive failures that open the breaker
    timeouts: int  # ...or consecutive timeouts
    open_s: float  # the first opening; doubles each time it opens again
    max_in_flight: int  # requests at once to one endpoint
    queue_limit: int  # deliveries queued per lane while the endpoint answers in time
    timeout_s: float  # one attempt's timeout
    max_open_s: float = MAX_OPEN_S


@dataclass(frozen=True, slots=True)
class Pause:
    """Tell every worker: nothing to this endpoint is due before ``until``; with ``move_pending``, its
    pending deliveries nobody holds move there too (never past their deadlines)."""

    until: datetime
    move_pending: bool
    tripped: bool  # the breaker opened (worth a warning in the log)


@dataclass(slots=True)
class Lane(Generic[J]):
    endpoint_id: uuid.UUID
    business_id: uuid.UUID
    url: str
    enabled: bool
    secrets: list[tuple[bytes, datetime | None]] = field(default_factory=list)
    queue: collections.deque[J] = field(default_factory=collections.deque)
    in_flight: int = 0
    cap: int = SLOW_START_CAP
    failures: int = 0  # consecutive, as this worker saw them
    timeouts: int = 0  # consecutive
    failing_since: datetime | None = None  # the first failure of the streak
    open_until: float = 0.0  # monotonic; closed at and after it
    open_s: float = 0.0  # the last opening's nominal length (0: never opened in this streak)
    opened_at: float = -1.0  # monotonic: when it last opened
    slow: bool = False  # its last failure was a timeout, and it has not answered in time since
    stale: bool = False  # the endpoint changed: send nothing more until it is read again
    refreshing: bool = False
    gone: bool = False  # deleted

    def sendable(self) -> bool:
        return self.enabled and not self.stale and not self.gone


def new_lane(endpoint_id: uuid.UUID, business_id: uuid.UUID, url: str, enabled: bool, policy: Policy) -> Lane[J]:
    return Lane(endpoint_id, business_id, url, enabled, cap=min(SLOW_START_CAP, policy.max_in_flight))


def tripped(lane: Lane[J], policy: Policy) -> bool:
    """Enough consecutive failures, or timeouts, to open (or keep half-open) the breaker."""
    return lane.failures >= policy.failures or lane.timeouts >= policy.timeouts


def is_open(lane: Lane[J], now: float) -> bool:
    return lane.open_until > now


def room(lane: Lane[J], policy: Policy) -> int:
    """How many deliveries the lane may hold queued: plenty while the endpoint answers in time, only what it
    can have in flight once it times out or trips (so a hanging endpoint never fills the worker)."""
    return max(1, lane.cap) if lane.slow or tripped(lane, policy) else policy.queue_limit


def refill_at(lane: Lane[J], policy: Policy, now: datetime) -> datetime:
    """When a delivery handed back from a full lane is due again: a slow or tripped lane frees up no
    sooner than a request times out, a healthy one at once."""
    return now + timedelta(seconds=policy.timeout_s) if lane.slow or tripped(lane, policy) else now


def admit(lane: Lane[J], policy: Policy, now: float, free_slots: int) -> int:
    """How many queued deliveries to start now: none while the breaker is open or the lane cannot send;
    one at a time while half-open; otherwise up to the slow-start cap and the worker's free slots."""
    if not lane.sendable() or is_open(lane, now):
        return 0
    cap = 1 if tripped(lane, policy) else lane.cap
    return max(0, min(len(lane.queue), cap - lane.in_flight, free_slots))


def on_success(lane: Lane[J], policy: Policy) -> bool:
    """The endpoint answered 2xx: the streak ends and slow start climbs. True if it had been paused (then
    the pause is lifted for every worker)."""
    was_paused = bool(lane.open_s or lane.slow or lane.open_until)
    lane.failures = lane.timeouts = 0
    lane.failing_since = None
    lane.open_s, lane.open_until, lane.slow = 0.0, 0.0, False
    lane.cap = min(policy.max_in_flight, lane.cap + 1)
    return was_paused


def on_failure(lane: Lane[J], policy: Policy, outcome: Outcome, now: float, wall: datetime, jitter: float,
               started: float | None = None) -> Pause | None:
    """Count a failed attempt; the pause it calls for, if any (the breaker opening, a ``Retry-After``, or a
    timeout's short pause). ``now`` is monotonic, ``wall`` the same instant as a datetime, ``started`` when
    the attempt began (monotonic; default ``now``), ``jitter`` in 0.8-1.2 (random in the engine, chosen in
    tests). An attempt begun before the breaker last opened does not open it again: only a probe sent
    after an opening can prolong the pause (requests already in flight at a trip, timing out after a
    short opening, would otherwise double it once each)."""
    lane.failures += 1
    if lane.failing_since is None:
        lane.failing_since = wall
    timeout = outcome.error_kind == "timeout"
    lane.timeouts = lane.timeouts + 1 if timeout else 0
    jitter = min(1.2, max(0.8, jitter)) if jitter == jitter else 1.0
    pause: Pause | None = None
    if timeout:
        # One request at a time until it answers again, and for every worker nothing new to it is due
        # before that request could have timed out again (until then it would only sit due).
        lane.cap, lane.slow = 1, True
        pause = Pause(wall + timedelta(seconds=policy.timeout_s), move_pending=False, tripped=False)
    probe = started is None or started >= lane.opened_at
    if tripped(lane, policy) and not is_open(lane, now) and probe:
        # Trip (again): once per opening, however many requests in flight fail with it.
        lane.open_s = min(policy.max_open_s, lane.open_s * 2 if lane.open_s else policy.open_s)
        open_for = lane.open_s * jitter  # endpoints that failed together do not all come back at once
        lane.open_until, lane.opened_at = now + open_for, now
        pause = Pause(wall + timedelta(seconds=open_for), move_pending=True, tripped=True)
    retry_after = outcome.retry_after_s
    if retry_after is not None and retry_after > 0 and retry_after == retry_after:
        # The receiver asked for a break: the whole endpoint waits, not only this delivery.
        if now + retry_after > lane.open_until:
            lane.open_until = now + retry_after
            if pause is None or pause.until < wall + timedelta(seconds=retry_after):
                pause = Pause(wall + timedelta(seconds=retry_after), move_pending=True, tripped=False)
    return pause


def reset(lane: Lane[J], policy: Policy) -> None:
    """The endpoint was re-pointed or enabled: start afresh (slow start, no streak, breaker closed)."""
    lane.failures = lane.timeouts = 0
    lane.failing_since = None
    lane.open_until = lane.open_s = 0.0
    lane.opened_at = -1.0
    lane.slow = False
    lane.cap = min(SLOW_START_CAP, policy.max_in_flight)


def idle(lane: Lane[J], now: float) -> bool:
    """Nothing queued, in flight or remembered: the lane can be forgotten."""
    return not lane.queue and not lane.in_flight and not lane.failures and not is_open(lane, now) \
        and not lane.refreshing
