"""The reliability drill (``make chaos``; ``make chaos QUICK=1`` for the short one that ``make test`` runs).

    .venv/bin/python chaos/run.py                 # the full drill, about 10 minutes
    .venv/bin/python chaos/run.py --quick         # about 2 minutes
    .venv/bin/python chaos/run.py --quick --report /tmp/chaos.json --keep-logs

It starts a Postgres cluster and a Redis server of its own on free ports (see ``servers.py``), migrates the
database with ``kaihooks migrate``, starts two API processes (``python -m api``), two workers (``python -m
dispatcher``, each serving its ``/metrics`` on a port of its own) and the scripted receivers
(``receiver.py``), makes businesses and endpoints (``world.py``), and publishes a steady load of events over
both API processes (``load.py``) while it, on a fixed plan: SIGKILLs a worker and starts it again, SIGKILLs an
API process and starts it again, kills Redis and starts it empty, stops Postgres for 10 s (the full drill also
crashes it, and kills both workers at once), and turns the ``gone`` receiver to 410.

The **hostile phase** (``Profile.phase``, most of the load): the hostile receivers (random statuses, garbage
``Retry-After``, huge headers, dripping bodies, resets mid-body, silence, 410) are switched on, and the churn
(``churn.py``) deletes, disables and re-enables, re-points, re-keys and recovers the churn endpoints through the
public API while deliveries to them are queued and in flight; the workers' ``/metrics`` are scraped every
second (``scrape.py``).

Then it waits for the backlog to drain (until nothing pending can still settle by its deadline) and checks the
ledger (``ledger.py``): nothing acknowledged lost, duplicates only from requests in flight at a worker's kill,
nothing stuck, every delivery settled by its deadline plus a margin, the churn's changes obeyed, no worker
wedged (held deliveries bounded, the writer recovering, claims going on), no 500 from the API, memory flat.
Each check's verdict and figures are in the report (``checks``); exit status 0 when every check holds.

Everything it starts is stopped, and its temporary directory removed, however it ends; the whole run is bounded
by its profile's budget.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp
import asyncpg
import orjson

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

from churn import Churn, plan  # noqa: E402
from fleet import Fleet, log_lines  # noqa: E402
from ledger import (  # noqa: E402
    HELD_AFTER_DRAIN,
    OVERDUE_LIMIT_S,
    OVERDUE_SQL,
    Fault,
    RecoverJob,
    Timing,
    check,
    check_deadlines,
    check_receipt_gaps,
    check_workers,
    deadline_column,
    deadline_of,
    overdue_split,
    read_db,
)
from load import Publisher  # noqa: E402
from scrape import HELD, Scraper  # noqa: E402
from servers import Postgres, Redis  # noqa: E402
from world import CHURN_KIND, HEALTHY_KINDS, HOSTILE_KINDS, EventMaker, make_world  # noqa: E402

from bench.procs import free_port  # noqa: E402
from bench.procs import start as start_child  # noqa: E402
from shared.settings import Settings, _parse_duration_s  # noqa: E402

# The schedule is a deadline: its total (53 s) must outlast what the drill does to a delivery besides its
# receiver (a 15 s lease after both workers are killed, a 10 s Postgres outage), as the product's three
# days outlast any of those. With 19 s, deliveries held at a double kill met their deadline unsent.
RETRY_SCHEDULE = "1s,2s,3s,5s,8s,13s,21s"
REPLAY_SCHEDULE = "1s,2s,3s"  # a retry's or recover's own schedule
DELIVERY_TIMEOUT_S = 3
LEASE_S = float(Settings.model_fields["lease_s"].default)  # the product's default: not changed here
# A delivery settles by its deadline plus this (see ledger.py): an attempt begun just before the deadline runs
# up to the delivery timeout; a delivery held by a worker killed just before it waits a lease to be claimed
# again; 5 s for polls, batched writes and jitter. Postgres outages near the deadline are added to it.
DEADLINE_MARGIN_S = DELIVERY_TIMEOUT_S + LEASE_S + 5
# The oldest delivery a worker holds may be that old: queued behind a slow lane and sent (up to the timeout),
# its lease renewed meanwhile; three lease periods leave room for a lane's queue and a Postgres outage.
OLDEST_HELD_LIMIT_S = DELIVERY_TIMEOUT_S + 3 * LEASE_S
HANG_S = 20  # a hanging receiver holds a request this long: far past the delivery timeout
# Settings of every API and worker process: short retry and replay schedules and timeout so the drill ends in
# minutes, a short breaker. Everything else (leases, polls, in-flight caps) is the product's default; each
# worker also gets a KAIHOOKS_METRICS_PORT of its own (fleet.py).
PRODUCT_SETTINGS = {
    "KAIHOOKS_RETRY_SCHEDULE": RETRY_SCHEDULE,
    "KAIHOOKS_REPLAY_SCHEDULE": REPLAY_SCHEDULE,
    "KAIHOOKS_DELIVERY_TIMEOUT": str(DELIVERY_TIMEOUT_S),
    "KAIHOOKS_CIRCUIT_OPEN_S": "2",
    "KAIHOOKS_ALLOW_PRIVATE_TARGETS": "1",
    "KAIHOOKS_LISTEN_HOST": "127.0.0.1",
    "KAIHOOKS_DEV": "0",  # JSON log lines
}
POSTGRES_DOWN_S = 10.0
DRAIN_IDLE_S = 5.0  # the drain stops waiting when nothing pending can settle in time and nothing settled this long
HELD_WAIT_S = 7.0  # after the drain, for the workers' held gauges (refreshed every lease/3 s) to come down
PROCESS_DOWN_S = 1.0  # between a SIGKILL and the restart
RSS_EVERY_S = 2.0
# Memory is flat when, from the end of the warm-up to the end of the load, a process grew by no more than
# this many MiB or this fraction, whichever is larger, and never passed RSS_MAX_MB.
RSS_GROWTH_MB = 25.0
RSS_GROWTH_FRACTION = 0.25
RSS_MAX_MB = 250.0


@dataclass(frozen=True)
class Profile:
    name: str
    duration_s: float  # of the load
    rate: float  # events per second
    businesses: int
    senders: int
    warmup_s: float  # a process's RSS is compared from this long after its start
    drain_s: float  # at most, after the load, for the backlog to drain
    budget_s: float  # the whole run, set-up included
    plan: tuple[tuple[float, str, str], ...]  # (seconds into the load, fault, target)
    phase: tuple[float, float]  # the hostile phase, in seconds into the load
    hostile_per_kind: int  # hostile endpoints of each kind
    churn: int  # churn endpoints
    churn_period_s: float  # a churn script without a delete starts again this often


QUICK = Profile(
    "quick", duration_s=60, rate=30, businesses=18, senders=4, warmup_s=15, drain_s=75, budget_s=215,
    plan=((5, "hostile_on", "receiver"), (8, "worker_kill", "worker-0"), (16, "api_kill", "api-0"),
          (23, "redis_restart", "redis"), (27, "gone_switch", "receiver"), (31, "postgres_stop", "postgres"),
          (48, "hostile_off", "receiver")),
    phase=(5, 48), hostile_per_kind=1, churn=6, churn_period_s=40,
)
FULL = Profile(
    "full", duration_s=420, rate=60, businesses=40, senders=6, warmup_s=30, drain_s=240, budget_s=1050,
    plan=((30, "worker_kill", "worker-0"), (40, "hostile_on", "receiver"), (55, "api_kill", "api-0"),
          (80, "redis_restart", "redis"), (100, "gone_switch", "receiver"), (120, "postgres_stop", "postgres"),
          (180, "worker_kill", "worker-1"), (205, "api_kill", "api-1"), (230, "redis_restart", "redis"),
          (260, "postgres_crash", "postgres"), (320, "worker_kill", "worker-0,worker-1"),
          (350, "api_kill", "api-0"), (390, "hostile_off", "receiver")),
    phase=(40, 390), hostile_per_kind=2, churn=12, churn_period_s=45,
)


def schedule_total_s(schedule: str) -> float:
    """The sum of a schedule's delays, parsed as the product parses them."""
    return sum(_parse_duration_s(part) for part in schedule.split(",") if part.strip())


