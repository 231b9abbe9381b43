"""The delivery engine's invariants, against real Postgres, Redis, a real worker and receivers on 127.0.0.1:
every claimed delivery settles, whatever a receiver answers or a tenant changes meanwhile, and the retry
schedule is a deadline. The first four tests are the regressions named in the engine's rebuild."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp
import asyncpg
import pytest

from dispatcher.engine import Engine
from shared import ids, metrics
from shared.db import create_pool
from shared.repos.handoff import Outbound
from shared.settings import Settings
from tests.helpers import Api, Tenant, until
from tests.test_delivery import verify_standard_webhook
from tests.test_publishing import call, event, publish
from tests.test_writer import _leased_delivery
from tests.world import World, fast_settings


@pytest.fixture
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    return fast_settings(request)


async def _publish_many(world: World, n: int, prefix: str) -> list[str]:
    r = await publish(world.api, {"events": [event(world.tenant.business_id, data=call(f"{prefix}-{i}"))
                                             for i in range(n)]})
    assert r.status == 202, r.body
    return [e["id"] for e in r.body["events"]]


async def _nothing_held(world: World) -> bool:
    """No delivery of the world's business is held by a worker."""
    return await world.db.fetchval("SELECT count(*) FROM deliveries WHERE lease_owner IS NOT NULL AND business_id = $1",
                                   ids.decode("biz", world.tenant.business_id)) == 0


def _counter(counter: Any, label: str) -> float:
    return float(counter.labels(label)._value.get())


async def test_an_odd_retry_after_header_does_not_stop_delivery(world: World) -> None:
    """A 429 with ``Retry-After: ²`` (``str.isdigit()`` is true, ``float()`` raises) is an attempt like any
    other: recorded, retried on the schedule (the header ignored), failed when the schedule is spent; the
    worker keeps delivering to everybody else and holds nothing afterwards."""
    odd = await world.endpoint("/retry-after/429/" + quote("²"))
    healthy = await world.endpoint("/ok")
    await _publish_many(world, 5, "odd")
    odd_done = await world.settled(odd["id"], 5, timeout_s=20)
    assert {d["status"] for d in odd_done} == {"failed"} and {d["attempt_count"] for d in odd_done} == {4}
    detail = await world.delivery(odd_done[0]["id"])
    assert [a["response_status"] for a in detail["attempts"]] == [429] * 4
    assert {a["error"] for a in detail["attempts"]} == {"http_status"}
    await world.settled(healthy["id"], 5)
    await until(lambda: _nothing_held(world), 10, "the worker holds nothing once everything settled")
    # ...and it still claims: a new event is delivered.
    await world.publish()
    await world.settled(healthy["id"], 6)


async def test_deleting_an_endpoint_with_a_delivery_in_flight_does_not_wedge_the_writer(world: World) -> None:
    """The delivery is deleted with its endpoint while its request is on the wire: its result is dropped
    (counted, logged) and every later result is still written."""
    doomed = await world.endpoint("/slow/700/doomed")
    healthy = await world.endpoint("/ok/after-delete")
    dropped_before = _counter(metrics.RESULTS_DROPPED, "vanished")
    await world.publish(data=call("in-flight"))
    await world.receiver.wait_for(1, "/slow/700/doomed")
    r = await world.api.delete(f"{world.tenant.path}/webhook-endpoints/{doomed['id']}", key=world.key)
    assert r.status == 204, r.body
    await until(lambda: _counter(metrics.RESULTS_DROPPED, "vanished") > dropped_before, 10,
                "the in-flight result was dropped as vanished")
    await _publish_many(world, 10, "after-delete")
    done = await world.settled(healthy["id"], 11, timeout_s=10)
    assert {d["status"] for d in done} == {"succeeded"}


