"""Batched writes of the hot path: attempt rows, delivery outcomes and deferrals, a few statements per
flush (every few milliseconds, or sooner when many are waiting)."""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg

from shared import db
from shared.repos import deliveries as delivery_repo
from shared.repos.deliveries import AttemptResult, Deferral

log = logging.getLogger("kaihooks.dispatcher.writer")


class ResultWriter:
    def __init__(self, db: asyncpg.Pool, owner: str, flush_interval_s: float = 0.01, max_batch: int = 1000) -> None:
        self._db = db
        self._owner = owner
        self._interval = flush_interval_s
        self._max_batch = max_batch
        self._results: list[AttemptResult] = []
        self._deferrals: list[Deferral] = []
        self._wake = asyncio.Event()
        self._last_complaint = -1e9

    @property
    def pending(self) -> int:
        return len(self._results) + len(self._deferrals)

    def add_result(self, result: AttemptResult) -> None:
        self._results.append(result)
        self._queued()

    def add_deferral(self, deferral: Deferral) -> None:
        self._deferrals.append(deferral)
        self._queued()

    def _queued(self) -> None:
        if self.pending >= self._max_batch:
            self._wake.set()

    async def run(self) -> None:
        """Flush until cancelled."""
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self._interval)
            except TimeoutError:
                pass
            self._wake.clear()
            await self.flush()

    async def flush(self) -> bool:
        """Write what is waiting; False (and kept for the next flush) if Postgres refused."""
        if not self.pending:
            return True
        results, self._results = self._results, []
        deferrals, self._deferrals = self._deferrals, []
        try:
            async with self._db.acquire() as conn, conn.transaction():
                await delivery_repo.write_results(conn, self._owner, results, deferrals)
        except asyncio.CancelledError:
            # Cancelled mid-write (the worker is stopping): the transaction rolled back, so keep the
            # batch for the final drain rather than lose attempts and send their deliveries twice.
            self._results[:0] = results
            self._deferrals[:0] = deferrals
            raise
        except Exception as exc:  # this writer must outlive any failure: keep the batch and try again
            now = time.monotonic()
            if now - self._last_complaint > 30:  # once, then every 30 s while it lasts
                self._last_complaint = now
                log.log(logging.WARNING if isinstance(exc, db.ERRORS) else logging.ERROR,
                        "could not record delivery results; retrying", exc_info=True,
                        extra={"results": len(results), "deferrals": len(deferrals)})
            self._results[:0] = results
            self._deferrals[:0] = deferrals
            await asyncio.sleep(0.5)
            return False
        return True

    async def drain(self, timeout_s: float) -> None:
        """Flush until nothing is waiting (or the time is up)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self.pending and asyncio.get_running_loop().time() < deadline:
            await self.flush()
