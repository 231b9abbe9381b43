"""A whole delivery setup for a test: the API, a real worker, a real receiver and a business with a key."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import asyncpg

from tests.helpers import Api, Tenant
from tests.receiver import Receiver
from tests.test_publishing import call, event, publish

# Settings that make delivery tests quick: local receivers, short schedules, fast polling.
FAST: dict[str, Any] = {
    "allow_private_targets": True,
    "retry_schedule": (0.3, 0.3, 0.3),
    "replay_schedule": (0.3,),
    "delivery_timeout": 1.0,
    "worker_poll_s": 0.05,
    "circuit_failures": 1000,
    "circuit_timeouts": 1000,
}


def fast_settings(request: Any) -> dict[str, Any]:
    """FAST, with what the test's ``engine_settings`` marker changes (a pytest ``FixtureRequest``)."""
    values = dict(FAST)
    marker = request.node.get_closest_marker("engine_settings")
    if marker is not None:
        values.update(marker.kwargs)
    return values


async def _sleep(s: float) -> None:
    await asyncio.sleep(s)


@dataclass
class World:
    api: Api
    tenant: Tenant
    receiver: Receiver
    key: str
    db: asyncpg.Connection

    async def endpoint(self, path: str = "/ok", **body: Any) -> dict[str, Any]:
        r = await self.api.post(f"{self.tenant.path}/webhook-endpoints", key=self.key,
                                json={"url": self.receiver.url(path), **body})
        assert r.status == 201, r.body
        return r.body  # type: ignore[no-any-return]

    async def publish(self, type_: str = "call.started", data: dict[str, Any] | None = None) -> str:
        r = await publish(self.api, event(self.tenant.business_id, type_, data or call()))
        assert r.status == 202, r.body
        return r.body["events"][0]["id"]  # type: ignore[no-any-return]

    async def deliveries(self, endpoint_id: str) -> list[dict[str, Any]]:
        r = await self.api.get(f"{self.tenant.path}/webhook-endpoints/{endpoint_id}/deliveries?limit=100",
                               key=self.key)
        assert r.status == 200
        return r.body["data"]  # type: ignore[no-any-return]

    async def delivery(self, delivery_id: str) -> dict[str, Any]:
        r = await self.api.get(f"{self.tenant.path}/deliveries/{delivery_id}", key=self.key)
        assert r.status == 200, r.body
        return r.body  # type: ignore[no-any-return]

    async def delivery_settled(self, delivery_id: str, timeout_s: float = 15) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while (found := await self.delivery(delivery_id))["status"] == "pending":
            if time.monotonic() > deadline:
                raise AssertionError(f"not settled in {timeout_s} s: {found}")
            await _sleep(0.05)
        return found

    async def settled(self, endpoint_id: str, count: int = 1, timeout_s: float = 15) -> list[dict[str, Any]]:
        """Poll until ``count`` deliveries of the endpoint are no longer pending."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = await self.deliveries(endpoint_id)
            done = [d for d in found if d["status"] != "pending"]
            if len(done) >= count:
                return done
            if time.monotonic() > deadline:
                raise AssertionError(f"not settled in {timeout_s} s: {found}")
            await _sleep(0.05)
