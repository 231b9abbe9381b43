"""The delivery engine of one worker process.

Deliveries reach it in batches claimed from Postgres (due, and leased to this worker): at once when
Postgres notifies that new ones are due (events are fanned out as they are stored), and at every
poll. Every endpoint has its own lane: a queue, a cap on requests in flight, and a circuit breaker.
A slow or dead endpoint therefore fills only its own lane; the global slots stay free for the
healthy ones. Outcomes go to the batched writer.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import orjson
from cryptography.exceptions import InvalidTag

from dispatcher import http
from dispatcher.writer import ResultWriter
from shared import db, ids, metrics, signing
from shared.models import DeliveryStatus
from shared.repos import audit
from shared.repos import deliveries as delivery_repo
from shared.repos import endpoints as endpoint_repo
from shared.repos import health as health_repo
from shared.repos.deliveries import AttemptResult, Deferral, Outbound
from shared.secrets_box import Sealed, SecretBox, secret_bytes
from shared.settings import Settings

log = logging.getLogger("kaihooks.dispatcher")

_MAX_CLAIM = 500
UNFANNED_GRACE_S = 5.0  # events are fanned out as they are stored; any left after this are swept
SWEEP_EVERY_S = 5.0
LISTEN_RETRY_S = 2.0
_MAX_CIRCUIT_OPEN_S = 600.0


@dataclass(slots=True)
class Job:
    delivery: Outbound
    body: bytes
    msg_id: str


@dataclass(slots=True)
class Lane:
    """One endpoint, as this worker sees it."""

    endpoint_id: uuid.UUID
    business_id: uuid.UUID
    url: str
    enabled: bool
    secrets: list[tuple[bytes, datetime | None]] = field(default_factory=list)
    queue: collections.deque[Job] = field(default_factory=collections.deque)
    in_flight: int = 0
    cap: int = 1
    failures: int = 0  # consecutive
    timeouts: int = 0  # consecutive
    open_until: float = 0.0  # monotonic; the breaker is open before it
    open_s: float = 0.0
    slow: bool = False  # its last failure was a timeout, and it has not answered in time since


class Engine:
    def __init__(self, settings: Settings, db: asyncpg.Pool, session: aiohttp.ClientSession, owner: str) -> None:
        self.settings = settings
        self.db = db
        self.session = session
        self.owner = owner
        self.writer = ResultWriter(db, owner)
        self.box = SecretBox(settings.secret_key_bytes, settings.old_secret_keys_bytes)
        self.lanes: dict[uuid.UUID, Lane] = {}
        self.held: set[uuid.UUID] = set()
        self.in_flight = 0
        self.max_held = max(2000, settings.max_in_flight * 2)
        self._lane_limit = settings.endpoint_max_in_flight * 10  # deliveries queued per endpoint, at most
        self._waiting_lanes: collections.OrderedDict[uuid.UUID, None] = collections.OrderedDict()
        self._sends: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._secret_cache: dict[bytes, bytes] = {}
        self.stopping = False
        self._last_complaint = -1e9

    # ---- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._loops = [asyncio.create_task(c) for c in (self.writer.run(), self._poll_loop(), self._heartbeat_loop(),
                                                        self._listen_loop())]

    async def stop(self, grace_s: float = 8.0) -> None:
        """Stop taking work, let sends in flight finish (up to ``grace_s``), hand back the rest."""
        self.stopping = True
        deadline = time.monotonic() + grace_s
        now = datetime.now(UTC)
        for lane in self.lanes.values():
            while lane.queue:
                self._defer(lane.queue.popleft(), now)
        if self._sends:
            await asyncio.wait(self._sends, timeout=max(0.1, deadline - time.monotonic()))
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        await self.writer.drain(max(1.0, deadline - time.monotonic()))
        try:
            await delivery_repo.release(self.db, self.owner)
        except db.ERRORS:
            log.warning("could not release leases on stop; they expire by themselves", exc_info=True)

    # ---- intake --------------------------------------------------------------------------------

    def take(self, outbound: list[Outbound], secrets: dict[uuid.UUID, list[endpoint_repo.LiveSecret]]) -> None:
        """Queue deliveries leased to this worker in their lanes and start what the lanes allow."""
        bodies: dict[uuid.UUID, tuple[bytes, str]] = {}
        now = datetime.now(UTC)
        for o in outbound:
            if o.id in self.held:
                # Already queued or in flight here: its lease lapsed before a renewal (a busy loop) and this
                # worker claimed it again. The claim renewed the lease; sending it twice would be a duplicate.
                continue
            try:
                lane = self._lane(o, secrets.get(o.endpoint_id, []))
            except (LookupError, InvalidTag):
                # A secret sealed under a master key this process does not have: nothing can be
                # signed. Say so loudly and try again later rather than send unsigned.
                log.error("cannot open the endpoint's signing secret; check KAIHOOKS_OLD_SECRET_KEYS",
                          extra={"endpoint_id": ids.encode("ep", o.endpoint_id)})
                self.writer.add_deferral(Deferral(o.id, now + timedelta(seconds=60)))
                continue
            if o.event_id not in bodies:
                bodies[o.event_id] = self._body(o)
            body, msg_id = bodies[o.event_id]
            if len(lane.queue) >= self._room(lane):
                # The lane is full: hand the delivery back rather than hold it (held deliveries use up
                # this worker's room for everyone else's), due when the lane may have room again.
                self.writer.add_deferral(Deferral(o.id, self._when_room(lane, now)))
                continue
            self.held.add(o.id)
            lane.queue.append(Job(o, body, msg_id))
        for endpoint_id in {o.endpoint_id for o in outbound}:
            if endpoint_id in self.lanes:
                self._pump(self.lanes[endpoint_id])

    def _lane(self, o: Outbound, sealed: list[endpoint_repo.LiveSecret]) -> Lane:
        lane = self.lanes.get(o.endpoint_id)
        if lane is None:
            # Slow start: two requests at once, one more after each success up to the cap, one after a
            # timeout. A hanging endpoint thus holds few of the worker's slots.
            lane = self.lanes[o.endpoint_id] = Lane(o.endpoint_id, o.business_id, o.url, o.enabled,
                                                    cap=min(2, self.settings.endpoint_max_in_flight))
        lane.url, lane.enabled = o.url, o.enabled
        if sealed:
            lane.secrets = [(self._open(s.sealed), s.expires_at) for s in sealed]
        return lane

    def _open(self, sealed: Sealed) -> bytes:
        cache_key = sealed.nonce
        key = self._secret_cache.get(cache_key)
        if key is None:
            if len(self._secret_cache) > 50_000:
                self._secret_cache.clear()
            key = self._secret_cache[cache_key] = secret_bytes(self.box.open(sealed))
        return key

    @staticmethod
    def _body(o: Outbound) -> tuple[bytes, str]:
        msg_id = ids.encode("evt", o.event_id)
        body = orjson.dumps(
            {"id": msg_id, "type": o.event_type, "timestamp": o.occurred_at,
             "business_id": ids.encode("biz", o.business_id), "data": orjson.Fragment(o.data_json)},
            option=orjson.OPT_UTC_Z,
        )
        return body, msg_id

    # ---- sending -------------------------------------------------------------------------------

    def _room(self, lane: Lane) -> int:
        """How many deliveries a lane may hold queued: plenty while the endpoint answers in time, only
        what it can have in flight once it times out (so hanging endpoints never fill this worker)."""
        return max(1, lane.cap) if lane.slow or self._tripped(lane) else self._lane_limit

    def _when_room(self, lane: Lane, now: datetime) -> datetime:
        """When a delivery handed back from a full lane is due again: a slow endpoint's lane frees up no
        sooner than a request times out (so its deliveries do not crowd the due ones meanwhile)."""
        slow = lane.slow or self._tripped(lane)  # a tripped endpoint gets one probe at a time
        return now + timedelta(seconds=self.settings.delivery_timeout) if slow else now

    def _pump(self, lane: Lane) -> None:
        now = time.monotonic()
        if lane.queue and not lane.enabled:
            self._fail_disabled(lane)
            return
        if lane.open_until > now and lane.queue:
            # Breaker open: hand the queue back, due when it may close; no attempt is spent.
            at = datetime.now(UTC) + timedelta(seconds=lane.open_until - now)
            while lane.queue:
                self._defer(lane.queue.popleft(), at)
            return
        room = self._room(lane)
        if len(lane.queue) > room:
            # The endpoint has gone slow: keep what it can take now, hand the rest back (no attempt spent),
            # due when it may have room again.
            due = self._when_room(lane, datetime.now(UTC))
            while len(lane.queue) > room:
                self._defer(lane.queue.pop(), due)
        half_open = self._tripped(lane)
        cap = 1 if half_open else lane.cap
        while lane.queue and lane.in_flight < cap:
            if self.in_flight >= self.settings.max_in_flight:
                self._waiting_lanes[lane.endpoint_id] = None
                return
            job = lane.queue.popleft()
            lane.in_flight += 1
            self.in_flight += 1
            task = asyncio.create_task(self._send(lane, job))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)

    def _pump_waiting(self) -> None:
        while self._waiting_lanes and self.in_flight < self.settings.max_in_flight:
            endpoint_id, _ = self._waiting_lanes.popitem(last=False)
            lane = self.lanes.get(endpoint_id)
            if lane is not None:
                self._pump(lane)

    async def _send(self, lane: Lane, job: Job) -> None:
        started_at = datetime.now(UTC)
        timestamp = int(time.time())
        now = datetime.now(UTC)
        keys = [k for k, expires in lane.secrets if expires is None or expires > now]
        headers = {
            "content-type": "application/json",
            "webhook-id": job.msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signing.signature_header(keys, job.msg_id, timestamp, job.body),
        }
        url = lane.url
        try:
            outcome = await http.post(
                self.session, url, job.body, headers, timeout_s=self.settings.delivery_timeout,
                max_read=self.settings.max_response_bytes, retry_after_cap_s=self.settings.retry_after_cap_s,
            )
        finally:
            lane.in_flight -= 1
            self.in_flight -= 1
        self._settle(lane, job, outcome, started_at, url)
        self._pump(lane)
        self._pump_waiting()

    def _settle(self, lane: Lane, job: Job, outcome: http.Outcome, started_at: datetime, url: str) -> None:
        o = job.delivery
        number = o.attempt_count + 1
        status: DeliveryStatus
        next_at: datetime | None = None
        if outcome.ok:
            status = "succeeded"
            if lane.open_s or lane.slow:  # it had been paused: no longer
                self._spawn(endpoint_repo.resume(self.db, lane.endpoint_id), "could not resume the endpoint")
            lane.failures, lane.timeouts, lane.open_s, lane.slow = 0, 0, 0.0, False
            lane.cap = min(self.settings.endpoint_max_in_flight, lane.cap + 1)
        else:
            self._note_failure(lane, outcome)
            delay = self._next_delay(o, number, outcome)
            if outcome.status == 410 or delay is None:
                status = "failed"
            else:
                status, next_at = "pending", started_at + timedelta(seconds=delay)
        self.held.discard(o.id)
        metrics.ATTEMPT_SECONDS.labels(metrics.result_class(outcome.status)).observe(outcome.duration_ms / 1000)
        metrics.DELIVERIES.labels("retrying" if status == "pending" else status).inc()
        self.writer.add_result(AttemptResult(
            delivery_id=o.id, endpoint_id=o.endpoint_id, number=number, started_at=started_at,
            duration_ms=outcome.duration_ms, response_status=outcome.status, response_body=outcome.body_excerpt,
            error=outcome.error, error_kind=outcome.error_kind, trigger=o.trigger, url=url, status=status,
            next_attempt_at=next_at, succeeded=outcome.ok,
        ))
        if outcome.status == 410:
            asyncio.create_task(self._disable(lane, "the endpoint answered 410 Gone"))  # noqa: RUF006
        if not outcome.ok:
            log.info("delivery attempt failed", extra={
                "delivery_id": ids.encode("dlv", o.id), "event_id": job.msg_id,
                "endpoint_id": ids.encode("ep", o.endpoint_id), "business_id": ids.encode("biz", o.business_id),
                "attempt": number, "error_kind": outcome.error_kind, "status": status})

    def _note_failure(self, lane: Lane, outcome: http.Outcome) -> None:
        lane.failures += 1
        lane.timeouts = lane.timeouts + 1 if outcome.error_kind == "timeout" else 0
        if outcome.error_kind == "timeout":
            lane.cap = 1  # a slow endpoint gets one request at a time until it answers again
            lane.slow = True
            # ...and, for every worker, new deliveries to it are due no sooner than that request could time
            # out again (until then they would only sit due, for every claim to step over).
            until = datetime.now(UTC) + timedelta(seconds=self.settings.delivery_timeout)
            self._spawn(endpoint_repo.pause(self.db, lane.endpoint_id, until, move_pending=False),
                        "could not pause the endpoint")
        now = time.monotonic()
        if self._tripped(lane) and lane.open_until <= now:
            # Trip (again): once per trip, however many requests in flight fail with it.
            lane.open_s = min(_MAX_CIRCUIT_OPEN_S, lane.open_s * 2 if lane.open_s else self.settings.circuit_open_s)
            # ±20 % so endpoints that failed together do not all come back (with their backlogs) at once
            open_for = lane.open_s * random.uniform(0.8, 1.2)
            lane.open_until = now + open_for
            until = datetime.now(UTC) + timedelta(seconds=open_for)
            self._spawn(endpoint_repo.pause(self.db, lane.endpoint_id, until, move_pending=True),
                        "could not pause the endpoint")
            log.warning("endpoint breaker open: its deliveries wait", extra={
                "endpoint_id": ids.encode("ep", lane.endpoint_id), "business_id": ids.encode("biz", lane.business_id),
                "failures": lane.failures, "open_s": lane.open_s})

    def _tripped(self, lane: Lane) -> bool:
        """Enough consecutive failures, or timeouts, to open (or keep half-open) the endpoint's breaker."""
        return lane.failures >= self.settings.circuit_failures or lane.timeouts >= self.settings.circuit_timeouts

    def _next_delay(self, o: Outbound, number: int, outcome: http.Outcome) -> float | None:
        """Seconds until the next attempt, or None when the schedule is spent."""
        schedule = self.settings.retry_schedule if o.schedule == "normal" else self.settings.replay_schedule
        index = number - o.schedule_start - 1
        if index >= len(schedule):
            return None
        delay = schedule[index] * random.uniform(0.8, 1.2)
        if outcome.retry_after_s is not None:
            delay = max(delay, outcome.retry_after_s)
        return delay

    def _spawn(self, work: Coroutine[Any, Any, object], failure: str) -> None:
        """Run a database update beside the hot path; a failure is logged (the next trip or success redoes it)."""
        async def run() -> None:
            try:
                await work
            except db.ERRORS as exc:
                self._complain(failure, exc)

        task = asyncio.create_task(run())
        self._sends.add(task)  # kept alive, and awaited at stop like a send
        task.add_done_callback(self._sends.discard)

    def _defer(self, job: Job, at: datetime) -> None:
        metrics.DELIVERIES.labels("deferred").inc()
        self.held.discard(job.delivery.id)
        self.writer.add_deferral(Deferral(job.delivery.id, at))

    def _fail_disabled(self, lane: Lane) -> None:
        jobs = list(lane.queue)
        lane.queue.clear()
        if jobs:
            log.info("deliveries skipped: the endpoint is disabled", extra={
                "endpoint_id": ids.encode("ep", lane.endpoint_id), "business_id": ids.encode("biz", lane.business_id),
                "delivery_ids": [ids.encode("dlv", j.delivery.id) for j in jobs[:20]], "count": len(jobs)})
        for job in jobs:
            self.held.discard(job.delivery.id)
        asyncio.create_task(delivery_repo.fail_for_disabled_endpoint(  # noqa: RUF006
            self.db, [j.delivery.id for j in jobs], self.owner))

    async def _disable(self, lane: Lane, reason: str) -> None:
        lane.enabled = False
        endpoint = await endpoint_repo.disable(self.db, lane.endpoint_id, reason)
        if endpoint is not None:
            metrics.ENDPOINTS_DISABLED.labels("gone").inc()
            await audit.record(self.db, action="endpoint.disabled", business_id=endpoint.business_id,
                               target_id=endpoint.public_id, details={"reason": reason})
            log.warning("endpoint disabled", extra={"endpoint_id": endpoint.public_id,
                                                   "business_id": ids.encode("biz", endpoint.business_id),
                                                   "reason": reason})
        self._fail_disabled(lane)

    # ---- loops ---------------------------------------------------------------------------------

    async def poll_once(self) -> int:
        """Claim due deliveries that nobody holds, up to what this worker has room for."""
        room = min(_MAX_CLAIM, self.max_held - len(self.held))
        if self.stopping or room <= 0:
            return 0
        now = time.monotonic()
        busy = [lane.endpoint_id for lane in self.lanes.values()
                if lane.open_until > now or len(lane.queue) >= self._room(lane)]
        claimed = await delivery_repo.claim_due(self.db, self.owner, room, self.settings.lease_s, busy)
        if claimed:
            secrets = await endpoint_repo.live_secrets(self.db, list({o.endpoint_id for o in claimed}))
            self.take(claimed, secrets)
        return len(claimed)

    async def sweep_unfanned(self) -> int:
        """Fan out events stored without their deliveries (by an API process of an older release, during a
        rolling upgrade). The deliveries are then due like any other."""
        event_ids = await delivery_repo.unfanned_events(self.db, UNFANNED_GRACE_S, 1000)
        if not event_ids:
            return 0
        created = await delivery_repo.fan_out(self.db, event_ids)
        metrics.SWEPT.inc(len(event_ids))
        log.warning("swept events that missed their fan-out", extra={"events": len(event_ids), "deliveries": created})
        return len(event_ids)

    async def _poll_loop(self) -> None:
        """Claim due deliveries (every ``worker_poll_s``, or at once when woken) and sweep missed fan-outs.
        Needs only Postgres, so deliveries go on while Redis is away."""
        next_sweep = 0.0
        while True:
            try:
                if not self.stopping and time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + SWEEP_EVERY_S
                    await self.sweep_unfanned()
                while await self.poll_once() >= _MAX_CLAIM:
                    pass
            except db.ERRORS as exc:
                self._complain("could not claim due deliveries (Postgres unavailable?)", exc)
            except Exception as exc:  # this loop must outlive any one bad batch
                self._complain("unexpected error while claiming due deliveries", exc, error=True)
            try:
                await asyncio.wait_for(self._wake.wait(), self.settings.worker_poll_s)
            except TimeoutError:
                pass
            self._wake.clear()

    async def _listen_loop(self) -> None:
        """Hold a connection listening on ``DUE_CHANNEL``: Postgres notifies it when a transaction that made
        deliveries due now commits, and the poll loop then claims them at once. If the connection is lost,
        the poll loop's timer still finds everything; listening resumes as soon as Postgres is back."""
        while True:
            lost = asyncio.Event()

            def wake(_conn: object, _pid: int, _channel: str, payload: str) -> None:
                if payload.startswith(delivery_repo.ENDPOINT_CHANGED):
                    self._reset_breaker(uuid.UUID(payload.removeprefix(delivery_repo.ENDPOINT_CHANGED)))
                self._wake.set()

            try:
                async with self.db.acquire() as conn:
                    conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                    await conn.add_listener(delivery_repo.DUE_CHANNEL, wake)
                    try:
                        self._wake.set()  # anything made due while nobody listened
                        await lost.wait()
                    finally:
                        if not conn.is_closed():  # hand the connection back to the pool as it was
                            await asyncio.shield(conn.remove_listener(delivery_repo.DUE_CHANNEL, wake))
            except db.ERRORS as exc:
                self._complain("could not listen for due deliveries (Postgres unavailable?)", exc)
            await asyncio.sleep(LISTEN_RETRY_S)

    def _reset_breaker(self, endpoint_id: uuid.UUID) -> None:
        """The endpoint was changed or enabled: start it afresh (slow start, no failures, breaker closed)."""
        lane = self.lanes.get(endpoint_id)
        if lane is not None:
            lane.failures, lane.timeouts, lane.open_until, lane.open_s, lane.slow = 0, 0, 0.0, 0.0, False
            lane.cap = min(2, self.settings.endpoint_max_in_flight)

    def _complain(self, message: str, exc: BaseException, error: bool = False) -> None:
        """Log a failing loop's error once, then at most every 30 s while it keeps failing."""
        now = time.monotonic()
        if now - self._last_complaint < 30:
            return
        self._last_complaint = now
        log.log(logging.ERROR if error else logging.WARNING, message, exc_info=exc)

    def _forget_idle_lanes(self) -> None:
        """Drop lanes with nothing to do and nothing to remember (memory stays bounded by activity)."""
        now = time.monotonic()
        idle = [eid for eid, lane in self.lanes.items()
                if not lane.queue and not lane.in_flight and not lane.failures and lane.open_until < now]
        for endpoint_id in idle:
            del self.lanes[endpoint_id]

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

    async def _heartbeat_loop(self) -> None:
        next_health = 0.0
        while True:
            await asyncio.sleep(self.settings.lease_s / 3)
            self._forget_idle_lanes()
            metrics.IN_FLIGHT.set(self.in_flight)
            metrics.HELD.set(len(self.held))
            try:
                metrics.QUEUE_DEPTH.set(await delivery_repo.due_count(self.db))
                if time.monotonic() >= next_health:  # aggregate queries: not on every heartbeat
                    next_health = time.monotonic() + self.settings.endpoint_metrics_s
                    await self._export_endpoint_health()
            except db.ERRORS as exc:
                self._complain("could not measure the queue depth", exc)
            if self.held:
                try:
                    await delivery_repo.renew_leases(self.db, list(self.held), self.owner, self.settings.lease_s)
                except db.ERRORS as exc:
                    self._complain("could not renew leases", exc)
