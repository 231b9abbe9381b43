"""Recover's limits: a window no longer than retention, a cap on what one run re-sends, one running run per
endpoint, and the work done in Postgres (set-based) rather than in the API's memory."""

from __future__ import annotations

import asyncio
import itertools
import tracemalloc
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from shared import ids, recovery
from shared.db import create_pool
from shared.settings import Settings
from tests.helpers import Api, Tenant, ago
from tests.test_publishing import call, event, publish


@pytest.fixture(autouse=True)
async def _leave_no_work(database_url: str) -> AsyncIterator[None]:
    """Nothing here runs a worker: settle what a test made due, so that no later test's worker sends it."""
    conn = await asyncpg.connect(database_url)
    started = await conn.fetchval("SELECT now()")
    yield
    await conn.execute("""UPDATE deliveries SET status = 'failed', next_attempt_at = NULL, lease_until = NULL
                          WHERE status = 'pending' AND updated_at >= $1""", started)
    await conn.close()


async def _endpoint_with_failures(tenant: Tenant, api: Api, db: asyncpg.Connection, key: str, count: int,
                                  ) -> str:
    """An endpoint with ``count`` failed deliveries, as the worker leaves them when their schedule is spent."""
    ep = await api.post(f"{tenant.path}/webhook-endpoints", key=key, json={"url": "https://hooks.example.com/r"})
    assert ep.status == 201, ep.body
    if count:
        r = await publish(api, {"events": [event(tenant.business_id, data=call(f"c{i}")) for i in range(count)]})
        assert r.status == 202, r.body
    await db.execute("""UPDATE deliveries SET status = 'failed', next_attempt_at = NULL, attempt_count = 1,
                               last_response_status = 500 WHERE endpoint_id = $1""", ids.decode("ep", ep.body["id"]))
    return str(ep.body["id"])


@pytest.fixture
async def key(tenant: Tenant) -> str:
    return str((await tenant.create_key(scopes=["webhooks:read", "webhooks:write"]))["key"])


async def test_a_window_longer_than_retention_is_422(tenant: Tenant, api: Api, db: asyncpg.Connection,
                                                     key: str) -> None:
    endpoint = await _endpoint_with_failures(tenant, api, db, key, 2)
    recover = f"{tenant.path}/webhook-endpoints/{endpoint}/recover"
    for body in [{"since": ago(days=31)}, {"since": ago(days=31), "dry_run": True},
                 {"since": "2020-01-01T00:00:00Z", "until": "2020-02-01T00:00:01Z"}]:
        r = await api.post(recover, key=key, json=body)
        assert r.status == 422 and r.problem["code"] == "validation_error", (body, r.body)
        assert r.problem["errors"][0]["loc"] == ["body", "since"]
        assert "30 days" in r.problem["detail"], r.problem  # names the limit
    assert await db.fetchval("SELECT count(*) FROM recover_jobs WHERE endpoint_id = $1",
                             ids.decode("ep", endpoint)) == 0
    r = await api.post(recover, key=key, json={"since": ago(days=29)})
    assert r.status == 202 and r.body["count"] == 2, r.body


@pytest.mark.parametrize("settings_overrides", [{"max_recover_deliveries": 5}])
async def test_a_run_over_the_cap_is_422_and_changes_nothing(tenant: Tenant, api: Api, db: asyncpg.Connection,
                                                             key: str) -> None:
    endpoint = await _endpoint_with_failures(tenant, api, db, key, 6)
    endpoint_id = ids.decode("ep", endpoint)
    recover = f"{tenant.path}/webhook-endpoints/{endpoint}/recover"
    dry = await api.post(recover, key=key, json={"since": ago(hours=1), "dry_run": True})
    assert dry.status == 200 and (dry.body["count"], dry.body["max_count"]) == (6, 5), dry.body
    r = await api.post(recover, key=key, json={"since": ago(hours=1)})
    assert r.status == 422 and r.problem["code"] == "validation_error", r.body
    assert "5" in r.problem["detail"] and "narrow" in r.problem["detail"], r.problem
    assert await db.fetchval("SELECT count(*) FROM deliveries WHERE endpoint_id = $1 AND status = 'failed'",
                             endpoint_id) == 6
    assert await db.fetchval("SELECT count(*) FROM recover_jobs WHERE endpoint_id = $1", endpoint_id) == 0
    # Narrowed: one of them is older than the window.
    await db.execute("""UPDATE deliveries SET created_at = created_at - interval '2 hours'
                        WHERE id = (SELECT id FROM deliveries WHERE endpoint_id = $1 LIMIT 1)""", endpoint_id)
    r = await api.post(recover, key=key, json={"since": ago(hours=1)})
    assert r.status == 202 and r.body["count"] == 5, r.body