async def test_disabling_an_endpoint_stops_what_the_worker_already_queued(world: World) -> None:
    """All 40 fit in the endpoint's lane at once (no hand-back, no new claim would notice the change)."""
    ep = await world.endpoint("/slow/200/disable")
    await _publish_many(world, 40, "disable")
    await world.receiver.wait_for(1, "/slow/200/disable")
    r = await world.api.patch(f"{world.tenant.path}/webhook-endpoints/{ep['id']}", key=world.key,
                              json={"enabled": False})
    assert r.status == 200, r.body
    patched_at = time.monotonic()
    done = await world.settled(ep["id"], 40)
    late = [g for g in world.receiver.at("/slow/200/disable") if g.at > patched_at]
    # At most those in flight (slow start: 2 at first, one more per success) and one racing the notification.
    assert len(late) <= 5, f"{len(late)} requests began after the endpoint was disabled"
    failed = [d for d in done if d["status"] == "failed"]
    assert len(failed) >= 30 and {d["last_error"] for d in failed} == {"endpoint disabled"}


async def test_a_new_url_or_secret_applies_to_deliveries_already_queued(world: World) -> None:
    ep = await world.endpoint("/slow/150/old-url")
    await _publish_many(world, 30, "repoint")
    await world.receiver.wait_for(1, "/slow/150/old-url")
    r = await world.api.patch(f"{world.tenant.path}/webhook-endpoints/{ep['id']}", key=world.key,
                              json={"url": world.receiver.url("/slow/150/new-url")})
    assert r.status == 200, r.body
    patched_at = time.monotonic()
    await world.receiver.wait_for(2, "/slow/150/new-url")
    r = await world.api.post(f"{world.tenant.path}/webhook-endpoints/{ep['id']}/secret/rotate", key=world.key,
                             json={"grace_seconds": 0})
    assert r.status == 200, r.body
    rotated_at, new_secret = time.monotonic(), r.body["secret"]
    done = await world.settled(ep["id"], 30)
    assert {d["status"] for d in done} == {"succeeded"}
    old_late = [g for g in world.receiver.at("/slow/150/old-url") if g.at > patched_at]
    assert len(old_late) <= 5, f"{len(old_late)} requests went to the old URL after the change"
    after_rotation = [g for g in world.receiver.at("/slow/150/new-url") if g.at > rotated_at]
    signed_new = [g for g in after_rotation
                  if verify_standard_webhook(new_secret, {k.lower(): v for k, v in g.headers.items()}, g.body)]
    assert len(after_rotation) >= 10 and len(after_rotation) - len(signed_new) <= 5, \
        f"{len(after_rotation) - len(signed_new)} of {len(after_rotation)} were not signed with the new secret"


@pytest.mark.engine_settings(retry_schedule=(1.0, 1.0, 2.0), circuit_failures=5, circuit_timeouts=2,
                             circuit_open_s=30.0)
async def test_the_breaker_does_not_extend_the_retry_schedule(world: World) -> None:
    """An always-500 endpoint trips its breaker (30 s pauses); its deliveries are failed by their deadline
    (created + 4 s), not after the pauses: within about 10 s, saying why when it came during a pause."""
    ep = await world.endpoint("/status/500")
    started = time.monotonic()
    await _publish_many(world, 12, "deadline")
    done = await world.settled(ep["id"], 12, timeout_s=15)
    took = time.monotonic() - started
    assert took < 10, f"the last delivery failed {took:.1f} s after publishing"
    assert {d["status"] for d in done} == {"failed"}
    paused = [d for d in done if (d["last_error"] or "").startswith("endpoint paused after ")]
    assert paused, [d["last_error"] for d in done]
    assert all(d["attempt_count"] <= 4 for d in done)


# ---- without a worker: the engine's own bookkeeping ------------------------------------------------------

def _outbound(**over: Any) -> Outbound:
    values: dict[str, Any] = dict(
        id=uuid.uuid4(), event_id=uuid.uuid4(), event_type="call.started", business_id=uuid.uuid4(),
        occurred_at=datetime.now(UTC), data_json="{}", endpoint_id=uuid.uuid4(), url="https://a.example.com/",
        enabled=True, attempt_count=0, trigger="scheduled", schedule="normal", schedule_start=0,
        created_at=datetime.now(UTC), deadline_at=None, paused_until=None, failure_streak=0, failing_since=None)
    values.update(over)
    return Outbound(**values)


