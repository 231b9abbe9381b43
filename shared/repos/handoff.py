"""The hand-off from the API to the workers: the due queue in Postgres (the truth), the wake-ups that tell
workers to claim from it now, and the leases.

    api (POST /internal/v1/events)
      one statement: events + one delivery row per matching enabled endpoint (due now, or when a paused
      endpoint resumes; ``deadline_at`` = now + the retry schedule's total) (shared.repos.ingest); once it
      has committed, when it made deliveries: PUBLISH on the Redis wake channel (``wake_channel``), in the
      same pipeline as the data-version bumps (shared.publishing). No ``NOTIFY`` on this path: Postgres
      serialises the commits of notifying transactions on one lock, which many small publishers queue on.
    api (endpoint changed: PATCH, DELETE, rotate, disable)
      pg_notify(DUE_CHANNEL, 'endpoint:<uuid>') in the same transaction (``notify_endpoint_changed``):
      rare, and a lane must hear it, so it stays on Postgres, delivered at commit
    retries, recovers, test sends (rare)
      pg_notify(DUE_CHANNEL, '') in their transaction (``notify_due``)
    worker (dispatcher.intake)
      SUBSCRIBE to the wake channel and LISTEN DUE_CHANNEL; on a wake-up, on '' or every poll
      (``worker_poll_s``, which alone keeps deliveries going while Redis is away): ``claim_due`` leases due
      deliveries (claim and load in one statement); on 'endpoint:<uuid>': that endpoint's lane is read again
      before it sends anything more
      -> dispatcher.engine: lanes -> message -> send -> outcome
      -> dispatcher.record: attempts and verdicts (shared.repos.delivery_results)
    while a worker holds a delivery its ``next_attempt_at`` is its lease's end (a visibility timeout),
    renewed by ``renew_leases``; a dead worker's deliveries are due again once their leases run out.

A lost wake-up (Redis down, a subscriber reconnecting) costs latency, never a delivery: what is due is in
Postgres, and the next poll claims it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from shared.models import Trigger
from shared.repos import Executor

DUE_CHANNEL = "kaihooks_due"  # Postgres LISTEN/NOTIFY
# The Redis channel of "deliveries are due now", per deployment (Redis pub/sub ignores database numbers, so a
# deployment sharing a Redis is told apart by its KAIHOOKS_QUEUE_NAME, as its crons' queue is).
WAKE_CHANNEL = "kaihooks:due:{queue}"
# Payloads on DUE_CHANNEL: '' (deliveries are due now), or this prefix and an endpoint id (the endpoint was
# changed, disabled, enabled, re-pointed, given a new secret or deleted: workers read it again).
ENDPOINT_CHANGED = "endpoint:"


@dataclass(frozen=True, slots=True)
class Wake:
    """Deliveries are due: claim now."""


@dataclass(frozen=True, slots=True)
class EndpointChanged:
    endpoint_id: uuid.UUID


def parse(payload: str) -> Wake | EndpointChanged:
    """A notification's meaning; anything unknown (a newer release's) just wakes the claim."""
    if payload.startswith(ENDPOINT_CHANGED):
        try:
            return EndpointChanged(uuid.UUID(payload.removeprefix(ENDPOINT_CHANGED)))
        except ValueError:
            pass
    return Wake()


def wake_channel(queue_name: str) -> str:
    """The Redis channel that wakes this deployment's workers (``Settings.queue_name``)."""
    return WAKE_CHANNEL.format(queue=queue_name)


async def notify_due(db: Executor) -> None:
    """Tell the workers deliveries are due now (inside a transaction: once it commits)."""
    await db.execute("SELECT pg_notify($1, '')", DUE_CHANNEL)


async def notify_endpoint_changed(db: Executor, endpoint_id: uuid.UUID) -> None:
    """Tell the workers to read this endpoint again before sending to it (inside a transaction: at commit)."""
    await db.execute("SELECT pg_notify($1, $2)", DUE_CHANNEL, f"{ENDPOINT_CHANGED}{endpoint_id}")


@dataclass(frozen=True, slots=True)
class Outbound:
    """Everything a worker needs to send one delivery, as it was when claimed."""

    id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    business_id: uuid.UUID
    occurred_at: datetime
    data_json: str
    endpoint_id: uuid.UUID
    url: str
    enabled: bool
    attempt_count: int
    trigger: Trigger
    schedule: str  # 'normal' or 'replay'
    schedule_start: int  # attempt_count when the schedule began
    created_at: datetime
    deadline_at: datetime | None  # None: written by an older release (created_at + the normal schedule)
    paused_until: datetime | None  # the endpoint's shared pause
    failure_streak: int  # the endpoint's consecutive failures, all workers
    failing_since: datetime | None


