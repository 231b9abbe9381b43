"""The batched result writer outlives any failure of a flush and loses nothing it was given."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from dispatcher.record import ResultWriter
from shared import ids, metrics
from shared.db import create_pool
from shared.repos.delivery_results import AttemptResult, Deferral
from shared.settings import Settings
from tests.helpers import Api, Tenant, until
from tests.test_publishing import call, event, publish


class FailingFirst:
    """A pool whose first ``acquire`` raises ``error`` (as a connection broken by a Postgres shutdown does);
    every later one is the real pool's."""

    def __init__(self, pool: asyncpg.Pool, error: BaseException) -> None:
        self.pool, self.error, self.failed = pool, error, 0

    def acquire(self) -> Any:
        if not self.failed:
            self.failed += 1
            raise self.error
        return self.pool.acquire()


async def _leased_delivery(tenant: Tenant, api: Api, db: asyncpg.Connection, owner: str) -> Any:
    """A delivery to a new endpoint of the tenant's, leased to ``owner`` (as if claimed)."""
    key = (await tenant.create_key(scopes=["webhooks:write"]))["key"]
    created = await api.post(f"{tenant.path}/webhook-endpoints", key=key, json={"url": "https://w.example.com/"})
    assert created.status == 201
    r = await publish(api, event(tenant.business_id, data=call("writer")))
    event_id = ids.decode("evt", r.body["events"][0]["id"])
    return await db.fetchval("UPDATE deliveries SET lease_owner = $3, lease_until = now() + interval '1 minute' "
                             "WHERE event_id = $1 AND endpoint_id = $2 RETURNING id",
                             event_id, ids.decode("ep", created.body["id"]), owner)