async def test_one_running_recover_per_endpoint(tenant: Tenant, api: Api, db: asyncpg.Connection, key: str) -> None:
    endpoint = await _endpoint_with_failures(tenant, api, db, key, 3)
    other = await _endpoint_with_failures(tenant, api, db, key, 0)
    recover = f"{tenant.path}/webhook-endpoints/{endpoint}/recover"
    body = {"since": ago(hours=1), "rate": 0.01}  # 100 s apart: it runs for minutes
    first = await api.post(recover, key=key, json=body)
    assert first.status == 202, first.body
    job = first.body["job_id"]
    again = await api.post(recover, key=key, json=body)
    assert again.status == 409 and again.problem["code"] == "conflict", again.body
    assert again.problem["job_id"] == job and job in again.problem["detail"]
    assert (await api.post(recover, key=key, json={**body, "dry_run": True})).status == 200  # counting is fine
    elsewhere = await api.post(f"{tenant.path}/webhook-endpoints/{other}/recover", key=key, json=body)
    assert elsewhere.status == 202, elsewhere.body  # another endpoint's run is its own
    cancelled = await api.post(f"{tenant.path}/recover-jobs/{job}/cancel", key=key)
    assert cancelled.status == 200 and cancelled.body["status"] == "cancelled"

    # Several at once: exactly one starts; the others name it.
    answers = await asyncio.gather(*[api.post(recover, key=key, json=body) for _ in range(6)])
    assert sorted(r.status for r in answers) == [202] + [409] * 5, [(r.status, r.body) for r in answers]
    [started] = [r.body["job_id"] for r in answers if r.status == 202]
    assert {r.problem["job_id"] for r in answers if r.status == 409} == {started}
    assert await db.fetchval("SELECT count(*) FROM recover_jobs WHERE endpoint_id = $1 AND status = 'running'",
                             ids.decode("ep", endpoint)) == 1


async def test_a_finished_run_nobody_watched_does_not_block_the_next(tenant: Tenant, api: Api,
                                                                      db: asyncpg.Connection, key: str) -> None:
    endpoint = await _endpoint_with_failures(tenant, api, db, key, 2)
    recover = f"{tenant.path}/webhook-endpoints/{endpoint}/recover"
    first = await api.post(recover, key=key, json={"since": ago(hours=1)})
    assert first.status == 202, first.body
    # Its deliveries were sent and failed again (as a worker would record it); nobody asked how the run stands,
    # so its row still says running.
    await db.execute("""UPDATE deliveries SET status = 'failed', next_attempt_at = NULL,
                               attempt_count = attempt_count + 1 WHERE endpoint_id = $1""", ids.decode("ep", endpoint))
    second = await api.post(recover, key=key, json={"since": ago(hours=1)})
    assert second.status == 202 and second.body["count"] == 2, second.body
    status = await api.get(f"{tenant.path}/recover-jobs/{first.body['job_id']}", key=key)
    assert status.body["status"] == "done"


@pytest.mark.parametrize("settings_overrides", [{"max_recover_deliveries": 100_000}])
async def test_recover_is_done_in_postgres_not_in_the_api_memory(tenant: Tenant, api: Api, db: asyncpg.Connection,
                                                                 key: str, settings: Settings) -> None:
    """20,000 failed deliveries: planning and starting the run hold no per-delivery data in the process."""
    count = 20_000
    endpoint = await _endpoint_with_failures(tenant, api, db, key, 0)
    endpoint_id, business_id = ids.decode("ep", endpoint), ids.decode("biz", tenant.business_id)
    await db.execute(
        """WITH e AS (INSERT INTO events (id, business_id, type, data, occurred_at, fanned_out_at)
                      SELECT kaihooks_uuid7(), $2, 'call.started', '{}', now(), now() FROM generate_series(1, $3)
                      RETURNING id, business_id, type)
           INSERT INTO deliveries (event_id, endpoint_id, business_id, event_type, status, attempt_count,
                                   last_response_status)
           SELECT id, $1, business_id, type, 'failed', 1, 500 FROM e""",
        endpoint_id, business_id, count)
    since = datetime.now(UTC) - timedelta(hours=1)
    pool = await create_pool(settings, min_size=1, max_size=2)
    try:
        tracemalloc.start()
        try:
            plan = await recovery.plan(pool, settings, endpoint_id, since=since, until=None, include_missed=True)
            job = await recovery.start(pool, settings, endpoint_id, since=since, until=None, include_missed=False,
                                       rate_per_s=1000, actor="test", audit_actor={})
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    finally:
        await pool.close()
    assert plan.count == count and job.total == count
    assert peak < 1_000_000, f"peak {peak / 1e6:.1f} MB for {count} deliveries"
    due = await db.fetch("""SELECT next_attempt_at FROM deliveries WHERE recover_job_id = $1
                            ORDER BY created_at, id""", job.id)
    gaps = {round((b["next_attempt_at"] - a["next_attempt_at"]).total_seconds(), 4) for a, b in itertools.pairwise(due)}
    assert gaps == {0.001}, gaps  # paced: one every 1/rate seconds, oldest first