async def claim_due(
    db: Executor, owner: str, limit: int, lease_s: float, skip_endpoints: Sequence[uuid.UUID] = ()
) -> list[Outbound]:
    """Lease up to ``limit`` pending deliveries that are due and held by nobody (or by a worker whose
    lease ran out), oldest due first; return them with their event and endpoint as they are now. One
    round trip. Deliveries to ``skip_endpoints`` (whose lanes take nothing more now) are left to others,
    unless their deadline has come (then the worker settles them). The lease sets ``next_attempt_at`` to
    its end: the outcome then sets the real one."""
    rows = await db.fetch(
        """WITH claimed AS (
               UPDATE deliveries d SET lease_until = now() + make_interval(secs => $3), lease_owner = $2,
                                       next_attempt_at = now() + make_interval(secs => $3)
               FROM (SELECT id FROM deliveries
                     WHERE status = 'pending' AND next_attempt_at <= now()
                       AND (lease_until IS NULL OR lease_until < now())
                       AND (endpoint_id <> ALL($4::uuid[]) OR deadline_at <= now())
                     ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) due
               WHERE d.id = due.id
               RETURNING d.id, d.event_id, d.event_type, d.business_id, d.endpoint_id, d.attempt_count,
                         d.next_trigger, d.schedule, d.schedule_start, d.created_at, d.deadline_at
           )
           SELECT d.id, d.event_id, d.event_type, d.business_id, e.occurred_at, e.data::text AS data_json,
                  d.endpoint_id, ep.url, ep.enabled, d.attempt_count, d.next_trigger AS trigger, d.schedule,
                  d.schedule_start, d.created_at, d.deadline_at, ep.paused_until, ep.failure_streak,
                  ep.failing_since
           FROM claimed d JOIN events e ON e.id = d.event_id JOIN endpoints ep ON ep.id = d.endpoint_id""",
        limit, owner, lease_s, list(skip_endpoints),
    )
    return [Outbound(**r) for r in rows]


async def renew_leases(db: Executor, delivery_ids: Sequence[uuid.UUID], owner: str, lease_s: float,
                       timeout_s: float | None = None) -> None:
    """Extend this worker's leases (its deliveries queued, in flight, or waiting for their result's write)."""
    await db.execute(
        """UPDATE deliveries SET lease_until = now() + make_interval(secs => $3),
                  next_attempt_at = now() + make_interval(secs => $3)
           WHERE id = ANY($1::uuid[]) AND lease_owner = $2 AND status = 'pending'""",
        list(delivery_ids), owner, lease_s, timeout=timeout_s,
    )


async def release(db: Executor, owner: str) -> None:
    """Hand back everything this worker holds (it is stopping): due again at once for the others."""
    await db.execute("UPDATE deliveries SET lease_until = NULL, lease_owner = NULL, next_attempt_at = CASE "
                     "WHEN status = 'pending' THEN now() ELSE next_attempt_at END WHERE lease_owner = $1", owner)


async def due_count(db: Executor) -> int:
    """Pending deliveries due now, across all workers (the queue depth)."""
    count: int = await db.fetchval(
        "SELECT count(*) FROM deliveries WHERE status = 'pending' AND next_attempt_at <= now()")
    return count


async def fan_out(db: Executor, event_ids: Sequence[uuid.UUID], deadline_s: float) -> int:
    """Create the deliveries of events not yet fanned out (one per matching enabled endpoint, due now or
    when a paused endpoint resumes, failed ``deadline_s`` after now at the latest) and mark the events
    done. Events another transaction is fanning out are skipped. Accepted events are fanned out as they
    are stored (``shared.repos.ingest``); this is for any that were not."""
    return await db.fetchval(  # type: ignore[no-any-return]
        """WITH ev AS (
               SELECT id, business_id, type FROM events
               WHERE id = ANY($1::uuid[]) AND fanned_out_at IS NULL
               FOR UPDATE SKIP LOCKED
           ), marked AS (
               UPDATE events e SET fanned_out_at = now() FROM ev WHERE e.id = ev.id
           ), created AS (
               INSERT INTO deliveries (event_id, endpoint_id, business_id, event_type, next_attempt_at, deadline_at)
               SELECT ev.id, ep.id, ev.business_id, ev.type,
                      least(greatest(now(), ep.paused_until), now() + make_interval(secs => $2)),
                      now() + make_interval(secs => $2)
               FROM ev JOIN endpoints ep ON ep.business_id = ev.business_id AND ep.enabled
                    AND (ep.event_types IS NULL OR ev.type = ANY(ep.event_types))
               ON CONFLICT (event_id, endpoint_id) DO NOTHING
               RETURNING 1
           )
           SELECT count(*) FROM created""",
        list(event_ids), deadline_s,
    )


async def unfanned_events(db: Executor, older_than_s: float, limit: int) -> list[uuid.UUID]:
    """Events accepted a while ago but never fanned out (stored by an older release, say)."""
    rows = await db.fetch(
        """SELECT id FROM events WHERE fanned_out_at IS NULL
           AND created_at < now() - make_interval(secs => $1) ORDER BY created_at LIMIT $2""",
        older_than_s, limit,
    )
    return [r["id"] for r in rows]
