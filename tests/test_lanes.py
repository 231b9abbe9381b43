"""The lanes stage, without Postgres or a network: slow start, the breaker and admission are decisions on
plain state, checked here against arbitrary sequences of answers (hypothesis)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher import lanes
from dispatcher.lanes import Lane, Policy
from dispatcher.outcome import Outcome

POLICY = Policy(failures=5, timeouts=2, open_s=30.0, max_in_flight=10, queue_limit=100, timeout_s=10.0)
WALL = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)

OK = Outcome(200, "", 3, None, None)
FAIL = Outcome(500, "", 3, "http_status", "HTTP 500")
TIMEOUT = Outcome(None, None, 10_000, "timeout", "timed out")

answers = st.one_of(
    st.sampled_from([OK, FAIL, TIMEOUT]),
    st.floats(min_value=0, max_value=86400, allow_nan=False).map(
        lambda s: Outcome(429, "", 3, "http_status", "HTTP 429", retry_after_s=s)),
)


def _lane() -> Lane[int]:
    return lanes.new_lane(uuid.uuid4(), uuid.uuid4(), "https://a.example.com/", True, POLICY)


@given(st.lists(st.tuples(answers, st.floats(min_value=0, max_value=5), st.floats(min_value=0.5, max_value=1.5)),
                max_size=60),
       st.integers(min_value=0, max_value=50), st.integers(min_value=-5, max_value=300))
@settings(max_examples=500)
def test_lane_decisions_stay_within_their_bounds(steps: list[tuple[Outcome, float, float]], queued: int,
                                                 free: int) -> None:
    lane = _lane()
    lane.queue.extend(range(queued))
    now, asked = 1000.0, 0.0  # asked: the longest Retry-After so far
    for answer, gap, jitter in steps:
        now += gap
        wall = WALL + timedelta(seconds=now)
        if answer.ok:
            lanes.on_success(lane, POLICY)
            assert lane.failures == 0 and not lanes.is_open(lane, now) and not lane.slow
        else:
            before_open = lanes.is_open(lane, now)
            asked = max(asked, answer.retry_after_s or 0.0)
            pause = lanes.on_failure(lane, POLICY, answer, now, wall, jitter)
            if pause is not None:
                assert wall <= pause.until <= wall + timedelta(seconds=max(POLICY.max_open_s * 1.2, 86400))
                if pause.tripped:
                    assert lanes.tripped(lane, POLICY) and not before_open
            if lanes.is_open(lane, now):
                assert lane.open_until - now <= max(POLICY.max_open_s * 1.2, asked) + 1e-6
        assert 1 <= lane.cap <= POLICY.max_in_flight
        start = lanes.admit(lane, POLICY, now, free)
        assert 0 <= start <= max(0, free) and start <= len(lane.queue)
        if lanes.is_open(lane, now):
            assert start == 0
        elif lanes.tripped(lane, POLICY):
            assert start <= 1  # half-open: one probe at a time
        assert lanes.room(lane, POLICY) >= 1


def test_the_breaker_opens_after_the_failures_doubles_and_closes_on_success() -> None:
    lane, now = _lane(), 0.0
    for _ in range(POLICY.failures - 1):
        assert lanes.on_failure(lane, POLICY, FAIL, now, WALL, 1.0) is None
    pause = lanes.on_failure(lane, POLICY, FAIL, now, WALL, 1.0)
    assert pause is not None and pause.tripped and pause.move_pending
    assert pause.until == WALL + timedelta(seconds=30) and lanes.is_open(lane, now + 29)
    assert lanes.admit(lane, POLICY, now + 29, 100) == 0
    lane.queue.extend([1, 2, 3])
    assert lanes.admit(lane, POLICY, now + 31, 100) == 1  # half-open: one probe
    again = lanes.on_failure(lane, POLICY, FAIL, now + 31, WALL, 1.0)
    assert again is not None and again.tripped and lane.open_s == 60
    assert lanes.on_success(lane, POLICY) is True  # it had been paused: resume it for every worker
    assert not lanes.tripped(lane, POLICY) and lanes.admit(lane, POLICY, now + 200, 100) == 3


def test_two_timeouts_open_it_and_a_timeout_makes_the_lane_slow() -> None:
    lane = _lane()
    first = lanes.on_failure(lane, POLICY, TIMEOUT, 0.0, WALL, 1.0)
    assert first is not None and not first.tripped and not first.move_pending and lane.slow and lane.cap == 1
    assert lanes.room(lane, POLICY) == 1 and lanes.refill_at(lane, POLICY, WALL) == WALL + timedelta(seconds=10)
    second = lanes.on_failure(lane, POLICY, TIMEOUT, 1.0, WALL, 1.0)
    assert second is not None and second.tripped


def test_retry_after_holds_the_whole_endpoint_back() -> None:
    lane = _lane()
    lane.queue.extend([1, 2])
    pause = lanes.on_failure(lane, POLICY, Outcome(503, "", 3, "http_status", "HTTP 503", retry_after_s=120), 0.0,
                             WALL, 1.0)
    assert pause is not None and pause.move_pending and pause.until == WALL + timedelta(seconds=120)
    assert lanes.admit(lane, POLICY, 119.0, 100) == 0 and lanes.admit(lane, POLICY, 121.0, 100) == 2


def test_a_stale_disabled_or_deleted_lane_sends_nothing() -> None:
    for change in ("stale", "gone"):
        lane = _lane()
        lane.queue.append(1)
        setattr(lane, change, True)
        assert lanes.admit(lane, POLICY, 0.0, 100) == 0
    lane = _lane()
    lane.queue.append(1)
    lane.enabled = False
    assert lanes.admit(lane, POLICY, 0.0, 100) == 0


def test_requests_already_in_flight_at_a_trip_do_not_open_it_again() -> None:
    """A 2 s opening and a 10 s timeout: the requests sent before the trip time out after the opening ended.
    They count as failures but do not double the pause; only a probe sent after the opening can."""
    lane = _lane()
    for i in range(POLICY.timeouts):
        lanes.on_failure(lane, POLICY, TIMEOUT, 10.0 + i, WALL, 1.0, started=0.0)
    assert lanes.is_open(lane, 12.0) and lane.open_s == 30
    late = lanes.on_failure(lane, POLICY, TIMEOUT, 45.0, WALL, 1.0, started=1.0)  # begun before the trip
    assert (late is None or not late.tripped) and lane.open_s == 30 and not lanes.is_open(lane, 45.0)
    probe = lanes.on_failure(lane, POLICY, TIMEOUT, 46.0, WALL, 1.0, started=42.0)  # begun after it
    assert probe is not None and probe.tripped and lane.open_s == 60