@contextlib.asynccontextmanager
async def running(writer: ResultWriter) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(writer.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_flush_that_fails_in_an_unexpected_way_keeps_its_batch_and_the_writer_runs_on(
        tenant: Tenant, api: Api, db: asyncpg.Connection, settings: Settings) -> None:
    owner = "writer-test"
    delivery_id = await _leased_delivery(tenant, api, db, owner)
    pool = await create_pool(settings, min_size=1, max_size=2)
    later = datetime.now(UTC) + timedelta(hours=1)
    try:
        for error in (asyncpg.exceptions.InternalClientError("cannot switch to state 12"), RuntimeError("bug")):
            await db.execute("UPDATE deliveries SET lease_owner = $2 WHERE id = $1", delivery_id, owner)
            flaky = FailingFirst(pool, error)
            writer = ResultWriter(flaky, owner)  # type: ignore[arg-type]
            writer.add(Deferral(delivery_id, later))

            async def written() -> bool:
                row = await db.fetchrow("SELECT next_attempt_at, lease_owner FROM deliveries WHERE id = $1",
                                        delivery_id)
                return bool(row["next_attempt_at"] == later and row["lease_owner"] is None)

            async with running(writer) as task:
                await until(written, 10, f"the batch written after a flush failed with {error!r}")
                assert flaky.failed == 1 and writer.pending == 0
                assert not task.done(), "the writer stopped after a failed flush"
    finally:
        await pool.close()


def _result(delivery_id: Any, endpoint_id: Any, body: str = "ok", succeeded: bool = True) -> AttemptResult:
    return AttemptResult(
        delivery_id=delivery_id, endpoint_id=endpoint_id, started_at=datetime.now(UTC), duration_ms=3,
        response_status=200 if succeeded else 500, response_body=body, error=None if succeeded else "HTTP 500",
        error_kind=None if succeeded else "http_status", trigger="scheduled", url="https://w.example.com/",
        status="succeeded" if succeeded else "pending",
        next_attempt_at=None if succeeded else datetime.now(UTC) + timedelta(hours=1), succeeded=succeeded)


async def test_one_row_postgres_refuses_is_isolated_and_the_others_are_written(
        tenant: Tenant, api: Api, db: asyncpg.Connection, settings: Settings) -> None:
    owner = "writer-isolate"
    good_a, bad, good_b = [await _leased_delivery(tenant, api, db, owner) for _ in range(3)]
    endpoint_of = {r["id"]: r["endpoint_id"] for r in await db.fetch(
        "SELECT id, endpoint_id FROM deliveries WHERE id = ANY($1::uuid[])", [good_a, bad, good_b])}
    pool = await create_pool(settings, min_size=1, max_size=2)
    written: list[Any] = []
    dropped_before = metrics.RESULTS_DROPPED.labels("rejected")._value.get()
    try:
        writer = ResultWriter(pool, owner, on_written=written.extend)
        for delivery_id in (good_a, bad, good_b):  # Postgres text cannot hold NUL: the middle row is refused
            writer.add(_result(delivery_id, endpoint_of[delivery_id], "\x00" if delivery_id == bad else "ok"))
        async with running(writer):
            # the halves are written in no set order: the refused row may be given up before a good one's half
            await until(lambda: {good_a, bad, good_b} <= set(written), 10,
                        "every row written, the refused one given up after its strikes")
        statuses = dict(await db.fetch("SELECT id, status FROM deliveries WHERE id = ANY($1::uuid[])",
                                       [good_a, bad, good_b]))
        assert statuses == {good_a: "succeeded", bad: "pending", good_b: "succeeded"}
        assert await db.fetchval("SELECT count(*) FROM attempts WHERE delivery_id = $1", bad) == 0
        assert metrics.RESULTS_DROPPED.labels("rejected")._value.get() == dropped_before + 1
        assert sorted(map(str, written)) == sorted(map(str, [good_a, bad, good_b]))
    finally:
        await pool.close()


async def test_a_result_for_a_deleted_delivery_is_dropped_and_the_others_are_written(
        tenant: Tenant, api: Api, db: asyncpg.Connection, settings: Settings) -> None:
    owner = "writer-vanished"
    kept, deleted = [await _leased_delivery(tenant, api, db, owner) for _ in range(2)]
    endpoint_of = {r["id"]: r["endpoint_id"] for r in await db.fetch(
        "SELECT id, endpoint_id FROM deliveries WHERE id = ANY($1::uuid[])", [kept, deleted])}
    await db.execute("DELETE FROM endpoints WHERE id = $1", endpoint_of[deleted])
    pool = await create_pool(settings, min_size=1, max_size=2)
    vanished_before = metrics.RESULTS_DROPPED.labels("vanished")._value.get()
    try:
        writer = ResultWriter(pool, owner)
        writer.add(_result(deleted, endpoint_of[deleted]))
        writer.add(_result(kept, endpoint_of[kept]))
        assert await writer.flush()
        assert await db.fetchval("SELECT status FROM deliveries WHERE id = $1", kept) == "succeeded"
        assert metrics.RESULTS_DROPPED.labels("vanished")._value.get() == vanished_before + 1
    finally:
        await pool.close()


async def test_two_workers_recording_one_delivery_number_their_attempts_apart(
        tenant: Tenant, api: Api, db: asyncpg.Connection, settings: Settings) -> None:
    """A lease lapsed under load and two workers sent the same delivery: both attempts are kept, numbered
    1 and 2, and only the holder's verdict applies."""
    delivery_id = await _leased_delivery(tenant, api, db, "worker-b")
    endpoint_id = await db.fetchval("SELECT endpoint_id FROM deliveries WHERE id = $1", delivery_id)
    pool = await create_pool(settings, min_size=2, max_size=2)
    try:
        first, second = ResultWriter(pool, "worker-a"), ResultWriter(pool, "worker-b")
        first.add(_result(delivery_id, endpoint_id))
        second.add(_result(delivery_id, endpoint_id, succeeded=False))
        assert all(await asyncio.gather(first.flush(), second.flush()))
        numbers = [r["number"] for r in await db.fetch(
            "SELECT number FROM attempts WHERE delivery_id = $1 ORDER BY number", delivery_id)]
        row = await db.fetchrow("SELECT attempt_count, status FROM deliveries WHERE id = $1", delivery_id)
        assert numbers == [1, 2] and row["attempt_count"] == 2
        assert row["status"] == "pending"  # worker-b held it; worker-a's success counts as an attempt only
    finally:
        await pool.close()
