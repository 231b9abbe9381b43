"""How workers hear that deliveries are due: the API publishes a wake-up on Redis once a batch that made
deliveries has committed, and workers claim at once; Postgres polling (``KAIHOOKS_WORKER_POLL_S``) is the
fallback that keeps deliveries going while Redis is away. The Redis here is this test's own server."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import pytest
import redis

from shared.repos.handoff import wake_channel
from shared.settings import Settings
from tests.helpers import INTERNAL_TOKEN, until
from tests.test_delivery_reliability import PrivateRedis
from tests.test_publishing import call
from tests.world import FAST, World

SLOW_POLL_S = 60.0  # far longer than any test here: a quick delivery can only come from a wake-up
QUICK_S = 1.0  # publish -> receipt when woken (tens of milliseconds on a quiet machine)


@pytest.fixture
def settings_overrides(request: pytest.FixtureRequest, own_redis: PrivateRedis) -> dict[str, Any]:
    values = {**FAST, "worker_poll_s": SLOW_POLL_S, "REDIS_URL": own_redis.url}
    marker = request.node.get_closest_marker("engine_settings")
    if marker is not None:
        values.update(marker.kwargs)
    return values


def _subscribers(server: PrivateRedis, settings: Settings) -> int:
    client = redis.Redis(port=server.port)
    try:
        channel = wake_channel(settings.queue_name)
        return int(dict(client.pubsub_numsub(channel))[channel.encode()])
    finally:
        client.close()


async def _publish_and_time(world: World, path: str, n: int) -> float:
    """Publish one event; seconds until the receiver has its ``n``-th request at ``path``."""
    started = time.monotonic()
    await world.publish(data=call(f"call_wake_{n}"))
    arrived = await world.receiver.wait_for(n, path, timeout_s=SLOW_POLL_S / 2)
    return arrived[n - 1].at - started


async def _wake_failures(world: World) -> float:
    text = (await world.api.get("/metrics", key=INTERNAL_TOKEN)).raw.decode()
    m = re.search(r'^kaihooks_redis_failures_total{kind="unreachable",use="wake"} ([0-9.e+]+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


async def test_a_publish_wakes_the_worker_through_redis_and_it_claims_at_once(
    world: World, own_redis: PrivateRedis, settings: Settings
) -> None:
    """The worker polls only once a minute here, so every quick delivery is the wake-up's doing; and a worker
    that lost its subscription subscribes again when Redis comes back, and claims what was missed."""
    await world.endpoint("/ok")
    await until(lambda: _subscribers(own_redis, settings) == 1, 10, "the worker subscribed to the wake channel")

    took = [await _publish_and_time(world, "/ok", n) for n in range(1, 6)]
    assert max(took) < QUICK_S, took

    # Redis goes away: publishing goes on (the wake-up is lost, and counted), nothing is sent meanwhile.
    own_redis.stop()
    before = await _wake_failures(world)
    await world.publish(data=call("call_while_redis_is_down"))
    assert await _wake_failures(world) == before + 1
    await asyncio.sleep(QUICK_S)  # what a wake-up would have delivered by now
    assert len(world.receiver.at("/ok")) == 5

    # Redis is back (empty): the worker subscribes again, claims what was published meanwhile, and is woken
    # by the next publish as before.
    restarted = time.monotonic()
    own_redis.start_empty()
    missed = (await world.receiver.wait_for(6, "/ok", timeout_s=15))[5]
    assert missed.at > restarted
    await until(lambda: _subscribers(own_redis, settings) == 1, 10, "the worker subscribed again")
    assert await _publish_and_time(world, "/ok", 7) < QUICK_S


@pytest.mark.engine_settings(worker_poll_s=0.3)
async def test_deliveries_go_out_by_polling_while_redis_is_down(world: World, own_redis: PrivateRedis) -> None:
    """No wake-up can reach the worker while Redis is down: the poll of Postgres finds the deliveries."""
    ep = await world.endpoint("/ok")
    own_redis.stop()
    before = await _wake_failures(world)
    for n in range(3):
        await world.publish(data=call(f"call_polled_{n}"))
    assert await _wake_failures(world) == before + 3  # the API could not wake anyone, and said so
    await world.receiver.wait_for(3, "/ok", timeout_s=10)
    settled = await world.settled(ep["id"], count=3)
    assert {d["status"] for d in settled} == {"succeeded"}
