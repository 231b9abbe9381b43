"""The intake stage: how deliveries reach a worker, and how it keeps them (``shared.repos.handoff`` is the
other side).

- wake: SUBSCRIBEs to the Redis wake channel, where the API says "deliveries are due now" after each
  accepted batch that made some; a wake-up claims at once. A PING when quiet tells a dead connection from a
  quiet one; after a loss it subscribes again and claims once (wake-ups sent meanwhile were lost).
- listen: a Postgres connection LISTENs on the due channel: an endpoint-changed message makes the engine
  read that endpoint again (it is sent in the changing transaction, so it cannot be lost while listening
  lasts); a bare one (retries, recovers, test sends) claims at once. When listening resumes after a loss,
  every lane is read again (messages sent meanwhile were lost).
- poll: claims due deliveries at every wake-up and every ``worker_poll_s`` (retries come due by time; and
  while Redis is away this timer alone finds new deliveries), up to the room the engine has, skipping
  endpoints whose lanes cannot take more; now and then it also fans out events an older release stored
  without deliveries.
- leases: renews the lease of every delivery the engine holds, on a connection of its own with a timeout,
  so nothing else the worker does (claims, gauges, writes) can make a live worker's leases lapse.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence

import asyncpg
import redis.exceptions
from redis.asyncio import Redis

from dispatcher.supervisor import Supervisor
from shared import db, metrics, redis_client
from shared.db import create_pool
from shared.repos import endpoints as endpoint_repo
from shared.repos import handoff
from shared.repos.handoff import EndpointChanged, Outbound
from shared.settings import Settings

log = logging.getLogger("kaihooks.dispatcher")

MAX_CLAIM = 500
UNFANNED_GRACE_S = 5.0  # events are fanned out as they are stored; any left after this are swept
SWEEP_EVERY_S = 5.0
LISTEN_RETRY_S = 2.0
WAKE_PING_S = 5.0  # a quiet wake subscription is PINGed this often, and dropped after 3 unanswered

Claimed = Callable[[list[Outbound], dict[uuid.UUID, list[endpoint_repo.LiveSecret]], float], None]


class Intake:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, owner: str, supervisor: Supervisor, *,
                 room: Callable[[], int], busy_endpoints: Callable[[], Sequence[uuid.UUID]],
                 known_endpoints: Callable[[], set[uuid.UUID]], claimed: Claimed,
                 endpoint_changed: Callable[[uuid.UUID], None], listening_resumed: Callable[[], None],
                 held: Callable[[], list[uuid.UUID]]) -> None:
        self.settings = settings
        self.db = pool
        self.owner = owner
        self.supervisor = supervisor
        self._room = room
        self._busy = busy_endpoints
        self._known = known_endpoints
        self._claimed = claimed
        self._endpoint_changed = endpoint_changed
        self._listening_resumed = listening_resumed
        self._held = held
        self._wake = asyncio.Event()
        self._cut_short = False  # the last claim took only what room there was: more may be due
        self.stopping = False

    def start(self) -> None:
        self.supervisor.loop("poll", self._poll_loop)
        self.supervisor.loop("listen", self._listen_loop)
        self.supervisor.loop("wake", self._wake_loop)
        self.supervisor.loop("leases", self.keep_leases)

    def wake(self) -> None:
        self._wake.set()

    def room_freed(self) -> None:
        """Held deliveries were settled: if the last claim was cut short by room, claim again now rather
        than at the next poll (a backlog drains without pauses)."""
        if self._cut_short and self._room() >= MAX_CLAIM // 4:
            self._cut_short = False
            self._wake.set()

    async def poll_once(self) -> int:
        """Claim due deliveries that nobody holds, up to what this worker has room for."""
        room = min(MAX_CLAIM, self._room())
        if self.stopping or room <= 0:
            return 0
        started = time.monotonic()
        claimed = await handoff.claim_due(self.db, self.owner, room, self.settings.lease_s, self._busy())
        self._cut_short = len(claimed) == room < MAX_CLAIM
        metrics.CLAIMS.labels("rows" if claimed else "empty").inc()
        if claimed:
            metrics.CLAIMED.inc(len(claimed))
            known = self._known()
            new = list({o.endpoint_id for o in claimed} - known)  # lanes already known are kept current
            secrets = await endpoint_repo.live_secrets(self.db, new) if new else {}
            self._claimed(claimed, secrets, started)
        return len(claimed)

    async def sweep_unfanned(self) -> int:
        """Fan out events stored without their deliveries (by an API process of an older release, during a
        rolling upgrade). The deliveries are then due like any other."""
        event_ids = await handoff.unfanned_events(self.db, UNFANNED_GRACE_S, 1000)
        if not event_ids:
            return 0
        created = await handoff.fan_out(self.db, event_ids, self.settings.retry_deadline_s)
        metrics.SWEPT.inc(len(event_ids))
        log.warning("swept events that missed their fan-out", extra={"events": len(event_ids), "deliveries": created})
        return len(event_ids)

    async def _poll_loop(self) -> None:
        """Needs only Postgres, so deliveries go on while Redis is away."""
        next_sweep = 0.0
        while True:
            try:
                if not self.stopping and time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + SWEEP_EVERY_S
                    await self.sweep_unfanned()
                while await self.poll_once() >= MAX_CLAIM:
                    pass
            except db.ERRORS as exc:
                self.supervisor.complain("could not claim due deliveries (Postgres unavailable?)", exc)
            try:
                await asyncio.wait_for(self._wake.wait(), self.settings.worker_poll_s)
            except TimeoutError:
                pass
            self._wake.clear()

    async def _listen_loop(self) -> None:
        """If the connection is lost, the poll loop's timer still finds everything; listening resumes as soon
        as Postgres is back."""
        first = True
        while True:
            lost = asyncio.Event()

            def heard(_conn: object, _pid: int, _channel: str, payload: str) -> None:
                message = handoff.parse(payload)
                if isinstance(message, EndpointChanged):
                    self._endpoint_changed(message.endpoint_id)
                self._wake.set()

            try:
                async with self.db.acquire() as conn:
                    conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                    await conn.add_listener(handoff.DUE_CHANNEL, heard)
                    try:
                        if not first:
                            self._listening_resumed()  # endpoint changes made while nobody listened
                        first = False
                        self._wake.set()  # anything made due while nobody listened
                        await lost.wait()
                    finally:
                        if not conn.is_closed():  # hand the connection back to the pool as it was
                            await asyncio.shield(conn.remove_listener(handoff.DUE_CHANNEL, heard))
            except db.ERRORS as exc:
                first = False
                self.supervisor.complain("could not listen for due deliveries (Postgres unavailable?)", exc)
            await asyncio.sleep(LISTEN_RETRY_S)

    async def _wake_loop(self) -> None:
        """Wake-ups from the API through Redis. While Redis is away the poll loop's timer finds everything;
        subscribing resumes as soon as Redis is back."""
        channel = handoff.wake_channel(self.settings.queue_name)
        while True:
            client = Redis.from_url(self.settings.redis_url, socket_connect_timeout=2, socket_timeout=5)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(channel)
                    heard = pinged = time.monotonic()
                    while True:
                        message = await pubsub.get_message(timeout=WAKE_PING_S)
                        now = time.monotonic()
                        if message is not None:
                            heard = now
                            if message["type"] in ("message", "subscribe"):  # due now; or due while unheard
                                self._wake.set()
                        elif now - heard > 3 * WAKE_PING_S:
                            raise redis.exceptions.TimeoutError(f"no answer from Redis in {now - heard:.0f} s")
                        if now - heard >= WAKE_PING_S and now - pinged >= WAKE_PING_S:
                            pinged = now
                            await pubsub.ping()
            except redis_client.UNUSABLE as exc:
                self.supervisor.complain("could not subscribe to wake-ups (Redis unavailable?); polling Postgres",
                                         exc)
            finally:
                await client.aclose()
            await asyncio.sleep(LISTEN_RETRY_S)

    async def keep_leases(self) -> None:
        """Renew the leases of everything held, every third of a lease, on a connection of its own."""
        every = self.settings.lease_s / 3
        pool: asyncpg.Pool | None = None
        try:
            while True:
                await asyncio.sleep(every)
                held = self._held()
                if not held:
                    continue
                try:
                    if pool is None:
                        pool = await create_pool(self.settings, min_size=1, max_size=1)
                    await handoff.renew_leases(pool, held, self.owner, self.settings.lease_s, timeout_s=every)
                except db.ERRORS as exc:
                    self.supervisor.complain("could not renew leases", exc)
        finally:
            if pool is not None:
                pool.terminate()
