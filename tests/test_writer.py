"""The batched result writer outlives any failure of a flush and loses nothing it was given."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from dispatcher.writer import ResultWriter
from shared import ids
from shared.db import create_pool
from shared.repos.deliveries import Deferral
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
    key = (await tenant.create_key(scopes=["webhooks:write"]))["key"]
    assert (await api.post(f"{tenant.path}/webhook-endpoints", key=key,
                           json={"url": "https://w.example.com/"})).status == 201
    r = await publish(api, event(tenant.business_id, data=call("writer")))
    event_id = ids.decode("evt", r.body["events"][0]["id"])
    return await db.fetchval("UPDATE deliveries SET lease_owner = $2, lease_until = now() + interval '1 minute' "
                             "WHERE event_id = $1 RETURNING id", event_id, owner)


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
            writer.add_deferral(Deferral(delivery_id, later))

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
