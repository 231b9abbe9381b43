"""What workers write back: attempts, verdicts, hand-backs and deliveries settled unsent, in batches.

A handful of statements per batch, whatever its size, inside one transaction (``dispatcher.record`` runs
it). A result whose delivery no longer exists (its endpoint was deleted while it was in flight) is dropped
and reported, never an error: the deliveries are locked first and only attempts of the live ones are
inserted, each numbered from the delivery's own count under that lock (two workers never collide).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from shared.models import DeliveryStatus, Trigger
from shared.repos import notices


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """One attempt's outcome and what it means for its delivery."""

    delivery_id: uuid.UUID
    endpoint_id: uuid.UUID
    started_at: datetime
    duration_ms: int
    response_status: int | None
    response_body: str | None
    error: str | None
    error_kind: str | None
    trigger: Trigger
    url: str
    status: DeliveryStatus
    next_attempt_at: datetime | None
    succeeded: bool


@dataclass(frozen=True, slots=True)
class Deferral:
    """A delivery handed back unsent, due again at ``next_attempt_at`` (its endpoint is paused, its lane is
    full, or the worker is stopping)."""

    delivery_id: uuid.UUID
    next_attempt_at: datetime


@dataclass(frozen=True, slots=True)
class Settlement:
    """A delivery failed without a send: its endpoint was disabled, or its deadline came while the endpoint
    was paused. ``exhausted`` leaves the business a ``delivery.exhausted`` notice."""

    delivery_id: uuid.UUID
    endpoint_id: uuid.UUID
    reason: str
    exhausted: bool


@dataclass(frozen=True, slots=True)
class Written:
    vanished: list[uuid.UUID]  # deliveries that no longer exist (their results were dropped)


def _per_delivery(results: Sequence[AttemptResult]) -> dict[uuid.UUID, list[AttemptResult]]:
    grouped: dict[uuid.UUID, list[AttemptResult]] = {}
    for r in results:
        grouped.setdefault(r.delivery_id, []).append(r)
    return grouped


def _streaks(results: Sequence[AttemptResult]) -> dict[uuid.UUID, tuple[bool, int]]:
    """Per endpoint: whether a success ended its streak in this batch, and the failures since."""
    out: dict[uuid.UUID, tuple[bool, int]] = {}
    for r in results:
        reset, failures = out.get(r.endpoint_id, (False, 0))
        out[r.endpoint_id] = (True, 0) if r.succeeded else (reset, failures + 1)
    return out


async def write_results(conn: asyncpg.Connection, owner: str, results: Sequence[AttemptResult],
                        deferrals: Sequence[Deferral] = (), settlements: Sequence[Settlement] = ()) -> Written:
    """Record attempts, settle their deliveries, keep the endpoints' failure streaks, hand back deferrals and
    settle the unsent. Run inside a transaction. A verdict applies only while this worker still holds the
    delivery: a retry or recover (or another worker, after a lapsed lease) may have taken it meanwhile;
    the attempt is recorded either way."""
    vanished: list[uuid.UUID] = []
    if results:
        grouped = _per_delivery(results)
        last = [grouped[d][-1] for d in sorted(grouped)]  # one order for every writer: no deadlocks
        rows = await conn.fetch(
            """UPDATE deliveries d SET attempt_count = d.attempt_count + u.n,
                      status = CASE WHEN d.lease_owner = $7 THEN u.status ELSE d.status END,
                      next_attempt_at = CASE WHEN d.lease_owner = $7 THEN u.next_attempt_at
                                             ELSE d.next_attempt_at END,
                      next_trigger = CASE WHEN d.lease_owner = $7 THEN 'scheduled' ELSE d.next_trigger END,
                      last_response_status = u.response_status, last_error = u.error,
                      lease_until = CASE WHEN d.lease_owner = $7 THEN NULL ELSE d.lease_until END,
                      lease_owner = CASE WHEN d.lease_owner = $7 THEN NULL ELSE d.lease_owner END,
                      updated_at = now()
               FROM unnest($1::uuid[], $2::int[], $3::text[], $4::timestamptz[], $5::int[], $6::text[])
                    AS u(id, n, status, next_attempt_at, response_status, error)
               WHERE d.id = u.id
               RETURNING d.id, d.attempt_count""",
            [r.delivery_id for r in last], [len(grouped[r.delivery_id]) for r in last], [r.status for r in last],
            [r.next_attempt_at for r in last], [r.response_status for r in last], [r.error for r in last], owner,
        )
        counts = {r["id"]: r["attempt_count"] for r in rows}
        vanished = [d for d in grouped if d not in counts]
        live = [(counts[d] - len(rs) + i + 1, r) for d, rs in grouped.items() if d in counts
                for i, r in enumerate(rs)]
        if live:
            await conn.execute(
                """INSERT INTO attempts (delivery_id, number, started_at, duration_ms, response_status,
                                         response_body, error, error_kind, trigger, url, endpoint_id)
                   SELECT * FROM unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::int[], $5::int[],
                                        $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::uuid[])
                   ON CONFLICT (delivery_id, number) DO NOTHING""",
                [r.delivery_id for _, r in live], [n for n, _ in live], [r.started_at for _, r in live],
                [r.duration_ms for _, r in live], [r.response_status for _, r in live],
                [r.response_body for _, r in live], [r.error for _, r in live], [r.error_kind for _, r in live],
                [r.trigger for _, r in live], [r.url for _, r in live], [r.endpoint_id for _, r in live],
            )
        kept = [r for _, r in live]
        streaks = dict(sorted(_streaks(kept).items()))
        if streaks:
            await conn.execute(
                """UPDATE endpoints e SET
                          failure_streak = CASE WHEN u.reset THEN u.failures ELSE e.failure_streak + u.failures END,
                          failing_since = CASE WHEN u.failures = 0 THEN NULL
                                               WHEN u.reset THEN now() ELSE coalesce(e.failing_since, now()) END
                   FROM unnest($1::uuid[], $2::bool[], $3::int[]) AS u(id, reset, failures)
                   WHERE e.id = u.id AND (u.failures > 0 OR e.failure_streak > 0 OR e.failing_since IS NOT NULL)""",
                list(streaks), [s[0] for s in streaks.values()], [s[1] for s in streaks.values()],
            )
        exhausted = {r.endpoint_id for r in kept if r.status == "failed" and r.response_status != 410}
        if exhausted:
            await notices.record_exhausted(conn, list(exhausted))
    if deferrals:
        await conn.execute(
            """UPDATE deliveries d SET next_attempt_at = u.at, lease_until = NULL, lease_owner = NULL
               FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, at)
               WHERE d.id = u.id AND d.lease_owner = $3""",
            [d.delivery_id for d in deferrals], [d.next_attempt_at for d in deferrals], owner,
        )
    if settlements:
        await conn.execute(
            """UPDATE deliveries d SET status = 'failed', next_attempt_at = NULL, last_error = u.reason,
                      lease_until = NULL, lease_owner = NULL, updated_at = now()
               FROM unnest($1::uuid[], $2::text[]) AS u(id, reason)
               WHERE d.id = u.id AND d.lease_owner = $3 AND d.status = 'pending'""",
            [s.delivery_id for s in settlements], [s.reason for s in settlements], owner,
        )
        exhausted_unsent = {s.endpoint_id for s in settlements if s.exhausted}
        if exhausted_unsent:
            await notices.record_exhausted(conn, list(exhausted_unsent))
    return Written(vanished)
