"""The record stage: the batched writer of attempts, verdicts, hand-backs and unsent settlements.

A few statements per flush (every few milliseconds, or sooner when many wait). It never stalls on one bad
row: while Postgres is unavailable it keeps the batch and tries again; any other failure is isolated by
writing the batch in halves until the row that fails is alone; a row that fails alone in three flushes is
logged and dropped (its delivery's lease then lapses and it is sent again: at least once, never lost).
A result whose delivery no longer exists is dropped and logged. ``on_written`` hears of every delivery
whose record is settled one way or the other: the engine holds (and renews the lease of) a delivery
until then.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from dispatcher.outcome import Outcome, Verdict
from shared import db, ids, metrics
from shared.repos import delivery_results
from shared.repos.delivery_results import AttemptResult, Deferral, Settlement
from shared.repos.handoff import Outbound

log = logging.getLogger("kaihooks.dispatcher.writer")

Record = AttemptResult | Deferral | Settlement
RETRY_AFTER_S = 0.5  # after Postgres refused a flush
STRIKES = 3  # flushes a row may fail alone (any error but unavailability) before it is dropped


@dataclass(slots=True)
class _Batch:
    results: list[AttemptResult] = field(default_factory=list)
    deferrals: list[Deferral] = field(default_factory=list)
    settlements: list[Settlement] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.results) + len(self.deferrals) + len(self.settlements)

    def items(self) -> list[Record]:
        return [*self.results, *self.deferrals, *self.settlements]

    @classmethod
    def of(cls, items: Sequence[Record]) -> _Batch:
        batch = cls()
        for item in items:
            batch.add(item)
        return batch

    def add(self, item: Record) -> None:
        if isinstance(item, AttemptResult):
            self.results.append(item)
        elif isinstance(item, Deferral):
            self.deferrals.append(item)
        else:
            self.settlements.append(item)


class ResultWriter:
    def __init__(self, pool: asyncpg.Pool, owner: str, on_written: Callable[[list[uuid.UUID]], None] | None = None,
                 flush_interval_s: float = 0.01, max_batch: int = 1000) -> None:
        self._db = pool
        self._owner = owner
        self._on_written = on_written or (lambda _ids: None)
        self._interval = flush_interval_s
        self._max_batch = max_batch
        self._batch = _Batch()
        self._strikes: dict[uuid.UUID, int] = {}
        self._wake = asyncio.Event()
        self._last_complaint = -1e9

    @property
    def pending(self) -> int:
        return len(self._batch)

    def add(self, item: Record) -> None:
        self._batch.add(item)
        if len(self._batch) >= self._max_batch:
            self._wake.set()

    def attempt(self, o: Outbound, result: Outcome, verdict: Verdict, started_at: datetime, url: str) -> None:
        """Record an attempt and what it means for its delivery (and log a failed one with its reason)."""
        metrics.ATTEMPT_SECONDS.labels(metrics.result_class(result.status)).observe(result.duration_ms / 1000)
        metrics.ATTEMPTS.labels("retrying" if verdict.status == "pending" else verdict.status).inc()
        self.add(AttemptResult(
            delivery_id=o.id, endpoint_id=o.endpoint_id, started_at=started_at, duration_ms=result.duration_ms,
            response_status=result.status, response_body=result.body_excerpt, error=result.error,
            error_kind=result.error_kind, trigger=o.trigger, url=url, status=verdict.status,
            next_attempt_at=verdict.next_attempt_at, succeeded=result.ok))
        if not result.ok:
            log.info("delivery attempt failed", extra={
                "delivery_id": ids.encode("dlv", o.id), "event_id": ids.encode("evt", o.event_id),
                "endpoint_id": ids.encode("ep", o.endpoint_id), "business_id": ids.encode("biz", o.business_id),
                "attempt": o.attempt_count + 1, "error_kind": result.error_kind, "reason": result.error,
                "status": verdict.status})

    def defer(self, delivery_id: uuid.UUID, at: datetime, reason: str) -> None:
        """Hand a delivery back unsent (no attempt spent), due at ``at``; ``reason`` labels the count."""
        metrics.DEFERRALS.labels(reason).inc()
        self.add(Deferral(delivery_id, at))

    def fail_unsent(self, deliveries: Sequence[Outbound], reasons: Sequence[str], exhausted: bool) -> None:
        """Fail deliveries without a send, each with its reason (logged: at most 20 ids per line)."""
        for o, reason in zip(deliveries, reasons, strict=True):
            self.add(Settlement(o.id, o.endpoint_id, reason, exhausted))
        if deliveries:
            metrics.FAILED_UNSENT.labels("deadline_passed" if exhausted else "endpoint_disabled").inc(len(deliveries))
            log.info("deliveries failed unsent", extra={
                "endpoint_id": ids.encode("ep", deliveries[0].endpoint_id), "reason": reasons[0],
                "delivery_ids": [ids.encode("dlv", o.id) for o in deliveries[:20]], "count": len(deliveries)})

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
        """Write what is waiting; False if Postgres was unavailable (what is left is kept for the next)."""
        if not self._batch:
            return True
        batch, self._batch = self._batch, _Batch()
        try:
            left = await self._write(batch)
        except asyncio.CancelledError:
            # Cancelled mid-write (the worker is stopping): the transaction rolled back, so keep the batch
            # for the final drain rather than lose attempts and send their deliveries twice.
            self._keep(batch.items())
            raise
        if left:
            self._keep(left)
            await asyncio.sleep(RETRY_AFTER_S)
            return False
        return True

    def _keep(self, items: Sequence[Record]) -> None:
        kept = self._batch
        self._batch = _Batch.of(items)
        for item in kept.items():
            self._batch.add(item)

    async def _write(self, batch: _Batch) -> list[Record]:
        """Write ``batch``, isolating a failing row; returns what could not be written for want of Postgres."""
        try:
            async with self._db.acquire() as conn, conn.transaction():
                written = await delivery_results.write_results(conn, self._owner, batch.results, batch.deferrals,
                                                               batch.settlements)
        except db.UNAVAILABLE as exc:
            metrics.WRITER_FLUSH_FAILURES.labels("unavailable").inc()
            self._complain("could not record delivery results (Postgres unavailable?); retrying", exc, len(batch))
            return batch.items()
        except Exception as exc:
            metrics.WRITER_FLUSH_FAILURES.labels("rejected").inc()
            items = batch.items()
            if len(items) == 1:
                strikes = self._strikes[items[0].delivery_id] = self._strikes.get(items[0].delivery_id, 0) + 1
                if strikes < STRIKES:
                    self._complain("a delivery result was refused; trying it again", exc, 1)
                    return items
                del self._strikes[items[0].delivery_id]
                self._drop(items[0], exc)
                return []
            half = len(items) // 2
            left = await self._write(_Batch.of(items[:half]))
            return left + (await self._write(_Batch.of(items[half:])) if not left else items[half:])
        if written.vanished:
            metrics.RESULTS_DROPPED.labels("vanished").inc(len(written.vanished))
            log.info("results dropped: their deliveries no longer exist (endpoint deleted)",
                     extra={"delivery_ids": [ids.encode("dlv", d) for d in written.vanished[:20]],
                            "count": len(written.vanished)})
        done = [r.delivery_id for r in batch.results] + [d.delivery_id for d in batch.deferrals] + \
            [s.delivery_id for s in batch.settlements]
        if self._strikes:
            for delivery_id in done:
                self._strikes.pop(delivery_id, None)
        self._on_written(done)
        return []

    def _drop(self, item: Record, exc: BaseException) -> None:
        metrics.RESULTS_DROPPED.labels("rejected").inc()
        log.error("a delivery result was refused by Postgres and dropped; the delivery will be sent again",
                  exc_info=exc, extra={"delivery_id": ids.encode("dlv", item.delivery_id),
                                       "record": type(item).__name__})
        self._on_written([item.delivery_id])

    def _complain(self, message: str, exc: BaseException, size: int) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._last_complaint > 30:  # once, then every 30 s while it lasts
            self._last_complaint = now
            log.warning(message, exc_info=exc, extra={"records": size})

    async def drain(self, timeout_s: float) -> None:
        """Flush until nothing is waiting (or the time is up)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self.pending and asyncio.get_running_loop().time() < deadline:
            await self.flush()
