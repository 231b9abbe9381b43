"""The delivery engine of one worker process: it wires the stages and owns what this worker holds.

    intake (claims, wake-ups, leases) -> lanes (one per endpoint: cap, slow start, breaker)
      -> message (body, signed headers) -> send (the POST) -> outcome (verdict, next time)
      -> record (the batched writer)

Every claimed delivery settles: a send that fails in any way still gets an attempt and goes on with its
schedule, and a delivery stays held (its lease renewed) until its record is written. A changed endpoint
(notified at commit) is read again before its lane sends anything more: deleted, its queue is dropped;
disabled, its queue fails; re-pointed or given new secrets, later sends use them. The schedule is a
deadline: a delivery whose deadline comes while its endpoint is paused fails, saying so.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg

from dispatcher import lanes, message, outcome, send
from dispatcher.gauges import Gauges, Snapshot
from dispatcher.intake import Intake
from dispatcher.lanes import Lane
from dispatcher.record import ResultWriter
from dispatcher.refresh import refresh, set_secrets
from dispatcher.supervisor import Supervisor
from shared import db, ids
from shared.repos import endpoints as endpoint_repo
from shared.repos import handoff
from shared.repos.handoff import Outbound
from shared.secrets_box import SecretBox
from shared.settings import Settings
from shared.webhook_service import disable_endpoint

log = logging.getLogger("kaihooks.dispatcher")

UNOPENABLE_RETRY_S = 60.0  # a secret sealed under a master key this process lacks: try again this much later
CHANGE_MEMORY_S = 60.0
REFRESH_RETRY_S = 1.0  # how long an endpoint-changed message is remembered against racing claims


@dataclass(slots=True)
class Job:
    delivery: Outbound
    body: bytes
    msg_id: str
    deadline: datetime


class Engine:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, session: aiohttp.ClientSession, owner: str) -> None:
        self.settings = settings
        self.db = pool
        self.session = session
        self.owner = owner
        self.supervisor = Supervisor()
        self.writer = ResultWriter(pool, owner, on_written=self._written)
        self.keys = message.SecretKeys(SecretBox(settings.secret_key_bytes, settings.old_secret_keys_bytes))
        self.policy = lanes.Policy(settings.circuit_failures, settings.circuit_timeouts, settings.circuit_open_s,
                                   settings.endpoint_max_in_flight, settings.endpoint_max_in_flight * 10,
                                   settings.delivery_timeout)
        self.lanes: dict[uuid.UUID, Lane[Job]] = {}
        self.held: dict[uuid.UUID, float] = {}  # delivery -> when claimed (monotonic), until its record is written
        self.in_flight = 0
        self.max_held = max(2000, settings.max_in_flight * 2)
        self._waiting: dict[uuid.UUID, None] = {}  # lanes waiting for a free slot of the worker's, in order
        self._changed: dict[uuid.UUID, float] = {}  # endpoint -> when a change was last heard of (monotonic)
        self.intake = Intake(
            settings, pool, owner, self.supervisor, room=lambda: self.max_held - len(self.held),
            busy_endpoints=self._busy_endpoints, known_endpoints=lambda: set(self.lanes), claimed=self.take,
            endpoint_changed=self.endpoint_changed, listening_resumed=self._all_changed, held=lambda: list(self.held))
        self.gauges = Gauges(settings, pool, self.supervisor, self._snapshot, self._tidy)

    def start(self) -> None:
        self.supervisor.loop("writer", self.writer.run)
        self.intake.start()
        self.gauges.start()

    async def stop(self, grace_s: float = 8.0) -> None:
        """Stop claiming, let sends in flight finish (up to ``grace_s``), write what they found, hand back
        the rest."""
        deadline = time.monotonic() + grace_s
        self.intake.stopping = True
        await self.supervisor.stop_loops(keep=("writer", "leases"))
        now = datetime.now(UTC)
        for lane in self.lanes.values():
            while lane.queue:
                self._defer(lane.queue.popleft(), now, "stopping")
        await self.supervisor.finish_work(deadline - time.monotonic())
        await self.supervisor.stop_loops()
        await self.writer.drain(max(1.0, deadline - time.monotonic()))
        try:
            await handoff.release(self.db, self.owner)
        except db.ERRORS:
            log.warning("could not release leases on stop; they expire by themselves", exc_info=True)

    # ---- intake ------------------------------------------------------------------------------------

    def take(self, claimed: list[Outbound], secrets: dict[uuid.UUID, list[endpoint_repo.LiveSecret]],
             claim_started: float) -> None:
        """Queue deliveries leased to this worker in their lanes and start what the lanes allow."""
        bodies: dict[uuid.UUID, tuple[bytes, str]] = {}
        now = datetime.now(UTC)
        for o in claimed:
            if o.id in self.held:
                # Queued, in flight or being recorded here already: its lease lapsed before a renewal and this
                # worker claimed it again. The claim renewed the lease; sending it twice would be a duplicate.
                continue
            self.held[o.id] = time.monotonic()
            lane = self.lanes.get(o.endpoint_id)
            if lane is None:
                lane = self.lanes[o.endpoint_id] = lanes.new_lane(o.endpoint_id, o.business_id, o.url, o.enabled,
                                                                  self.policy)
                if o.endpoint_id in secrets:
                    set_secrets(lane, self.keys, secrets[o.endpoint_id])
                else:
                    lane.stale = True  # its lane was forgotten while this claim ran: read it afresh
            if self._changed.get(o.endpoint_id, -1.0) >= claim_started:
                lane.stale = True  # changed while this claim ran: what it read may be older
            if o.event_id not in bodies:
                bodies[o.event_id] = message.envelope(o.event_id, o.event_type, o.business_id, o.occurred_at,
                                                      o.data_json)
            body, msg_id = bodies[o.event_id]
            job = Job(o, body, msg_id, self._deadline(o))
            if job.deadline <= now and self._paused_by_failures(o, now):
                self._fail_paused(lane, [job])
            elif len(lane.queue) >= lanes.room(lane, self.policy):
                # The lane is full: hand the delivery back rather than hold it (held deliveries use up this
                # worker's room for everyone else's), due when the lane may have room again.
                self._defer(job, lanes.refill_at(lane, self.policy, now), "slowed")
            else:
                lane.queue.append(job)
        for endpoint_id in {o.endpoint_id for o in claimed}:
            if (lane := self.lanes.get(endpoint_id)) is not None:
                self._pump(lane)

    def _deadline(self, o: Outbound) -> datetime:
        if o.deadline_at is not None:
            return o.deadline_at
        return outcome.deadline(o.created_at, self.settings.retry_schedule)  # a row of an older release

    def _paused_by_failures(self, o: Outbound, now: datetime) -> bool:
        """Paused for every worker after enough failures to open a breaker (a slow endpoint's short pause
        alone does not fail a delivery unsent: it gets its last attempt)."""
        return o.paused_until is not None and o.paused_until > now and \
            o.failure_streak >= min(self.policy.failures, self.policy.timeouts)

    def _busy_endpoints(self) -> list[uuid.UUID]:
        """Endpoints whose lanes take nothing more now (the claim leaves their deliveries to others)."""
        now = time.monotonic()
        return [lane.endpoint_id for lane in self.lanes.values()
                if lanes.is_open(lane, now) or len(lane.queue) >= lanes.room(lane, self.policy)]

    # ---- endpoint changes --------------------------------------------------------------------------

    def endpoint_changed(self, endpoint_id: uuid.UUID) -> None:
        """Committed: the endpoint changed. Its lane sends nothing more until it has been read again."""
        self._changed[endpoint_id] = time.monotonic()
        lane = self.lanes.get(endpoint_id)
        if lane is not None:
            lane.stale = True
            self._pump(lane)

    def _all_changed(self) -> None:
        for endpoint_id in list(self.lanes):
            self.endpoint_changed(endpoint_id)

    async def _refresh(self, lane: Lane[Job]) -> None:
        try:
            await refresh(self.db, lane, self.keys, self.policy)
        except db.ERRORS as exc:  # Postgres away: its queue waits (held, leases renewed); read again shortly
            self.supervisor.complain("could not read a changed endpoint; trying again", exc)
            await asyncio.sleep(REFRESH_RETRY_S)
        self._pump(lane)

    # ---- lanes -------------------------------------------------------------------------------------

    def _pump(self, lane: Lane[Job]) -> None:
        if lane.gone:  # deleted: its deliveries went with it
            while lane.queue:
                self.held.pop(lane.queue.popleft().delivery.id, None)
            return
        if lane.stale:
            if not lane.refreshing:
                lane.refreshing = True
                self.supervisor.spawn(self._refresh(lane), "could not read a changed endpoint")
            return
        if not lane.enabled:
            self._fail_unsent(lane, "endpoint disabled")
            return
        now, wall = time.monotonic(), datetime.now(UTC)
        if not lane.secrets:
            self._defer_all(lane, wall + timedelta(seconds=UNOPENABLE_RETRY_S), "no_secret")
            return
        if lanes.is_open(lane, now):
            # Paused: hand the queue back, due when it may close (no attempt spent), or at its deadline.
            reopen = wall + timedelta(seconds=lane.open_until - now)
            late = [job for job in lane.queue if job.deadline <= wall]
            for job in lane.queue:
                if job.deadline > wall:
                    self._defer(job, min(reopen, job.deadline), "paused")
            lane.queue.clear()
            self._fail_paused(lane, late)
            return
        room = lanes.room(lane, self.policy)
        while len(lane.queue) > room:  # it has gone slow: keep what it can take now
            self._defer(lane.queue.pop(), lanes.refill_at(lane, self.policy, wall), "slowed")
        for _ in range(lanes.admit(lane, self.policy, now, self.settings.max_in_flight - self.in_flight)):
            job = lane.queue.popleft()
            lane.in_flight += 1
            self.in_flight += 1
            self.supervisor.track(self._send(lane, job))
        if lane.queue and self.in_flight >= self.settings.max_in_flight:
            self._waiting[lane.endpoint_id] = None

    def _pump_waiting(self) -> None:
        while self._waiting and self.in_flight < self.settings.max_in_flight:
            endpoint_id = next(iter(self._waiting))
            del self._waiting[endpoint_id]
            if (lane := self.lanes.get(endpoint_id)) is not None:
                self._pump(lane)

    # ---- send and settle ---------------------------------------------------------------------------

    async def _send(self, lane: Lane[Job], job: Job) -> None:
        started_at, started = datetime.now(UTC), time.monotonic()
        url = lane.url
        try:
            keys = [k for k, expires in lane.secrets if expires is None or expires > started_at]
            headers = message.signed_headers(keys, job.msg_id, int(started_at.timestamp()), job.body)
            result = await send.post(self.session, url, job.body, headers, timeout_s=self.settings.delivery_timeout,
                                     max_read=self.settings.max_response_bytes,
                                     retry_after_cap_s=self.settings.retry_after_cap_s)
        except Exception as exc:  # a bug of ours must not strand the delivery: it gets an attempt all the same
            log.exception("unexpected error while sending", extra={"delivery_id": ids.encode("dlv", job.delivery.id)})
            result = outcome.from_exception(exc, int((datetime.now(UTC) - started_at).total_seconds() * 1000),
                                            self.settings.delivery_timeout)
        finally:
            lane.in_flight -= 1
            self.in_flight -= 1
        try:
            self._settle(lane, job, result, started_at, started, url)
        except Exception:  # never leave it held: hand it back for another try
            log.exception("could not settle a delivery; handing it back", extra={
                "delivery_id": ids.encode("dlv", job.delivery.id)})
            self._defer(job, datetime.now(UTC) + timedelta(seconds=self.settings.delivery_timeout), "unsettled")
        self._pump(lane)
        self._pump_waiting()

    def _settle(self, lane: Lane[Job], job: Job, result: outcome.Outcome, started_at: datetime, started: float,
                url: str) -> None:
        o = job.delivery
        if result.ok:
            if lanes.on_success(lane, self.policy):  # it had been paused: no longer, for every worker
                self.supervisor.spawn(endpoint_repo.resume(self.db, lane.endpoint_id), "could not resume the endpoint")
        else:
            pause = lanes.on_failure(lane, self.policy, result, time.monotonic(), datetime.now(UTC),
                                     random.uniform(0.8, 1.2), started)
            if pause is not None:
                self.supervisor.spawn(endpoint_repo.pause(self.db, lane.endpoint_id, pause.until, pause.move_pending,
                                                          self.settings.retry_deadline_s),
                                      "could not pause the endpoint")
                if pause.tripped:
                    log.warning("endpoint breaker open: its deliveries wait", extra={
                        "endpoint_id": ids.encode("ep", lane.endpoint_id),
                        "business_id": ids.encode("biz", lane.business_id), "failures": lane.failures,
                        "open_s": lane.open_s})
        schedule = self.settings.retry_schedule if o.schedule == "normal" else self.settings.replay_schedule
        verdict = outcome.decide(result, attempt=o.attempt_count + 1, schedule_start=o.schedule_start,
                                 schedule=schedule, started_at=started_at, deadline_at=job.deadline,
                                 jitter=random.uniform(0.8, 1.2))
        self.writer.attempt(o, result, verdict, started_at, url)
        if result.status == 410 and lane.enabled:
            lane.enabled = False
            self.supervisor.spawn(disable_endpoint(self.db, lane.endpoint_id, "the endpoint answered 410 Gone", "gone"),
                                  "could not disable the endpoint")

    def _defer(self, job: Job, at: datetime, reason: str) -> None:
        self.writer.defer(job.delivery.id, at, reason)

    def _defer_all(self, lane: Lane[Job], at: datetime, reason: str) -> None:
        while lane.queue:
            self._defer(lane.queue.popleft(), at, reason)

    def _fail_unsent(self, lane: Lane[Job], reason: str) -> None:
        jobs = list(lane.queue)
        lane.queue.clear()
        self.writer.fail_unsent([j.delivery for j in jobs], [reason] * len(jobs), exhausted=False)

    def _fail_paused(self, lane: Lane[Job], jobs: list[Job]) -> None:
        """Their deadline came while the endpoint was paused: failed, saying why."""
        self.writer.fail_unsent([j.delivery for j in jobs], [
            outcome.paused_reason(max(lane.failures, j.delivery.failure_streak),
                                  lane.failing_since or j.delivery.failing_since) for j in jobs], exhausted=True)

    # ---- bookkeeping -------------------------------------------------------------------------------

    def _written(self, delivery_ids: list[uuid.UUID]) -> None:
        for delivery_id in delivery_ids:
            self.held.pop(delivery_id, None)
        self.intake.room_freed()

    def _snapshot(self) -> Snapshot:
        oldest = min(self.held.values(), default=None)
        return Snapshot(len(self.held), time.monotonic() - oldest if oldest is not None else 0.0, self.in_flight)

    def _tidy(self) -> None:
        """Forget lanes with nothing to do or remember, and old change notices (memory stays bounded)."""
        now = time.monotonic()
        for endpoint_id in [e for e, lane in self.lanes.items() if lanes.idle(lane, now) or (lane.gone
                            and not lane.in_flight)]:
            del self.lanes[endpoint_id]
        self._changed = {e: at for e, at in self._changed.items() if now - at < CHANGE_MEMORY_S}