def say(message: str) -> None:
    print(f"chaos: {message}", file=sys.stderr, flush=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


class Drill:
    def __init__(self, profile: Profile, stack: ExitStack, run_dir: Path) -> None:
        self.p = profile
        self.stack = stack
        self.run_dir = run_dir
        self.began = time.monotonic()
        self.faults: list[Fault] = []
        # (wall, deliveries overdue > 60 s, max overdue s, the dead endpoint's max overdue s, the hostile ones')
        self.overdue: list[tuple[float, int, float, float, float]] = []
        self.load_start = 0.0
        self.load_end = 0.0
        self.drain_end = 0.0
        self.dead_ids: list[Any] = []
        self.hostile_ids: list[Any] = []
        self.churn: Churn | None = None
        self.scraper: Scraper | None = None
        self.code_under_test = "?"
        self.plan_late: list[str] = []
        self.writer_complaints: dict[str, list[tuple[float, int, str]]] = {}
        self.crashed: list[str] = []

    def elapsed(self) -> float:
        return time.monotonic() - self.began

    # ---- set-up -----------------------------------------------------------------------------------

    async def setup(self) -> None:
        self.pg = Postgres(self.run_dir)
        self.pg.init()
        self.pg.start()
        self.stack.callback(self.pg.stop)
        self.redis = Redis(self.run_dir)
        self.redis.start()
        self.stack.callback(self.redis.stop)
        await self.pg.wait_ready()
        await self.pg.create_database()
        await self.redis.wait_ready()
        say(f"Postgres ({self.pg.bin}) on :{self.pg.port}, Redis ({self.redis.bin.name}) on :{self.redis.port}")

        self.token = secrets.token_urlsafe(32)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("KAIHOOKS_") and k not in ("DATABASE_URL", "REDIS_URL", "PORT")}
        env.update(PRODUCT_SETTINGS)
        env.update({"DATABASE_URL": self.pg.url, "REDIS_URL": self.redis.url,
                    "KAIHOOKS_SECRET_KEY": base64.b64encode(os.urandom(32)).decode(),
                    "KAIHOOKS_INTERNAL_TOKENS": self.token,
                    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"})
        self.env = env
        # `kaihooks migrate`, run from this checkout as scripts/devenv.py runs it.
        migrated = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "shared.cli", "migrate"], env=env, cwd=ROOT, capture_output=True,
            text=True, check=False)
        if migrated.returncode != 0:
            raise SystemExit(f"chaos: `kaihooks migrate` failed: {migrated.stderr.strip()}")

        self.receiver_port = free_port()
        self.receiver = start_child(self.stack, "receiver", [sys.executable, str(HERE / "receiver.py"), "--port",
                                                             str(self.receiver_port), "--hang-s", str(HANG_S)],
                                    env, ROOT, self.run_dir)
        self.fleet = Fleet(self.stack, env, self.run_dir, apis=2, workers=2)
        self.stack.callback(self.fleet.stop_all)
        for slot in self.fleet.slots:
            self.fleet.start(slot)
        await asyncio.gather(*(self.fleet.wait_ready(s) for s in self.fleet.slots), self._receiver_ready())

        settings = Settings(  # type: ignore[call-arg]
            DATABASE_URL=self.pg.url, REDIS_URL=self.redis.url, secret_key=env["KAIHOOKS_SECRET_KEY"],
            allow_private_targets=True)
        self.world = await make_world(self.fleet.slot("api-0").url, self.token, settings, self.receiver_port,
                                      self.p.businesses, self.p.hostile_per_kind, self.p.churn)
        self.dead_ids = [e.uuid for e in self.world.endpoints if e.kind == "dead"]
        self.hostile_ids = [e.uuid for e in self.world.endpoints if e.kind in HOSTILE_KINDS]
        self.code_under_test = await self._code_under_test()
        async with aiohttp.ClientSession() as http, \
                http.post(self._rcv("/_chaos/secrets"), data=orjson.dumps(self.world.secrets)) as r:
            assert r.status == 200, await r.text()
        say(f"set up in {self.elapsed():.0f} s: {len(self.world.businesses)} businesses, endpoints "
            f"{self.world.layout()}")

    async def _code_under_test(self) -> str:
        """Where the processes it starts import the engine from (they run with its environment, in ROOT)."""
        probe = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-c", "import dispatcher; print(dispatcher.__file__)"], env=self.env,
            cwd=ROOT, capture_output=True, text=True, check=False)
        return probe.stdout.strip() or probe.stderr.strip()[-200:]

    def _rcv(self, path: str) -> str:
        return f"http://127.0.0.1:{self.receiver_port}{path}"

    async def _receiver_ready(self) -> None:
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while True:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(self._rcv("/_chaos/count")) as r:
                        if r.status == 200:
                            return
                if self.receiver.popen.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"chaos: the receiver did not start:\n{self.receiver.log_tail()}")
                await asyncio.sleep(0.1)

    # ---- faults -----------------------------------------------------------------------------------

    async def run_plan(self) -> None:
        for offset, kind, target in self.p.plan:
            await asyncio.sleep(max(0.0, self.load_start + offset - time.time()))
            fault = Fault(kind, target, time.time())
            self.faults.append(fault)
            say(f"t={offset:>3.0f}s {kind} {target}")
            if kind in ("worker_kill", "api_kill"):
                slots = [self.fleet.slot(name) for name in target.split(",")]
                for slot in slots:
                    fault.at = self.fleet.sigkill(slot)
                await asyncio.sleep(PROCESS_DOWN_S)
                for slot in slots:
                    self.fleet.start(slot)
                await asyncio.gather(*(self.fleet.wait_ready(s) for s in slots))
            elif kind == "redis_restart":
                self.redis.kill()
                await asyncio.sleep(PROCESS_DOWN_S)
                self.redis.start()
                await self.redis.wait_ready()
            elif kind in ("postgres_stop", "postgres_crash"):
                await asyncio.to_thread(self.pg.stop, "fast" if kind == "postgres_stop" else "immediate")
                await asyncio.sleep(POSTGRES_DOWN_S)
                self.pg.start()
                await self.pg.wait_ready()
            elif kind == "gone_switch":
                async with aiohttp.ClientSession() as http, http.post(self._rcv("/_chaos/gone")) as r:
                    fault.at = (await r.json())["gone_since"]
            elif kind in ("hostile_on", "hostile_off"):
                on = "1" if kind == "hostile_on" else "0"
                async with aiohttp.ClientSession() as http, http.post(self._rcv(f"/_chaos/hostile?on={on}")) as r:
                    got = await r.json()
                    fault.at = got["hostile_since" if kind == "hostile_on" else "hostile_until"]
            fault.until = time.time()

    # ---- watching ---------------------------------------------------------------------------------

    async def watch(self, publisher: Publisher) -> None:
        """Sample RSS and overdue deliveries; say how the load goes every 15 s."""
        conn: asyncpg.Connection | None = None
        last_say = time.monotonic()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            while True:
                self.fleet.sample_rss()
                try:
                    if conn is None or conn.is_closed():
                        conn = await asyncpg.connect(self.pg.url, timeout=2)
                    rows = await conn.fetch(OVERDUE_SQL, self.dead_ids, OVERDUE_LIMIT_S, self.hostile_ids, timeout=5)
                    self.overdue.append((time.time(), *overdue_split(rows)))
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                    conn = None
                if time.monotonic() - last_say >= 15:
                    last_say = time.monotonic()
                    received = "?"
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                        async with http.get(self._rcv("/_chaos/count")) as r:
                            received = str((await r.json())["received"])
                    say(f"t={time.time() - self.load_start:>4.0f}s acknowledged {len(publisher.acks)} of "
                        f"{publisher.published} events; receiver got {received} (endpoint, event) pairs; "
                        f"overdue {self.overdue[-1][2] if self.overdue else 0:.0f} s")
                await asyncio.sleep(RSS_EVERY_S)

    def timing(self) -> Timing:
        outages = [(f.at, f.until or time.time()) for f in self.faults if f.kind.startswith("postgres")]
        return Timing(
            retry_total_s=schedule_total_s(RETRY_SCHEDULE), replay_total_s=schedule_total_s(REPLAY_SCHEDULE),
            margin_s=DEADLINE_MARGIN_S, oldest_held_limit_s=OLDEST_HELD_LIMIT_S, outages=outages,
            phase=(self.load_start + self.p.phase[0], self.load_start + self.p.phase[1]),
            load=(self.load_start, self.load_end or time.time()), drain_end=self.drain_end or time.time())

    async def drain_state(self, expected_healthy: int, healthy_ids: list[Any],
                          dead_ids: list[Any]) -> tuple[bool, int, int, int] | None:
        """(drained, pending deliveries that may still settle in time, settled deliveries, pending deliveries),
        or None while Postgres does not answer; the dead endpoint's deliveries left out (as ever: the drill does
        not wait for them; the deadline check judges those settled or already late). Drained: every event fanned
        out, nothing pending, and every healthy (event, endpoint) pair succeeded. A pending delivery may still
        settle in time while its deadline plus margin is ahead."""
        try:
            conn = await asyncpg.connect(self.pg.url, timeout=3)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return None
        try:
            has_deadline = await deadline_column(conn)
            row = await conn.fetchrow(
                """SELECT (SELECT count(*) FROM events WHERE fanned_out_at IS NULL) AS unfanned,
                          (SELECT count(*) FROM deliveries WHERE status = 'pending'
                             AND endpoint_id <> ALL($2::uuid[])) AS pending,
                          (SELECT count(*) FROM deliveries WHERE status = 'succeeded'
                             AND endpoint_id = ANY($1::uuid[])) AS succeeded,
                          (SELECT count(*) FROM deliveries WHERE status <> 'pending') AS settled,
                          extract(epoch FROM now())::float8 AS now""", healthy_ids, dead_ids)
            pending = await conn.fetch(
                f"""SELECT d.id, d.created_at,
                           {'d.deadline_at' if has_deadline else 'NULL::timestamptz'} AS deadline_at,
                           j.created_at AS job_created_at, j.total AS job_total, j.rate_per_s AS job_rate
                    FROM deliveries d LEFT JOIN recover_jobs j ON j.id = d.recover_job_id
                    WHERE d.status = 'pending' AND d.endpoint_id <> ALL($1::uuid[])""", dead_ids)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            return None
        finally:
            await conn.close()
        timing = self.timing()
        retried = self._retried()
        waitable = 0
        for p in pending:
            job = RecoverJob(p["job_created_at"], int(p["job_total"]), float(p["job_rate"])) \
                if p["job_created_at"] is not None else None
            deadline, _ = deadline_of(p["created_at"], p["deadline_at"], job, retried.get(p["id"]), timing)
            if row["now"] <= deadline + timing.margin(deadline):
                waitable += 1
        drained = bool(row["unfanned"] == 0 and row["pending"] == 0 and row["succeeded"] >= expected_healthy)
        if row["unfanned"]:
            waitable += int(row["unfanned"])
        return drained, waitable, int(row["settled"]), len(pending)

    def _retried(self) -> dict[Any, float]:
        from shared import ids

        if self.churn is None:
            return {}
        return {u: at for h in self.churn.histories.values() for dlv, at in h.retried.items()
                if (u := ids.decode("dlv", dlv)) is not None}

    async def drain(self, expected: int, healthy_ids: list[Any]) -> tuple[bool, str]:
        """Wait until drained and nothing pending may still settle in time; or until every delivery still
        pending is already past its deadline plus margin and nothing has settled for DRAIN_IDLE_S (waiting
        longer would not change a verdict: each of them fails the deadline check already); or the drain's
        time is up."""
        drain_until = time.monotonic() + min(self.p.drain_s, self.p.budget_s - self.elapsed() - 30)
        last_settled, last_change = -1, time.monotonic()
        why = f"the backlog did not drain within {self.p.drain_s:.0f} s of the load's end"
        while time.monotonic() < drain_until:
            state = await self.drain_state(expected, healthy_ids, self.dead_ids)
            if state is not None:
                drained, waitable, settled, pending = state
                if settled != last_settled:
                    last_settled, last_change = settled, time.monotonic()
                if drained and waitable == 0:
                    return True, ""
                if waitable == 0 and time.monotonic() - last_change >= DRAIN_IDLE_S:
                    return False, (f"the backlog did not drain: {pending} deliveries still pending, each past its "
                                   f"deadline plus margin, and none settled for {DRAIN_IDLE_S:g} s")
            await asyncio.sleep(1)
        return False, why

    async def settle_workers(self) -> None:
        """After the drain: until every live worker reports at most HELD_AFTER_DRAIN held deliveries (its gauge
        is refreshed every lease/3 s), at most HELD_WAIT_S."""
        until = time.monotonic() + HELD_WAIT_S
        while time.monotonic() < until and self.scraper is not None:
            pending = False
            for slot in self.fleet.of("worker"):
                life = self.scraper.lives.get((slot.name, len(slot.lives) - 1))
                if life is None or not slot.alive or not life.has(HELD):
                    continue
                if not any(t >= self.drain_end and v[HELD] <= HELD_AFTER_DRAIN
                           for t, v in life.samples if HELD in v):
                    pending = True
            if not pending:
                return
            await asyncio.sleep(0.5)

    # ---- the drill --------------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        await self.setup()
        publisher = Publisher([(s.name, s.url) for s in self.fleet.of("api")], self.token,
                              EventMaker(self.world, secrets.token_hex(4)), self.p.rate, self.p.senders)
        self.scraper = Scraper(self.fleet)
        scraper = asyncio.create_task(self.scraper.run())
        self.load_start = time.time()
        maker = publisher.maker
        self.churn = Churn(self.world, [s.url for s in self.fleet.of("api")], self._rcv(""), self.load_start,
                           plan(self.world, self.p.phase, self.p.churn_period_s, seed=8),
                           burst=lambda business, n: publisher.inject([maker.next(business) for _ in range(n)]))
        watcher = asyncio.create_task(self.watch(publisher))
        faults = asyncio.create_task(self.run_plan())
        churning = asyncio.create_task(self.churn.run())
        try:
            await publisher.run(self.p.duration_s, give_up_after_s=60)
            self.load_end = time.time()
            _, late = await asyncio.wait({faults, churning}, timeout=60)
            if faults in late:
                self.plan_late.append("the fault plan did not finish within 60 s of the load's end")
            if churning in late:
                self.plan_late.append("the churn plan did not finish within 60 s of the load's end")
            if faults.done() and not faults.cancelled() and faults.exception() is not None:
                raise faults.exception()  # type: ignore[misc]
            if churning.done() and not churning.cancelled() and churning.exception() is not None:
                self.plan_late.append(f"the churn plan failed: {churning.exception()!r}")
            say(f"load done: {len(publisher.acks)} events acknowledged, {publisher.unacknowledged} not; "
                f"{len(self.churn.log)} churn actions; draining (at most {self.p.drain_s:.0f} s)")

            healthy = [e for e in self.world.endpoints if e.kind in HEALTHY_KINDS]
            expected = sum(1 for a in publisher.acks.values() for e in self.world.business(a.business).endpoints
                           if e.kind in HEALTHY_KINDS and e.matches(a.type))
            drained, not_drained_why = await self.drain(expected, [e.uuid for e in healthy])
            self.drain_end = time.time()
            drain_s = self.drain_end - self.load_end
            say(f"{'drained' if drained else 'NOT drained'} {drain_s:.0f} s after the load ended")
            await self.settle_workers()
        finally:
            for task in (watcher, faults, churning, scraper):
                task.cancel()
            await asyncio.gather(watcher, faults, churning, scraper, return_exceptions=True)

        async with aiohttp.ClientSession() as http, http.get(self._rcv("/_chaos/records")) as r:
            received = orjson.loads(await r.read())
        db = await read_db(self.pg.url, self.dead_ids, self.hostile_ids)
        max_attempts = len(RETRY_SCHEDULE.split(",")) + 1
        timing = self.timing()
        histories = self.churn.histories
        ledger = check(self.world, publisher.acks, received["records"], db, self.faults, max_attempts, histories)
        if not drained:
            ledger.fail(not_drained_why)
        for message in self.plan_late:
            ledger.fail(message)
        if received["dropped"]:
            ledger.fail(f"the receiver dropped {received['dropped']} records (over its bound)")
        per_kind = check_deadlines(ledger, self.world, db, histories, timing)
        check_receipt_gaps(ledger, self.world, received["records"], timing)
        worker_logs = self._worker_log_figures()
        workers = check_workers(ledger, list(self.scraper.lives.values()), timing, self.writer_complaints)
        ledger.named("no_crashed_tasks", [f"{len(self.crashed)} worker tasks died of an exception nobody handled: "
                                          + "; ".join(self.crashed[:3])] if self.crashed else [],
                     crashed=len(self.crashed))
        self._check_churn_actions(ledger)
        report = {"profile": self.p.name, "drained_after_load_s": round(drain_s, 1), **ledger.figures}
        report["api"] = self._api_figures(publisher, ledger)
        report["rss_mb"] = self._rss_figures(ledger)
        report["worker_logs"] = worker_logs
        breaker_s = report["worker_logs"]["longest_breaker_open_s"]
        dead_max = max([o[3] for o in self.overdue] + [db.dead_max_overdue_s])
        hostile_max = max([o[4] for o in self.overdue] + [db.hostile_max_overdue_s])
        report["overdue_during_run"] = {
            "max_s": round(max((o[2] for o in self.overdue), default=0.0), 1),
            "samples_with_deliveries_over_60s": sum(1 for o in self.overdue if o[1] > 0),
            "dead_endpoint_max_s": round(dead_max, 1), "hostile_endpoints_max_s": round(hostile_max, 1)}
        if report["overdue_during_run"]["samples_with_deliveries_over_60s"]:
            ledger.fail(f"deliveries were pending more than {OVERDUE_LIMIT_S:g} s past their due time during the run "
                        f"(max {report['overdue_during_run']['max_s']} s)")
        if dead_max > breaker_s + OVERDUE_LIMIT_S:
            ledger.fail(f"the dead endpoint's deliveries waited {dead_max:.0f} s past due, more than its longest "
                        f"breaker opening ({breaker_s:g} s) and a minute")
        if hostile_max > breaker_s + OVERDUE_LIMIT_S:
            ledger.fail(f"the hostile endpoints' deliveries waited {hostile_max:.0f} s past due, more than the "
                        f"longest breaker opening ({breaker_s:g} s) and a minute")
        for slow in report["slowest"]:
            slow["acked_at_s"] = round(slow.pop("acked_at") - self.load_start, 1)
        report["faults"] = [{"kind": f.kind, "target": f.target, "at_s": round(f.at - self.load_start, 1),
                             "back_after_s": round(f.until - f.at, 1) if f.until else None} for f in self.faults]
        report["hostile_phase"] = self._phase_figures(received, per_kind, workers, ledger)
        report["checks"] = ledger.checks
        report["settings"] = {"load_s": self.p.duration_s, "rate_per_s": self.p.rate,
                              "businesses": len(self.world.businesses), "endpoints": self.world.layout(),
                              "apis": 2, "workers": 2, **PRODUCT_SETTINGS, "lease_s": LEASE_S,
                              "hostile_phase_s": list(self.p.phase), "deadline_margin_s": DEADLINE_MARGIN_S,
                              "oldest_held_limit_s": OLDEST_HELD_LIMIT_S,
                              "postgres": str(self.pg.bin), "redis": str(self.redis.bin),
                              "dispatcher_imported_from": self.code_under_test}
        report["failures"] = ledger.failures
        report["passed"] = not ledger.failures
        return report

    def _check_churn_actions(self, ledger: Any) -> None:
        """Every churn action got an answer that settled it: a 2xx, a 409 the contract allows (a recover already
        running, a disabled endpoint), or a 404 for a delete an earlier, unanswered try had done."""
        assert self.churn is not None
        bad = [d for d in self.churn.log
               if not (d.ok or d.status in ("409", "nothing to retry")
                       or (d.kind == "delete" and d.status == "404" and d.tries > 1))]
        ledger.named("churn_actions_answered", [
            f"{len(bad)} churn actions were not carried out: " + "; ".join(
                f"{d.kind} {d.label} at {d.sent_at - self.load_start:.0f} s: {d.status} {d.detail[:150]}"
                for d in bad[:5])] if bad else [],
            planned=len(self.churn.actions), logged=len(self.churn.log))

    def _phase_figures(self, received: dict[str, Any], per_kind: dict[str, dict[str, Any]],
                       workers: dict[str, Any], ledger: Any) -> dict[str, Any]:
        assert self.churn is not None
        kinds = {e.path: e.kind for e in self.world.endpoints}
        for h in self.churn.histories.values():
            for path, _, _ in h.paths:
                kinds[path] = h.endpoint.kind
        requests: dict[str, Counter[str]] = {}
        from receiver import RETRY_AFTER_LABELS as labels
        for r in received["records"]:
            kind = kinds.get(r[0], "?")
            if kind not in (*HOSTILE_KINDS, CHURN_KIND):
                continue
            what = str(r[7])
            if what.startswith("badretry-"):
                what = "Retry-After " + labels[int(what.removeprefix("badretry-"))]
            requests.setdefault(kind, Counter())[f"{what}: {r[5]}"] += 1
        by_kind = {}
        for kind in (*HOSTILE_KINDS, CHURN_KIND, *HEALTHY_KINDS, "gone", "dead"):
            if kind in per_kind or kind in requests:
                by_kind[kind] = {"endpoints": sum(1 for e in self.world.endpoints if e.kind == kind),
                                 **per_kind.get(kind, {})}
                if kind in requests:
                    by_kind[kind]["requests"] = dict(sorted(requests[kind].items()))
        on = received.get("hostile_since")
        off = received.get("hostile_until")
        return {"window_s": list(self.p.phase),
                "hostile_from_s": round(on - self.load_start, 1) if on else None,
                "hostile_until_s": round(off - self.load_start, 1) if off else None,
                "by_kind": by_kind, "churn": self.churn.figures(), "workers": workers,
                "checks_failed": sorted(n for n, c in ledger.checks.items() if not c["passed"])}

    def _api_figures(self, publisher: Publisher, ledger: Any) -> dict[str, Any]:
        outages = [(f.at, (f.until or f.at) + 5) for f in self.faults if f.kind.startswith("postgres")]
        kills = [(f.at, (f.until or f.at) + 1) for f in self.faults if f.kind == "api_kill"]

        def within(t: float, windows: list[tuple[float, float]]) -> bool:
            return any(a - 1 <= t <= b for a, b in windows)

        by_status: dict[str, int] = {}
        for (_, status), n in publisher.tally.items():
            by_status[status] = by_status.get(status, 0) + n
        s503 = [a for a in publisher.answers if a.status == "503"]
        refused = [a for a in publisher.answers if a.status in ("refused", "reset")]
        five_hundreds = [a for a in publisher.answers if a.status.startswith("5") and a.status != "503"]
        unhandled = sum(1 for path in self.fleet.log_paths() if path.name.startswith("api-")
                        for line in log_lines(path) if line.get("msg") == "unhandled error")
        churn_answers = self.churn.answers if self.churn is not None else []
        churn_5xx = [a for a in churn_answers if a[2] >= 500 and a[2] != 503]
        churn_by_status = Counter(str(a[2]) for a in churn_answers)
        figures = {
            "requests": len(publisher.answers), "by_status": by_status,
            "churn_requests": len(churn_answers), "churn_by_status": dict(sorted(churn_by_status.items())),
            "churn_answers_5xx": len(churn_5xx),
            "churn_answers_503_outside_postgres_outages": sum(
                1 for a in churn_answers if a[2] == 503 and not within(a[0], outages)),
            "by_process": {f"{api} {status}": n for (api, status), n in sorted(publisher.tally.items())},
            "answers_500": len(five_hundreds), "unhandled_errors_logged": unhandled,
            "answers_503": len(s503), "answers_503_outside_postgres_outages": sum(
                1 for a in s503 if not within(a.at, outages)),
            "no_answer": len(refused), "no_answer_outside_api_kills": sum(
                1 for a in refused if not within(a.at, kills)),
            "retried_requests": publisher.retries, "events_acknowledged_as_duplicate": publisher.duplicates_acked,
            "events_never_acknowledged": publisher.unacknowledged,
        }
        if five_hundreds or unhandled:
            samples = "; ".join(f"{a.api} {a.status} {a.detail[:150]}" for a in five_hundreds[:3])
            ledger.fail(f"the API answered {len(five_hundreds)} 5xx other than 503 "
                        f"({unhandled} unhandled errors logged): {samples}")
        if churn_5xx:
            ledger.fail(f"the API answered {len(churn_5xx)} churn requests (webhook endpoint routes) with a 5xx other "
                        "than 503: " + "; ".join(f"{a[1]} {a[2]} {a[3][:150]}" for a in churn_5xx[:3]))
        bad = [a for a in publisher.bad if not (a.status.startswith("5") and a.status != "503")]
        if bad:
            ledger.fail(f"{len(bad)} bad API answers (4xx, or 503 not problem+json), e.g. "
                        + "; ".join(f"{a.api} {a.status} {a.detail[:150]}" for a in bad[:3]))
        if publisher.unacknowledged:
            ledger.fail(f"{publisher.unacknowledged} events were never acknowledged")
        return figures

    def _rss_figures(self, ledger: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for slot in self.fleet.slots:
            for n, life in enumerate(slot.lives):
                name = f"{slot.name}" + (f" (start {n + 1})" if len(slot.lives) > 1 else "")
                warm_from = life.started + self.p.warmup_s
                window = [(t, mb) for t, mb in life.samples if warm_from <= t <= self.load_end]
                peak = max((mb for _, mb in life.samples), default=None)
                if len(window) < 5 or window[-1][0] - window[0][0] < 20:
                    out[name] = {"max": round(peak, 1) if peak else None, "note": "too short a life to compare"}
                    continue
                warm = statistics.median(mb for _, mb in window[:3])
                end = statistics.median(mb for _, mb in window[-3:])
                growth = end - warm
                out[name] = {"after_warmup": round(warm, 1), "end_of_load": round(end, 1), "max": round(peak or 0, 1),
                             "growth": round(growth, 1), "growth_pct": round(100 * growth / warm, 1),
                             "compared_over_s": round(window[-1][0] - window[0][0])}
                if growth > max(RSS_GROWTH_MB, RSS_GROWTH_FRACTION * warm):
                    ledger.fail(f"{name}: RSS grew {growth:.0f} MiB ({100 * growth / warm:.0f} %) from "
                                f"{warm:.0f} MiB after warm-up to {end:.0f} MiB at the end of the load")
                if peak and peak > RSS_MAX_MB:
                    ledger.fail(f"{name}: RSS reached {peak:.0f} MiB (bound {RSS_MAX_MB:.0f})")
        return out

    def _worker_log_figures(self) -> dict[str, Any]:
        """From the workers' logs: sweeps, breaker trips, errors (by the first line of their message), tasks
        that died of an exception nobody handled (asyncio's own report), and the result writer's complaints
        (``writer_complaints``: per process life, when, how many results it held, what it got)."""
        swept = 0
        trips, longest = 0, 0.0
        errors: dict[str, int] = {}
        crashed: list[str] = []
        for path in self.fleet.log_paths():
            if not path.name.startswith("worker-"):
                continue
            slot, _, life = path.stem.partition(".")
            life_name = f"{slot} (start {int(life) + 1})" if life.isdigit() and int(life) else slot
            for line in log_lines(path):
                msg = str(line.get("msg"))
                if msg == "swept events that missed their fan-out":
                    swept += int(str(line.get("events", 0)))
                if msg == "endpoint breaker open: its deliveries wait":
                    trips += 1
                    longest = max(longest, float(str(line.get("open_s", 0))))
                if line.get("level") in ("error", "critical"):
                    first = msg.splitlines()[0] if msg else msg
                    errors[first] = errors.get(first, 0) + 1
                    if line.get("logger") == "asyncio":
                        cause = (str(line.get("exc", "")).strip().splitlines() or [msg])[-1]
                        crashed.append(f"{path.stem}: {first} ({cause[:160]})")
                if msg.startswith("could not record delivery results"):
                    with contextlib.suppress(ValueError, TypeError):
                        at = datetime.fromisoformat(str(line.get("ts"))).timestamp()
                        held = int(str(line.get("results", 0))) + int(str(line.get("deferrals", 0)))
                        cause = (str(line.get("exc", "")).strip().splitlines() or ["?"])[-1]
                        self.writer_complaints.setdefault(life_name, []).append((at, held, cause[:200]))
        self.crashed = crashed
        return {"events_swept_after_a_lost_fan_out": swept, "breaker_trips": trips, "longest_breaker_open_s": longest,
                "errors_logged": errors, "tasks_crashed": len(crashed),
                "writer_complaints": {k: [(round(t - self.load_start, 1), n, c[:100]) for t, n, c in v]
                                      for k, v in self.writer_complaints.items()}}

def summary(report: dict[str, Any], took_s: float) -> str:
    exp = report["expected_deliveries"]
    api = report["api"]
    lines = [
        f"chaos ({report['profile']}): {'PASSED' if report['passed'] else 'FAILED'} in {took_s:.0f} s",
        f"  events acknowledged      {report['events_acknowledged']} "
        f"({api['events_acknowledged_as_duplicate']} on a retry, as duplicates)",
        f"  deliveries expected      {exp['healthy']} to healthy/faulty endpoints, {exp['gone']} to the gone one, "
        f"{exp['dead']} to the dead one; {report['deliveries_in_postgres']} in Postgres "
        f"{report['delivery_statuses']}",
        f"  requests received        {report['requests_received']} ({report['received_2xx']} complete 2xx)",
        "  faults injected          " + ", ".join(f"{f['kind']} {f['target']} @{f['at_s']}s"
                                                  for f in report["faults"]),
        f"  receiver faults          {report['receiver_faults']}",
        f"  lost                     {report['lost']} (unsettled {report['unsettled']})",
        f"  duplicates               {report['duplicates']} ({report['duplicates_explained']} in flight at a "
        f"worker kill, {report['duplicates_unexplained']} unexplained)",
        f"  stuck                    {report['stuck_at_end']} at the end; max overdue during the run "
        f"{report['overdue_during_run']['max_s']} s (the dead endpoint's "
        f"{report['overdue_during_run']['dead_endpoint_max_s']} s; breaker trips "
        f"{report['worker_logs']['breaker_trips']}, longest open {report['worker_logs']['longest_breaker_open_s']} s)",
        f"  lag (ack -> receipt)     {report['lag_s']}",
        "  slowest                  " + "; ".join(f"{x['lag_s']} s at {x['endpoint']} (acked @{x['acked_at_s']}s, "
                                                  f"{x['requests']} requests)" for x in report["slowest"][:3]),
        f"  API answers              {api['by_status']} (500s: {api['answers_500']}, 503 outside Postgres "
        f"outages: {api['answers_503_outside_postgres_outages']})",
        f"  gone endpoint            {report['gone_endpoint']}; g410 {report['g410_endpoints']}; requests after "
        f"disable {report['gone_requests_after_disable']}",
        f"  hostile endpoints        {report['hostile_endpoints']}",
        f"  churn endpoints          {report['churn_endpoints']}; queued while disabled "
        f"{report['queued_while_disabled']}",
        f"  dead endpoint            {report['dead_endpoint']}",
        "  RSS (MiB)                " + "; ".join(
            f"{k}: " + (f"{v['after_warmup']} -> {v['end_of_load']} (max {v['max']})" if "growth" in v
                        else f"max {v['max']} ({v['note']})") for k, v in report["rss_mb"].items()),
        f"  drained                  {report['drained_after_load_s']} s after the load",
        f"  code under test          {report['settings']['dispatcher_imported_from']}",
    ]
    lines += phase_summary(report)
    for failure in report["failures"]:
        lines.append(f"  FAILURE: {failure}")
    return "\n".join(lines)


def phase_summary(report: dict[str, Any]) -> list[str]:
    phase = report["hostile_phase"]
    checks = report["checks"]
    lines = [f"  hostile phase            {phase['window_s'][0]:g}-{phase['window_s'][1]:g} s into the load (receivers "
             f"hostile from {phase['hostile_from_s']} to {phase['hostile_until_s']} s); per kind: deliveries "
             "succeeded/failed/pending, settled late, max settle time vs deadline"]
    for kind, row in phase["by_kind"].items():
        if "deliveries" not in row:
            continue
        late = row.get("max_lateness_s")
        lines.append(f"    {kind:<10} x{row['endpoints']:<3} {row['deliveries']:>6}: {row.get('succeeded', 0)}/"
                     f"{row.get('failed', 0)}/{row.get('pending', 0)}, late {row['late']}, max "
                     f"{'-' if late is None else f'{late:+.1f} s'}")
    churn = phase["churn"]
    lines.append("  churn actions            " + "; ".join(
        f"{k} " + ", ".join(f"{n} {o}" for o, n in v.items()) for k, v in sorted(churn["by_action"].items()))
        + f" (requests in flight at the deletes: {churn['requests_in_flight_at_deletes']})")
    deadline = checks["settled_by_deadline"]
    lines.append(f"  deadline                 {deadline['checked']} checked, {deadline['late']} late "
                 f"({deadline['still_pending_past_deadline']} still pending), max {deadline['max_lateness_s']} s after "
                 f"(margin {deadline['margin_s']:g} s; deadline from {deadline['deadline_from']})")
    held = checks["held_bounded"]
    oldest = checks["oldest_held_bounded"]
    writer = checks["writer_recovers"]
    lives = phase["workers"]["per_life"]
    lines.append(f"  workers                  max held {held['max_held']} (bound {held['bound']}), after the drain "
                 + ", ".join(f"{k} {v.get('held_after_drain', '-')}" for k, v in lives.items())
                 + f"; oldest held {oldest['max_oldest_held_s'] if oldest['measured'] else 'not exported'}"
                 f" (bound {oldest['bound_s']:g} s); flush failures {writer['flush_failures']:g}, results dropped "
                 f"{writer['results_dropped']:g}; longest standstill "
                 + ", ".join(f"{k} {v.get('longest_standstill_s', '-')} s" for k, v in lives.items())
                 + f" ({'/'.join(checks['workers_keep_claiming']['counters'])})")
    if phase["workers"]["metrics_absent"]:
        lines.append(f"  metrics not exported     {', '.join(phase['workers']['metrics_absent'])}")
    gaps = checks["healthy_receipts_never_stop"]
    lines.append(f"  ok receipts in phase     {gaps['receipts_in_phase']}, longest gap {gaps['longest_gap_s']} s "
                 f"(bound {gaps['bound_s']:g} s), empty 5-s windows {gaps['empty_5s_windows']}")
    failed = [n for n, c in checks.items() if not c["passed"]]
    lines.append(f"  named checks             {len(checks) - len(failed)} passed"
                 + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the short drill (about 2 minutes)")
    parser.add_argument("--report", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--keep-logs", action="store_true", help="keep the run directory (logs, Postgres data)")
    args = parser.parse_args()
    profile = QUICK if args.quick else FULL
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    run_dir = Path(tempfile.mkdtemp(prefix="kaihooks-chaos-"))
    report: dict[str, Any] | None = None
    try:
        with ExitStack() as stack:
            drill = Drill(profile, stack, run_dir)
            try:
                report = asyncio.run(asyncio.wait_for(drill.run(), profile.budget_s + 60))
            finally:
                say("stopping everything it started")
        took = time.monotonic() - started
        assert report is not None
        report["took_s"] = round(took)
        print(summary(report, took), flush=True)
        if args.report:
            args.report.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        return 0 if report["passed"] else 1
    finally:
        if args.keep_logs or (report is not None and not report["passed"] and os.environ.get("CHAOS_KEEP_FAILED")):
            say(f"logs kept in {run_dir}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
