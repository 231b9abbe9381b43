"""A worker's own gauges (held deliveries, the oldest one's age, requests in flight, the queue depth) and the
per-endpoint health gauges, refreshed on a loop of their own: their aggregate queries never delay claims,
sends or lease renewals."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from dispatcher.supervisor import Supervisor
from shared import db, ids, metrics
from shared.repos import handoff
from shared.repos import health as health_repo
from shared.settings import Settings

QUERY_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Snapshot:
    held: int
    oldest_held_s: float
    in_flight: int


class Gauges:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, supervisor: Supervisor,
                 snapshot: Callable[[], Snapshot], tidy: Callable[[], None]) -> None:
        self.settings = settings
        self.db = pool
        self.supervisor = supervisor
        self._snapshot = snapshot
        self._tidy = tidy

    def start(self) -> None:
        self.supervisor.loop("gauges", self._loop)

    async def _loop(self) -> None:
        next_health = 0.0
        while True:
            await asyncio.sleep(self.settings.lease_s / 3)
            self._tidy()
            snap = self._snapshot()
            metrics.IN_FLIGHT.set(snap.in_flight)
            metrics.HELD.set(snap.held)
            metrics.OLDEST_HELD.set(snap.oldest_held_s)
            try:
                metrics.QUEUE_DEPTH.set(await asyncio.wait_for(handoff.due_count(self.db), QUERY_TIMEOUT_S))
                if time.monotonic() >= next_health:  # aggregate queries: not every time
                    next_health = time.monotonic() + self.settings.endpoint_metrics_s
                    await asyncio.wait_for(self._export_endpoint_health(), QUERY_TIMEOUT_S * 3)
            except db.ERRORS as exc:
                self.supervisor.complain("could not measure the queue depth or endpoint health", exc)

    async def _export_endpoint_health(self) -> None:
        """Endpoint health as metrics (bounded label sets): backlog and lag of the endpoints furthest behind,
        success rate and p95 over the last five minutes of the busiest."""
        behind = await health_repo.most_behind(self.db)
        metrics.ENDPOINT_BACKLOG.clear()
        metrics.ENDPOINT_LAG.clear()
        for endpoint_id, backlog, lag_s in behind:
            label = ids.encode("ep", endpoint_id)
            metrics.ENDPOINT_BACKLOG.labels(label).set(backlog)
            metrics.ENDPOINT_LAG.labels(label).set(lag_s)
        busiest = await health_repo.busiest(self.db)
        metrics.ENDPOINT_SUCCESS.clear()
        metrics.ENDPOINT_P95.clear()
        for endpoint_id, ok, p95_ms in busiest:
            label = ids.encode("ep", endpoint_id)
            metrics.ENDPOINT_SUCCESS.labels(label).set(ok)
            metrics.ENDPOINT_P95.labels(label).set(p95_ms / 1000)
