"""Retention: old attempts, settled deliveries and done-with events go in bounded batches; nothing else does."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from dispatcher import jobs
from shared import ids, redis_client, redis_keys
from shared.db import create_pool
from shared.repos import retention
from shared.settings import Settings
from tests.helpers import Api, Tenant
from tests.test_publishing import call, event, publish

OLD = 40  # days: past the default 30 days of retention
BIG = 100_000


def cutoff(settings: Settings) -> datetime:
    return datetime.now(UTC) - timedelta(days=settings.retention_days)


async def drain(db: asyncpg.Connection, settings: Settings) -> None:
    """Delete whatever old history earlier tests left, so that counts below are this test's own."""
    await retention.delete_attempts(db, cutoff(settings), BIG)
    await retention.delete_deliveries(db, cutoff(settings), BIG)
    await retention.delete_events(db, cutoff(settings), BIG)


@pytest.fixture(autouse=True)
async def clean(db: asyncpg.Connection, settings: Settings) -> None:
    await drain(db, settings)


class Rows:
    """Rows inserted straight into the session's database, aged as a test needs."""

    def __init__(self, db: asyncpg.Connection) -> None:
        self.db = db
        self.businesses: list[uuid.UUID] = []

    async def business(self) -> uuid.UUID:
        business_id = ids.new_uuid()
        self.businesses.append(business_id)
        await self.db.execute("INSERT INTO businesses (id, name) VALUES ($1, 'Retention test')", business_id)
        return business_id

    async def endpoint(self, business_id: uuid.UUID) -> uuid.UUID:
        endpoint_id = ids.new_uuid()
        await self.db.execute("INSERT INTO endpoints (id, business_id, url) VALUES ($1, $2, 'https://example.test/h')",
                              endpoint_id, business_id)
        return endpoint_id

    async def event(self, business_id: uuid.UUID, age_days: float = 0, fanned_out: bool = True) -> uuid.UUID:
        event_id = ids.new_uuid()
        await self.db.execute(
            """INSERT INTO events (id, business_id, type, data, occurred_at, created_at, fanned_out_at)
               VALUES ($1, $2, 'call.started', '{}', now() - $3::float8 * interval '1 day',
                       now() - $3::float8 * interval '1 day',
                       CASE WHEN $4::bool THEN now() - $3::float8 * interval '1 day' END)""",
            event_id, business_id, age_days, fanned_out,
        )
        return event_id

    async def delivery(self, event_id: uuid.UUID, endpoint_id: uuid.UUID, status: str, age_days: float = 0,
                       attempts: int = 0) -> uuid.UUID:
        """A delivery last changed ``age_days`` ago, with that many attempts started then."""
        delivery_id: uuid.UUID = await self.db.fetchval(
            """INSERT INTO deliveries (event_id, endpoint_id, business_id, event_type, status, attempt_count,
                                       next_attempt_at, created_at, updated_at)
               SELECT e.id, $2::uuid, e.business_id, e.type, $3::text, $5::int,
                      CASE WHEN $3::text = 'pending' THEN now() END, e.created_at,
                      now() - $4::float8 * interval '1 day'
               FROM events e WHERE e.id = $1 RETURNING id""",
            event_id, endpoint_id, status, age_days, attempts,
        )
        for number in range(1, attempts + 1):
            await self.attempt(delivery_id, endpoint_id, number, age_days)
        return delivery_id

    async def attempt(self, delivery_id: uuid.UUID, endpoint_id: uuid.UUID, number: int, age_days: float) -> None:
        await self.db.execute(
            """INSERT INTO attempts (delivery_id, endpoint_id, number, started_at, duration_ms, response_status,
                                     trigger, url)
               VALUES ($1, $2, $3, now() - $4::float8 * interval '1 day', 12, 200, 'scheduled',
                       'https://example.test/h')""",
            delivery_id, endpoint_id, number, age_days,
        )

    async def attempt_numbers(self, delivery_id: uuid.UUID) -> list[int]:
        rows = await self.db.fetch("SELECT number FROM attempts WHERE delivery_id = $1 ORDER BY number", delivery_id)
        return [r["number"] for r in rows]

    async def exists(self, table: str, row_id: uuid.UUID) -> bool:
        return bool(await self.db.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table} WHERE id = $1)", row_id))


