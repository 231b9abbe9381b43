"""The outcome stage, without Postgres or a network: whatever a receiver sends, ``from_response``,
``from_exception``, ``parse_retry_after`` and ``decide`` return a value (they never raise), and the next
attempt is never before the attempt that failed nor after the delivery's deadline."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta

import aiohttp
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.outcome import Outcome, decide, from_exception, from_response, parse_retry_after

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
CAP = 86400.0

header_values = st.one_of(
    st.none(), st.text(max_size=200), st.text(alphabet="0123456789 \t-+.eE", max_size=30),
    st.sampled_from(["²", "١٢", "-1", "NaN", "nan", "inf", "1e9", "99999999999999999999", "  12  ", "0", "",
                     "Wed, 21 Oct 2015 07:28:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT", "Wed, 99 Foo 2026",
                     "Mon, 01 Jan 0001 00:00:00 GMT", "x" * 6000, "Sun, 06 Nov 1994 08:49:37 +9999"]),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)).map(
        lambda d: d.strftime("%a, %d %b %Y %H:%M:%S GMT")),
)


@given(header_values)
@settings(max_examples=500)
def test_retry_after_is_never_an_error_and_always_bounded(value: str | None) -> None:
    seconds = parse_retry_after(value, NOW, CAP)
    assert seconds is None or 0.0 <= seconds <= CAP


def test_retry_after_takes_ascii_digits_and_http_dates_only() -> None:
    assert parse_retry_after("120", NOW, CAP) == 120.0
    assert parse_retry_after(" 7\t", NOW, CAP) == 7.0
    assert parse_retry_after("999999", NOW, CAP) == CAP
    assert parse_retry_after((NOW + timedelta(seconds=90)).strftime("%a, %d %b %Y %H:%M:%S GMT"), NOW, CAP) == 90.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", NOW, CAP) == 0.0  # in the past: now
    for bad in ("²", "١٢", "-1", "1.5", "NaN", "1e3", "+5", "Wed, 99 Foo 2026", "soon", "x" * 6000):
        assert parse_retry_after(bad, NOW, CAP) is None, bad


@given(st.integers(min_value=100, max_value=999), header_values, header_values, st.binary(max_size=5000),
       st.integers(min_value=0, max_value=10**7))
@settings(max_examples=500)
def test_any_answer_becomes_an_outcome(status: int, retry_after: str | None, location: str | None, body: bytes,
                                       duration_ms: int) -> None:
    out = from_response(status, retry_after, location, body, duration_ms, NOW, CAP)
    assert out.status == status and out.ok == (200 <= status < 300)
    assert (out.error_kind is None) == out.ok
    assert out.body_excerpt is not None and "\x00" not in out.body_excerpt and len(out.body_excerpt) <= 2048
    assert out.error is None or (len(out.error) < 400 and "\x00" not in out.error)
    assert out.retry_after_s is None or (status in (429, 503) and 0 <= out.retry_after_s <= CAP)
    if 300 <= status < 400:
        assert out.error_kind == "redirect"


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no")


exceptions = st.sampled_from([
    TimeoutError(), TimeoutError(), ValueError("could not convert string to float: '²'"), KeyError("x"),
    RuntimeError("bug"), ConnectionResetError(), aiohttp.ServerDisconnectedError(), aiohttp.ClientPayloadError("x"),
    aiohttp.ClientOSError(), aiohttp.InvalidURL("x"), aiohttp.ClientError(), ssl.SSLError(1, "bad"),
    Unprintable(), UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"), OverflowError(), MemoryError(),
])


@given(exceptions, st.integers(min_value=0, max_value=10**7), st.floats(min_value=0.001, max_value=300))
def test_any_exception_becomes_an_outcome(exc: BaseException, duration_ms: int, timeout_s: float) -> None:
    out = from_exception(exc, duration_ms, timeout_s)
    assert out.status is None and not out.ok and out.error_kind and out.error


def test_an_unforeseen_exception_is_an_internal_error() -> None:
    out = from_exception(ValueError("could not convert string to float: '²'"), 3, 10)
    assert out.error_kind == "internal_error" and "retried" in (out.error or "")
    assert from_exception(Unprintable(), 3, 10).error_kind == "internal_error"


outcomes = st.builds(
    Outcome, status=st.one_of(st.none(), st.integers(min_value=100, max_value=999)), body_excerpt=st.none(),
    duration_ms=st.integers(min_value=0, max_value=10**6), error_kind=st.sampled_from([None, "timeout", "x"]),
    error=st.none(),
    retry_after_s=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
)
schedules = st.lists(st.floats(min_value=0, max_value=10**6, allow_nan=False), max_size=12).map(tuple)


@given(outcomes, st.integers(min_value=-3, max_value=40), st.integers(min_value=-3, max_value=40), schedules,
       st.integers(min_value=-10**7, max_value=10**7), st.floats(allow_nan=True, allow_infinity=True))
@settings(max_examples=1000)
def test_the_next_attempt_is_bounded_by_the_deadline(outcome: Outcome, attempt: int, start: int,
                                                     schedule: tuple[float, ...], deadline_in_s: int,
                                                     jitter: float) -> None:
    deadline = NOW + timedelta(seconds=deadline_in_s)
    verdict = decide(outcome, attempt=attempt, schedule_start=start, schedule=schedule, started_at=NOW,
                     deadline_at=deadline, jitter=jitter)
    if outcome.ok:
        assert verdict.status == "succeeded" and verdict.next_attempt_at is None
    elif verdict.status == "pending":
        assert verdict.next_attempt_at is not None and NOW <= verdict.next_attempt_at <= deadline
        assert outcome.status != 410 and 0 <= attempt - start - 1 < len(schedule)
    else:
        assert verdict.status == "failed" and verdict.next_attempt_at is None


def test_decide_follows_the_schedule_then_fails() -> None:
    failed = Outcome(500, "", 5, "http_status", "HTTP 500")
    deadline = NOW + timedelta(seconds=4)
    first = decide(failed, attempt=1, schedule_start=0, schedule=(1, 1, 2), started_at=NOW, deadline_at=deadline,
                   jitter=1.0)
    assert first.status == "pending" and first.next_attempt_at == NOW + timedelta(seconds=1)
    spent = decide(failed, attempt=4, schedule_start=0, schedule=(1, 1, 2), started_at=NOW, deadline_at=deadline,
                   jitter=1.0)
    assert spent.status == "failed"
    late = decide(failed, attempt=2, schedule_start=0, schedule=(1, 1, 2), started_at=deadline, deadline_at=deadline,
                  jitter=1.0)
    assert late.status == "failed"  # attempts left, but its deadline has come
    asked = decide(Outcome(429, "", 5, "http_status", "HTTP 429", retry_after_s=3600), attempt=1, schedule_start=0,
                   schedule=(1, 1, 2), started_at=NOW, deadline_at=deadline, jitter=1.0)
    assert asked.next_attempt_at == deadline  # Retry-After is honoured, but never past the deadline
    gone = decide(Outcome(410, "", 5, "http_status", "HTTP 410"), attempt=1, schedule_start=0, schedule=(1,),
                  started_at=NOW, deadline_at=deadline, jitter=1.0)
    assert gone.status == "failed"