async def test_a_delivery_claimed_again_while_held_is_not_queued_twice(settings: Settings) -> None:
    pool = await create_pool(settings, min_size=1, max_size=1)
    session = aiohttp.ClientSession()
    try:
        engine = Engine(settings, pool, session, "engine-test")
        held = _outbound()
        engine.held[held.id] = time.monotonic()  # queued, in flight or being recorded here already
        engine.take([held], {}, time.monotonic())
        assert engine.lanes == {} and engine.writer.pending == 0 and engine.in_flight == 0
    finally:
        await session.close()
        await pool.close()


async def test_a_change_heard_while_a_claim_ran_makes_the_lane_read_the_endpoint_again(settings: Settings) -> None:
    """The claim may have read the endpoint before the change committed: its lane sends nothing until it has
    read the endpoint afresh (here it is gone: the delivery is dropped, nothing is sent)."""
    pool = await create_pool(settings, min_size=1, max_size=1)
    session = aiohttp.ClientSession()
    try:
        engine = Engine(settings, pool, session, "engine-test")
        o = _outbound()
        claim_started = time.monotonic()
        engine.endpoint_changed(o.endpoint_id)
        engine.take([o], {o.endpoint_id: []}, claim_started)
        lane = engine.lanes[o.endpoint_id]
        assert lane.stale and engine.in_flight == 0
        await until(lambda: lane.gone and not engine.held, 5, "the lane found its endpoint gone and let go")
        assert engine.in_flight == 0
    finally:
        await engine.supervisor.finish_work(1)
        await session.close()
        await pool.close()


async def test_the_worker_still_claims_while_a_receiver_hangs_and_answers_garbage(world: World) -> None:
    """Mixed hostile answers at once; each delivery settles, the healthy endpoint gets everything."""
    paths = ["/hang", "/reset", "/trickle", "/redirect", "/big", "/retry-after/503/" + quote("Wed, 99 Foo 2026"),
             "/retry-after/429/-1", "/retry-after/503/NaN", "/retry-after/429/" + quote("١٢")]
    hostile = [await world.endpoint(p) for p in paths]
    healthy = await world.endpoint("/ok/hostile")
    await _publish_many(world, 3, "hostile")
    for ep in hostile:
        done = await world.settled(ep["id"], 3, timeout_s=30)
        assert {d["status"] for d in done} == {"failed"}, (ep["url"], done)
    await world.settled(healthy["id"], 3)
    await until(lambda: _nothing_held(world), 10, "nothing held once settled")


async def test_leases_are_renewed_while_the_workers_pool_is_busy(
        settings: Settings, db: asyncpg.Connection, tenant: Tenant, api: Api) -> None:
    """Every connection of the engine's pool is taken by a slow query: the leases it holds are renewed all the
    same (on a connection of the renewal's own), so they never lapse under a live worker."""
    owner = "lease-test"
    delivery_id = await _leased_delivery(tenant, api, db, owner)
    first = await db.fetchval("UPDATE deliveries SET lease_until = now() + interval '1.5 s' WHERE id = $1 "
                              "RETURNING lease_until", delivery_id)
    short = settings.model_copy(update={"lease_s": 1.5})
    pool = await create_pool(short, min_size=1, max_size=1)
    session = aiohttp.ClientSession()
    engine = Engine(short, pool, session, owner)
    engine.held[delivery_id] = time.monotonic()
    try:
        async with pool.acquire() as busy:
            blocker = asyncio.create_task(busy.execute("SELECT pg_sleep(4)"))
            engine.supervisor.loop("leases", engine.intake.keep_leases)

            async def renewed() -> bool:
                return bool(await db.fetchval("SELECT lease_until FROM deliveries WHERE id = $1", delivery_id) > first)

            await until(renewed, 3, "the lease was renewed while the pool was busy")
            assert not blocker.done(), "the pool was not busy all along"
            await blocker
    finally:
        await engine.supervisor.stop()
        await session.close()
        await pool.close()
