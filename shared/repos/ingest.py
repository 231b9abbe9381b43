"""Accepting a batch of events in one statement: the event rows (skipping repeated idempotency keys),
their deliveries (one per matching enabled endpoint, due now or when a paused endpoint resumes, with
their deadline: the fan-out), and the agents, calls and leads they carry, newest state winning. One statement is one
transaction and one round trip, whatever the batch size. It tells the caller how many deliveries it made, so
that the workers can be woken once it has committed (``shared.publishing``); it sends no ``NOTIFY`` itself
(``shared.repos.handoff`` says why)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from shared.repos import Executor
from shared.repos.events import NewEvent


@dataclass(frozen=True, slots=True)
class Change:
    """What one event says about the entity it carries (several may name the same entity)."""

    business_id: uuid.UUID
    id: str
    body: str
    version_at: datetime
    version_event: uuid.UUID
    deleted: bool = False
    # calls only: the columns their filters use
    status: str | None = None
    agent_id: str | None = None
    started_at: datetime | None = None


# Newer state wins: by occurred_at, then by event id (the order events were accepted).
_NEWER = "(t.version_at, t.version_event) < (EXCLUDED.version_at, EXCLUDED.version_event)"
# Only changes carried by events this statement inserted (not repeats); the newest per entity,
# since one statement may not update a row twice.
_NEWEST = """SELECT DISTINCT ON (c.business_id, c.id) c.* FROM {source} WHERE c.version_event IN (SELECT id FROM ins)
             ORDER BY c.business_id, c.id, c.version_at DESC, c.version_event DESC"""

_SQL = f"""
WITH ins AS (
    INSERT INTO events (id, business_id, type, data, idempotency_key, occurred_at, fanned_out_at)
    SELECT id, business_id, type, data::jsonb, idempotency_key, occurred_at, now()
    FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])
         AS e(id, business_id, type, data, idempotency_key, occurred_at)
    ON CONFLICT (business_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id, business_id, type
), fanned AS (
    INSERT INTO deliveries (event_id, endpoint_id, business_id, event_type, next_attempt_at, deadline_at)
    SELECT ins.id, ep.id, ins.business_id, ins.type,
           least(greatest(now(), ep.paused_until), now() + make_interval(secs => $26::float8)),
           now() + make_interval(secs => $26::float8)
    FROM ins JOIN endpoints ep ON ep.business_id = ins.business_id AND ep.enabled
         AND (ep.event_types IS NULL OR ins.type = ANY(ep.event_types))
    RETURNING 1
), agents_up AS (
    INSERT INTO agents AS t (business_id, id, body, deleted, version_at, version_event)
    {_NEWEST.format(source='''unnest($7::uuid[], $8::text[], $9::text[], $10::bool[], $11::timestamptz[],
                    $12::uuid[]) AS c(business_id, id, body, deleted, version_at, version_event)''')}
    ON CONFLICT (business_id, id) DO UPDATE SET
        body = CASE WHEN EXCLUDED.deleted THEN t.body ELSE EXCLUDED.body END,
        deleted = EXCLUDED.deleted, version_at = EXCLUDED.version_at,
        version_event = EXCLUDED.version_event, updated_at = now()
    WHERE {_NEWER}
), calls_up AS (
    INSERT INTO calls AS t (business_id, id, body, status, agent_id, started_at, version_at, version_event)
    {_NEWEST.format(source='''unnest($13::uuid[], $14::text[], $15::text[], $16::text[], $17::text[],
                    $18::timestamptz[], $19::timestamptz[], $20::uuid[])
                    AS c(business_id, id, body, status, agent_id, started_at, version_at, version_event)''')}
    ON CONFLICT (business_id, id) DO UPDATE SET
        body = EXCLUDED.body, status = EXCLUDED.status, agent_id = EXCLUDED.agent_id,
        started_at = EXCLUDED.started_at, version_at = EXCLUDED.version_at,
        version_event = EXCLUDED.version_event, updated_at = now()
    WHERE {_NEWER}
), leads_up AS (
    INSERT INTO leads AS t (business_id, id, body, version_at, version_event)
    {_NEWEST.format(source='''unnest($21::uuid[], $22::text[], $23::text[], $24::timestamptz[], $25::uuid[])
                    AS c(business_id, id, body, version_at, version_event)''')}
    ON CONFLICT (business_id, id) DO UPDATE SET
        body = EXCLUDED.body, version_at = EXCLUDED.version_at,
        version_event = EXCLUDED.version_event, updated_at = now()
    WHERE {_NEWER}
)
SELECT id, (SELECT count(*) FROM fanned) AS deliveries FROM ins
"""


@dataclass(frozen=True, slots=True)
class Stored:
    inserted: set[uuid.UUID]  # the events inserted (the others repeated an idempotency key)
    deliveries: int  # the deliveries made for them


def _columns(changes: Sequence[Change], *extra: str) -> list[list[object]]:
    names = ("business_id", "id", "body", *extra, "version_at", "version_event")
    return [[getattr(c, name) for c in changes] for name in names]


async def accept(
    db: Executor, events: Sequence[NewEvent], agents: Sequence[Change], calls: Sequence[Change],
    leads: Sequence[Change], deadline_s: float,
) -> Stored:
    """Store the batch; returns the ids of the events inserted (the others repeated an idempotency key) and
    how many deliveries were made for them. Their deliveries are failed ``deadline_s`` (the retry schedule's
    total) from now at the latest.
    Raises asyncpg's ForeignKeyViolationError, storing nothing, if a business does not exist."""
    rows = await db.fetch(
        _SQL,
        [e.id for e in events], [e.business_id for e in events], [e.type for e in events],
        [e.data_json for e in events], [e.idempotency_key for e in events], [e.occurred_at for e in events],
        *_columns(agents, "deleted"),
        *_columns(calls, "status", "agent_id", "started_at"),
        *_columns(leads), deadline_s,
    )
    return Stored({r["id"] for r in rows}, rows[0]["deliveries"] if rows else 0)