@pytest.fixture
async def rows(db: asyncpg.Connection) -> AsyncIterator[Rows]:
    made = Rows(db)
    yield made
    # Everything goes with its business; no later test's worker finds these pending deliveries.
    await db.execute("DELETE FROM businesses WHERE id = ANY($1::uuid[])", made.businesses)


async def test_old_attempts_go_and_recent_ones_stay(rows: Rows, db: asyncpg.Connection, settings: Settings) -> None:
    biz = await rows.business()
    ep = await rows.endpoint(biz)
    delivery = await rows.delivery(await rows.event(biz), ep, "succeeded")
    await rows.attempt(delivery, ep, 1, OLD)
    await rows.attempt(delivery, ep, 2, settings.retention_days + 0.1)
    await rows.attempt(delivery, ep, 3, settings.retention_days - 0.1)
    await rows.attempt(delivery, ep, 4, 0)

    assert await retention.delete_attempts(db, cutoff(settings), BIG) == 2
    assert await rows.attempt_numbers(delivery) == [3, 4]
    assert await rows.exists("deliveries", delivery)  # changed just now: not old
    assert await retention.delete_attempts(db, cutoff(settings), BIG) == 0


async def test_old_settled_deliveries_go_with_their_attempts(rows: Rows, db: asyncpg.Connection,
                                                             settings: Settings) -> None:
    biz = await rows.business()
    old_event = await rows.event(biz, OLD)
    eps = [await rows.endpoint(biz) for _ in range(5)]
    succeeded = await rows.delivery(old_event, eps[0], "succeeded", OLD, attempts=1)
    failed = await rows.delivery(old_event, eps[1], "failed", OLD, attempts=3)
    pending = await rows.delivery(old_event, eps[2], "pending", OLD, attempts=2)  # e.g. deferred all this time
    recently_failed = await rows.delivery(old_event, eps[3], "failed", 1, attempts=1)  # e.g. recovered lately
    recent_event = await rows.event(biz)
    recent = await rows.delivery(recent_event, eps[4], "succeeded", 0, attempts=1)

    assert await retention.delete_deliveries(db, cutoff(settings), BIG) == 2
    assert not await rows.exists("deliveries", succeeded) and not await rows.exists("deliveries", failed)
    assert await rows.attempt_numbers(succeeded) == [] and await rows.attempt_numbers(failed) == []  # cascaded
    assert await rows.attempt_numbers(pending) == [1, 2]  # its delivery stays, so do they (until their own age)
    for kept in (pending, recently_failed, recent):
        assert await rows.exists("deliveries", kept)
    assert await rows.exists("events", old_event)  # deliveries never take their event with them
    assert await retention.delete_deliveries(db, cutoff(settings), BIG) == 0


async def test_events_go_once_nothing_of_theirs_is_pending_or_recent(rows: Rows, db: asyncpg.Connection,
                                                                     settings: Settings) -> None:
    biz, other_biz = await rows.business(), await rows.business()
    ep = await rows.endpoint(biz)
    settled = await rows.event(biz, OLD)
    settled_delivery = await rows.delivery(settled, ep, "succeeded", OLD, attempts=2)
    no_endpoint = await rows.event(other_biz, OLD)  # nobody listened: it never had a delivery
    with_pending = await rows.event(biz, OLD)
    pending_delivery = await rows.delivery(with_pending, ep, "pending", OLD, attempts=1)
    recently_retried = await rows.event(biz, OLD)
    retried_delivery = await rows.delivery(recently_retried, ep, "failed", 2, attempts=1)
    not_fanned_out = await rows.event(biz, OLD, fanned_out=False)  # the sweeper still has to fan it out
    recent = await rows.event(biz, settings.retention_days - 0.1)
    await rows.delivery(recent, ep, "succeeded", settings.retention_days - 0.1)

    # An event keeps its deliveries: while a settled one is still there, the event waits for it.
    assert (await retention.delete_events(db, cutoff(settings), BIG)).business_ids == {other_biz}
    assert await rows.exists("events", settled)

    assert await retention.delete_attempts(db, cutoff(settings), BIG) == 3
    assert await retention.delete_deliveries(db, cutoff(settings), BIG) == 1
    result = await retention.delete_events(db, cutoff(settings), BIG)
    assert result.count == 1 and result.business_ids == {biz}

    assert not await rows.exists("events", settled) and not await rows.exists("events", no_endpoint)
    assert not await rows.exists("deliveries", settled_delivery)
    for kept in (with_pending, recently_retried, not_fanned_out, recent):
        assert await rows.exists("events", kept)
    assert await rows.exists("deliveries", pending_delivery) and await rows.exists("deliveries", retried_delivery)
    assert await retention.delete_events(db, cutoff(settings), BIG) == retention.DeletedEvents(0, set())


