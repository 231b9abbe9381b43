"""A worker's gauges, refreshed on a loop of their own (their aggregate queries never delay claims, sends or lease
renewals).

Each worker exports its own: held deliveries, the oldest one's age, requests in flight. The database-wide ones
(the queue depth, the per-endpoint backlog, lag, success rate and p95) are measured by one worker only, the one
holding the ``shared.repos.leadership`` lock, so that summing or alerting over every worker's ``/metrics``
counts each figure once and the aggregate queries run once a round, not once per worker. The lock is a
Postgres session lock rather than a Redis one: these figures come from Postgres, workers carry on without Redis,
and Postgres drops the lock the moment the holder's session ends, with no TTL to tune or renew. Every worker
asks each round, so when the holder stops or dies another takes over within a round; a worker that loses its
lock connection stops exporting the database-wide gauges at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from dispatcher.supervisor import Supervisor
from shared import db, ids, metrics
from shared.repos import handoff, leadership
from shared.repos import health as health_repo
from shared.settings import Settings

log = logging.getLogger("kaihooks.dispatcher")

QUERY_TIMEOUT_S = 10.0
# The lock connection tells Postgres to probe it: a holder whose machine vanished (no FIN, no RST) loses the lock
# after about 30 + 3 x 10 s instead of the kernel's two hours.
_KEEPALIVE = {"tcp_keepalives_idle": "30", "tcp_keepalives_interval": "10", "tcp_keepalives_count": "3",
              "application_name": "kaihooks-gauges"}


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
        self._lock_conn: asyncpg.Connection | None = None
        self._leading = False
        self._next_health = 0.0

    def start(self) -> None:
        self.supervisor.loop("gauges", self._loop)

    async def _loop(self) -> None:
        try:
            while True:
                await asyncio.sleep(self.settings.lease_s / 3)
                self._tidy()
                snap = self._snapshot()
                metrics.IN_FLIGHT.set(snap.in_flight)
                metrics.HELD.set(snap.held)
                metrics.OLDEST_HELD.set(snap.oldest_held_s)
                if await self._leads():
                    await self._export_database_wide()
        finally:
            self._resign()

    async def _leads(self) -> bool:
        """Whether this worker measures the database-wide gauges this round (it holds the lock, or takes it)."""
        try:
            if self._lock_conn is None or self._lock_conn.is_closed():
                self._lock_conn = None
                self._lock_conn = await asyncpg.connect(self.settings.database_url, timeout=QUERY_TIMEOUT_S,
                                                        server_settings=_KEEPALIVE)
            leads = await asyncio.wait_for(leadership.lead(self._lock_conn, leadership.GAUGES), QUERY_TIMEOUT_S)
        except db.ERRORS as exc:
            self.supervisor.complain("could not reach Postgres to settle which worker measures the queue", exc)
            self._resign()
            return False
        if self._leading and not leads:
            self._resign()
        elif leads and not self._leading:
            log.info("this worker now measures the database-wide gauges (queue depth, endpoint health)")
        self._leading = leads
        return leads

    def _resign(self) -> None:
        """Stop exporting the database-wide gauges and let go of the lock (closing its session releases it)."""
        if self._leading:
            metrics.DATABASE_WIDE.stop()
            log.info("this worker no longer measures the database-wide gauges")
        self._leading = False
        self._next_health = 0.0
        if self._lock_conn is not None:
            self._lock_conn.terminate()
            self._lock_conn = None

    async def _export_database_wide(self) -> None:
        try:
            metrics.QUEUE_DEPTH.set(await asyncio.wait_for(handoff.due_count(self.db), QUERY_TIMEOUT_S))
            metrics.DATABASE_WIDE.exported = True
            if time.monotonic() >= self._next_health:  # aggregate queries: not every time
                self._next_health = time.monotonic() + self.settings.endpoint_metrics_s
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
