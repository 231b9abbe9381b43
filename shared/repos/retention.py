"""Retention: delete history older than a cutoff, at most ``batch`` rows per short transaction.

Only history goes: attempts, settled deliveries and events. The agents, calls and leads
projections are current state and are never touched here.

Every statement finds its rows through an index, so a batch costs about the same however
large the tables are: attempts by ``attempts_started``; deliveries and events business by
business, by ``deliveries_business_recent`` and ``events_business_list`` (neither table has
an index on the time alone). Each batch commits on its own, so no lock outlives a batch.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from shared.repos import Executor

# Statements are module constants so that the tests can EXPLAIN exactly these.
DELETE_ATTEMPTS = """
    DELETE FROM attempts a
    USING (SELECT delivery_id, number FROM attempts WHERE started_at < $1 ORDER BY started_at LIMIT $2) old
    WHERE a.delivery_id = old.delivery_id AND a.number = old.number"""

DELETE_DELIVERIES = """
    DELETE FROM deliveries d
    USING (SELECT old.id FROM businesses b
           CROSS JOIN LATERAL (
               SELECT id FROM deliveries
               WHERE business_id = b.id AND updated_at < $1 AND status <> 'pending'
               ORDER BY updated_at LIMIT $2) old
           LIMIT $2) old
    WHERE d.id = old.id AND d.status <> 'pending' AND d.updated_at < $1"""

LOCK_EVENTS = """
    SELECT ev.id FROM events ev
    WHERE ev.id IN (
        SELECT old.id FROM businesses b
        CROSS JOIN LATERAL (
            SELECT e.id FROM events e
            WHERE e.business_id = b.id AND e.created_at < $1 AND e.fanned_out_at IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id)
            ORDER BY e.created_at LIMIT $2) old
        LIMIT $2)
    FOR UPDATE SKIP LOCKED"""

DELETE_EVENTS = """
    DELETE FROM events e WHERE e.id = ANY($1::uuid[])
      AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id)
    RETURNING e.business_id"""


def _count(status: str) -> int:
    """``DELETE 42`` -> 42."""
    return int(status.split()[-1])


async def delete_attempts(db: Executor, cutoff: datetime, batch: int) -> int:
    """Delete up to ``batch`` attempts that started before ``cutoff``; returns how many went.
    Attempts are never updated, so nothing can change under the delete."""
    return _count(await db.execute(DELETE_ATTEMPTS, cutoff, batch))


async def delete_deliveries(db: Executor, cutoff: datetime, batch: int) -> int:
    """Delete up to ``batch`` settled deliveries (succeeded or failed) last changed before ``cutoff``,
    with whatever attempts they still have; returns how many went. A delivery made pending again
    meanwhile (a retry or recover) is left alone: the conditions are re-checked on the row being
    deleted, as it is now."""
    return _count(await db.execute(DELETE_DELIVERIES, cutoff, batch))


@dataclass(frozen=True, slots=True)
class DeletedEvents:
    count: int
    business_ids: set[uuid.UUID]  # whose event log changed (their cached read pages are stale)


async def delete_events(db: Executor, cutoff: datetime, batch: int) -> DeletedEvents:
    """Delete up to ``batch`` events accepted before ``cutoff`` that are done with: fanned out, and
    with no delivery left. Delete old settled deliveries first (``delete_deliveries``): what is left
    then is pending or recently changed and keeps its event, so no pending delivery ever goes with
    its event (the cascade to deliveries and attempts has nothing to do).

    Two statements in one transaction: lock the candidates (skipping any that someone holds, such
    as a recover giving one a delivery right now), then delete those that still have no delivery,
    as seen once the locks are held. A delivery cannot be added to a locked event before that check
    (its foreign key check waits for the lock), and fails on the foreign key after it."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            return await delete_events(conn, cutoff, batch)
    async with db.transaction():
        locked = await db.fetch(LOCK_EVENTS, cutoff, batch)
        if not locked:
            return DeletedEvents(0, set())
        rows = await db.fetch(DELETE_EVENTS, [r["id"] for r in locked])
    return DeletedEvents(len(rows), {r["business_id"] for r in rows})