async def test_a_delivery_made_pending_again_keeps_its_event(rows: Rows, db: asyncpg.Connection,
                                                             settings: Settings) -> None:
    biz = await rows.business()
    ep = await rows.endpoint(biz)
    old_event = await rows.event(biz, OLD)
    delivery = await rows.delivery(old_event, ep, "failed", OLD)
    # A recover sends it again: pending, changed now (shared.repos.deliveries.send_now).
    await db.execute("UPDATE deliveries SET status = 'pending', next_attempt_at = now(), updated_at = now() "
                     "WHERE id = $1", delivery)
    assert await retention.delete_deliveries(db, cutoff(settings), BIG) == 0
    assert (await retention.delete_events(db, cutoff(settings), BIG)).count == 0
    assert await rows.exists("deliveries", delivery) and await rows.exists("events", old_event)


async def test_each_call_deletes_at_most_its_batch(rows: Rows, db: asyncpg.Connection, settings: Settings) -> None:
    biz = await rows.business()
    ep = await rows.endpoint(biz)
    events = [await rows.event(biz, OLD) for _ in range(25)]
    deliveries = [await rows.delivery(e, ep, "succeeded", OLD) for e in events]
    for d in deliveries:
        await rows.attempt(d, ep, 1, OLD)

    assert [await retention.delete_attempts(db, cutoff(settings), 10) for _ in range(4)] == [10, 10, 5, 0]
    assert [await retention.delete_deliveries(db, cutoff(settings), 10) for _ in range(4)] == [10, 10, 5, 0]
    assert [(await retention.delete_events(db, cutoff(settings), 10)).count for _ in range(4)] == [10, 10, 5, 0]
    assert await db.fetchval("SELECT count(*) FROM events WHERE business_id = $1", biz) == 0


async def test_the_statements_find_their_rows_through_indexes(db: asyncpg.Connection, settings: Settings) -> None:
    """The tables here are tiny, so the planner is told to avoid sequential scans: what is checked is that
    each statement can use the intended index (its conditions match it), not the planner's costs."""
    await db.execute("SET enable_seqscan = off")  # this connection only

    async def plan(sql: str, *args: Any) -> str:
        return "\n".join(r[0] for r in await db.fetch("EXPLAIN " + sql, *args))

    assert "attempts_started" in await plan(retention.DELETE_ATTEMPTS, cutoff(settings), 10)
    assert "deliveries_business_recent" in await plan(retention.DELETE_DELIVERIES, cutoff(settings), 10)
    lock = await plan(retention.LOCK_EVENTS, cutoff(settings), 10)
    assert "events_business_list" in lock and "deliveries_event_id_endpoint_id_key" in lock
    assert "deliveries_event_id_endpoint_id_key" in await plan(retention.DELETE_EVENTS, [ids.new_uuid()])


# ---- the cron ---------------------------------------------------------------------------------------


@pytest.fixture
async def ctx(settings: Settings) -> AsyncIterator[dict[str, Any]]:
    """What arq hands the cron in the dispatcher: the engine (only its pool is used), Redis, settings."""
    pool = await create_pool(settings, min_size=1, max_size=2)
    redis = redis_client.connect(settings)
    try:
        yield {"engine": SimpleNamespace(db=pool), "redis": redis, "settings": settings}
    finally:
        await redis.aclose(close_connection_pool=True)
        await pool.close()


