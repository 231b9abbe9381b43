"""The engine never queues a delivery it already holds (claimed again after its lease lapsed under load)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import aiohttp

from dispatcher.engine import Engine
from shared.db import create_pool
from shared.repos.deliveries import Outbound
from shared.settings import Settings


async def test_a_delivery_claimed_again_while_held_is_not_queued_twice(settings: Settings) -> None:
    pool = await create_pool(settings, min_size=1, max_size=1)
    session = aiohttp.ClientSession()
    try:
        engine = Engine(settings, pool, session, "engine-test")
        held = Outbound(uuid.uuid4(), uuid.uuid4(), "call.started", uuid.uuid4(), datetime.now(UTC), "{}",
                        uuid.uuid4(), "https://a.example.com/", True, 0, "event", "normal", 0)
        engine.held.add(held.id)  # queued or in flight here already
        engine.take([held], {})
        assert engine.lanes == {} and engine.writer.pending == 0 and engine.in_flight == 0
    finally:
        await session.close()
        await pool.close()