async def data_version(redis: Redis, business_id: str) -> int:
    value = await redis.get(redis_keys.DATA_VERSION.format(business_id=ids.decode("biz", business_id)))
    return int(value or 0)


async def test_the_cron_deletes_history_but_not_projections(
    tenant: Tenant, api: Api, db: asyncpg.Connection, ctx: dict[str, Any]
) -> None:
    r = await publish(api, {"events": [
        event(tenant.business_id, "agent.created", {"id": "agent_1", "name": "Ada"}),
        event(tenant.business_id, "call.started", call("call_old", agent_id="agent_1")),
        event(tenant.business_id, "lead.created", {"id": "lead_1", "name": "Grace"}),
    ]})
    assert r.status == 202, r.body
    business_id = ids.decode("biz", tenant.business_id)
    # Everything about this business is 40 days old, the current state (projections) included.
    await db.execute("UPDATE events SET created_at = now() - interval '40 days', "
                     "fanned_out_at = now() - interval '40 days' WHERE business_id = $1", business_id)
    for table in ("agents", "calls", "leads"):
        await db.execute(f"UPDATE {table} SET created_at = now() - interval '40 days', "
                         "updated_at = now() - interval '40 days' WHERE business_id = $1", business_id)
    recent = await publish(api, event(tenant.business_id, "call.started", call("call_new")))
    assert recent.status == 202
    key = (await tenant.create_key(scopes=["calls:read", "events:read"]))["key"]
    listed = await api.get(f"{tenant.path}/events", key=key)  # now cached until the data version moves
    assert len(listed.body["data"]) == 4
    version = await data_version(ctx["redis"], tenant.business_id)

    assert await jobs.apply_retention(ctx) == {"attempts": 0, "deliveries": 0, "events": 3}

    assert [r["type"] for r in await db.fetch("SELECT type FROM events WHERE business_id = $1",
                                              business_id)] == ["call.started"]
    for table, expected in (("agents", ["agent_1"]), ("calls", ["call_new", "call_old"]), ("leads", ["lead_1"])):
        found = await db.fetch(f"SELECT id FROM {table} WHERE business_id = $1 ORDER BY id", business_id)
        assert [row["id"] for row in found] == expected, table
    assert await data_version(ctx["redis"], tenant.business_id) == version + 1  # cached event pages are stale
    got = await api.get(f"{tenant.path}/calls/call_old", key=key)
    assert got.status == 200 and got.body["agent_id"] == "agent_1"
    listed = await api.get(f"{tenant.path}/events", key=key)
    assert [e["id"] for e in listed.body["data"]] == [recent.body["events"][0]["id"]]


async def test_the_cron_stops_at_its_time_budget_and_the_next_run_goes_on(
    rows: Rows, db: asyncpg.Connection, ctx: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    biz = await rows.business()
    ep = await rows.endpoint(biz)
    for _ in range(25):
        await rows.delivery(await rows.event(biz, OLD), ep, "failed", OLD, attempts=1)

    # Out of time at once: the first batch still runs (every run makes progress), then it stops.
    with caplog.at_level(logging.INFO, logger="kaihooks.dispatcher"):
        assert await jobs.apply_retention(ctx, batch=10, budget_s=0) == {"attempts": 10, "deliveries": 0, "events": 0}
    [record] = [r for r in caplog.records if r.name == "kaihooks.dispatcher"]
    assert record.complete is False and record.attempts == 10  # type: ignore[attr-defined]
    assert await db.fetchval("SELECT count(*) FROM attempts WHERE endpoint_id = $1", ep) == 15

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="kaihooks.dispatcher"):
        assert await jobs.apply_retention(ctx, batch=10) == {"attempts": 15, "deliveries": 25, "events": 25}
    [record] = [r for r in caplog.records if r.name == "kaihooks.dispatcher"]
    assert record.complete is True and record.retention_days == 30  # type: ignore[attr-defined]
    assert await db.fetchval("SELECT count(*) FROM events WHERE business_id = $1", biz) == 0
    assert await jobs.apply_retention(ctx, batch=10) == {"attempts": 0, "deliveries": 0, "events": 0}
