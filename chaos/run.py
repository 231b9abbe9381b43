"""The reliability drill (``make chaos``; ``make chaos QUICK=1`` for the short one that ``make test`` runs).

    .venv/bin/python chaos/run.py                 # the full drill, about 10 minutes
    .venv/bin/python chaos/run.py --quick         # about 2 minutes
    .venv/bin/python chaos/run.py --quick --report /tmp/chaos.json --keep-logs

It starts a Postgres cluster and a Redis server of its own on free ports (see ``servers.py``), migrates the
database with ``kaihooks migrate``, starts two API processes (``python -m api``), two workers (``python -m
dispatcher``) and the scripted receivers (``receiver.py``), makes businesses and endpoints (``world.py``),
and publishes a steady load of events over both API processes (``load.py``) while it, on a fixed plan:
SIGKILLs a worker and starts it again, SIGKILLs an API process and starts it again, kills Redis and starts
it empty, stops Postgres for 10 s (the full drill also crashes it, and kills both workers at once), and
turns the ``gone`` receiver to 410. Then it waits for the backlog to drain and checks the ledger
(``ledger.py``): nothing acknowledged lost, duplicates only from requests in flight at a worker's kill,
nothing stuck, no 500 from the API, memory flat. Exit status 0 when every check holds.

Everything it starts is stopped, and its temporary directory removed, however it ends.
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
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp
import asyncpg
import orjson

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

from fleet import Fleet, log_lines  # noqa: E402
from ledger import OVERDUE_LIMIT_S, OVERDUE_SQL, Fault, check, overdue_split, read_db  # noqa: E402
from load import Publisher  # noqa: E402
from servers import Postgres, Redis  # noqa: E402
from world import EventMaker, make_world  # noqa: E402

from bench.procs import free_port  # noqa: E402
from bench.procs import start as start_child  # noqa: E402
from shared.settings import Settings  # noqa: E402

RETRY_SCHEDULE = "1s,2s,3s,5s,8s"
DELIVERY_TIMEOUT_S = 3
HANG_S = 20  # a hanging receiver holds a request this long: far past the delivery timeout
# Settings of every API and worker process: a short retry schedule and timeout so the drill ends in minutes,
# a short breaker. Everything else (leases, polls, in-flight caps) is the product's default.
PRODUCT_SETTINGS = {
    "KAIHOOKS_RETRY_SCHEDULE": RETRY_SCHEDULE,
    "KAIHOOKS_DELIVERY_TIMEOUT": str(DELIVERY_TIMEOUT_S),
    "KAIHOOKS_CIRCUIT_OPEN_S": "2",
    "KAIHOOKS_ALLOW_PRIVATE_TARGETS": "1",
    "KAIHOOKS_LISTEN_HOST": "127.0.0.1",
    "KAIHOOKS_DEV": "0",  # JSON log lines
}
POSTGRES_DOWN_S = 10.0
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


QUICK = Profile(
    "quick", duration_s=60, rate=30, businesses=18, senders=4, warmup_s=15, drain_s=75, budget_s=175,
    plan=((8, "worker_kill", "worker-0"), (16, "api_kill", "api-0"), (23, "redis_restart", "redis"),
          (27, "gone_switch", "receiver"), (31, "postgres_stop", "postgres")),
)
FULL = Profile(
    "full", duration_s=420, rate=60, businesses=40, senders=6, warmup_s=30, drain_s=240, budget_s=870,
    plan=((30, "worker_kill", "worker-0"), (55, "api_kill", "api-0"), (80, "redis_restart", "redis"),
          (100, "gone_switch", "receiver"), (120, "postgres_stop", "postgres"),
          (180, "worker_kill", "worker-1"), (205, "api_kill", "api-1"), (230, "redis_restart", "redis"),
          (260, "postgres_crash", "postgres"), (320, "worker_kill", "worker-0,worker-1"),
          (350, "api_kill", "api-0")),
)


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
        # (wall, deliveries overdue > 60 s, max overdue s, the dead endpoint's max overdue s)
        self.overdue: list[tuple[float, int, float, float]] = []
        self.load_start = 0.0
        self.load_end = 0.0
        self.dead_ids: list[Any] = []

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
                                      self.p.businesses)
        self.dead_ids = [e.uuid for e in self.world.endpoints if e.kind == "dead"]
        async with aiohttp.ClientSession() as http, \
                http.post(self._rcv("/_chaos/secrets"), data=orjson.dumps(self.world.secrets)) as r:
            assert r.status == 200, await r.text()
        say(f"set up in {self.elapsed():.0f} s: {len(self.world.businesses)} businesses, endpoints "
            f"{self.world.layout()}")

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
                    rows = await conn.fetch(OVERDUE_SQL, self.dead_ids, OVERDUE_LIMIT_S, timeout=5)
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

    async def drained(self, expected_healthy: int, healthy_ids: list[Any], dead_ids: list[Any]) -> bool:
        try:
            conn = await asyncpg.connect(self.pg.url, timeout=3)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False
        try:
            row = await conn.fetchrow(
                """SELECT (SELECT count(*) FROM events WHERE fanned_out_at IS NULL) AS unfanned,
                          (SELECT count(*) FROM deliveries WHERE status = 'pending'
                             AND endpoint_id <> ALL($2::uuid[])) AS pending,
                          (SELECT count(*) FROM deliveries WHERE status = 'succeeded'
                             AND endpoint_id = ANY($1::uuid[])) AS succeeded""", healthy_ids, dead_ids)
        finally:
            await conn.close()
        return bool(row["unfanned"] == 0 and row["pending"] == 0 and row["succeeded"] >= expected_healthy)

    # ---- the drill --------------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        await self.setup()
        publisher = Publisher([(s.name, s.url) for s in self.fleet.of("api")], self.token,
                              EventMaker(self.world, secrets.token_hex(4)), self.p.rate, self.p.senders)
        self.load_start = time.time()
        watcher = asyncio.create_task(self.watch(publisher))
        plan = asyncio.create_task(self.run_plan())
        try:
            await publisher.run(self.p.duration_s, give_up_after_s=60)
            self.load_end = time.time()
            await asyncio.wait_for(plan, 60)
            say(f"load done: {len(publisher.acks)} events acknowledged, {publisher.unacknowledged} not; "
                f"draining (at most {self.p.drain_s:.0f} s)")

            from world import HEALTHY_KINDS

            healthy = [e for e in self.world.endpoints if e.kind in HEALTHY_KINDS]
            expected = sum(1 for a in publisher.acks.values() for e in self.world.business(a.business).endpoints
                           if e.kind in HEALTHY_KINDS and e.matches(a.type))
            dead = self.dead_ids
            drain_until = time.monotonic() + min(self.p.drain_s, self.p.budget_s - self.elapsed() - 25)
            drained = False
            while time.monotonic() < drain_until:
                if await self.drained(expected, [e.uuid for e in healthy], dead):
                    drained = True
                    break
                await asyncio.sleep(1)
            drain_s = time.time() - self.load_end
            say(f"{'drained' if drained else 'NOT drained'} {drain_s:.0f} s after the load ended")
        finally:
            watcher.cancel()
            plan.cancel()
            await asyncio.gather(watcher, plan, return_exceptions=True)

        async with aiohttp.ClientSession() as http, http.get(self._rcv("/_chaos/records")) as r:
            received = orjson.loads(await r.read())
        db = await read_db(self.pg.url, self.dead_ids)
        max_attempts = len(RETRY_SCHEDULE.split(",")) + 1
        ledger = check(self.world, publisher.acks, received["records"], db, self.faults, max_attempts)
        if not drained:
            ledger.fail(f"the backlog did not drain within {self.p.drain_s:.0f} s of the load's end")
        if received["dropped"]:
            ledger.fail(f"the receiver dropped {received['dropped']} records (over its bound)")
        report = {"profile": self.p.name, "drained_after_load_s": round(drain_s, 1), **ledger.figures}
        report["api"] = self._api_figures(publisher, ledger)
        report["rss_mb"] = self._rss_figures(ledger)
        report["worker_logs"] = self._worker_log_figures()
        breaker_s = report["worker_logs"]["longest_breaker_open_s"]
        dead_max = max([o[3] for o in self.overdue] + [db.dead_max_overdue_s])
        report["overdue_during_run"] = {
            "max_s": round(max((o[2] for o in self.overdue), default=0.0), 1),
            "samples_with_deliveries_over_60s": sum(1 for o in self.overdue if o[1] > 0),
            "dead_endpoint_max_s": round(dead_max, 1)}
        if report["overdue_during_run"]["samples_with_deliveries_over_60s"]:
            ledger.fail(f"deliveries were pending more than {OVERDUE_LIMIT_S:g} s past their due time during the run "
                        f"(max {report['overdue_during_run']['max_s']} s)")
        if dead_max > breaker_s + OVERDUE_LIMIT_S:
            ledger.fail(f"the dead endpoint's deliveries waited {dead_max:.0f} s past due, more than its longest "
                        f"breaker opening ({breaker_s:g} s) and a minute")
        for slow in report["slowest"]:
            slow["acked_at_s"] = round(slow.pop("acked_at") - self.load_start, 1)
        report["faults"] = [{"kind": f.kind, "target": f.target, "at_s": round(f.at - self.load_start, 1),
                             "back_after_s": round(f.until - f.at, 1) if f.until else None} for f in self.faults]
        report["settings"] = {"load_s": self.p.duration_s, "rate_per_s": self.p.rate,
                              "businesses": len(self.world.businesses), "endpoints": self.world.layout(),
                              "apis": 2, "workers": 2, **PRODUCT_SETTINGS,
                              "postgres": str(self.pg.bin), "redis": str(self.redis.bin)}
        report["failures"] = ledger.failures
        report["passed"] = not ledger.failures
        return report

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
        figures = {
            "requests": len(publisher.answers), "by_status": by_status,
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
        swept = 0
        trips, longest = 0, 0.0
        errors: dict[str, int] = {}
        for path in self.fleet.log_paths():
            if not path.name.startswith("worker-"):
                continue
            for line in log_lines(path):
                if line.get("msg") == "swept events that missed their fan-out":
                    swept += int(str(line.get("events", 0)))
                if line.get("msg") == "endpoint breaker open: its deliveries wait":
                    trips += 1
                    longest = max(longest, float(str(line.get("open_s", 0))))
                if line.get("level") in ("error", "critical"):
                    msg = str(line.get("msg"))
                    errors[msg] = errors.get(msg, 0) + 1
        return {"events_swept_after_a_lost_fan_out": swept, "breaker_trips": trips, "longest_breaker_open_s": longest,
                "errors_logged": errors}


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
        f"  gone endpoint            {report['gone_endpoint']}, requests after disable "
        f"{report['gone_requests_after_disable']}",
        f"  dead endpoint            {report['dead_endpoint']}",
        "  RSS (MiB)                " + "; ".join(
            f"{k}: " + (f"{v['after_warmup']} -> {v['end_of_load']} (max {v['max']})" if "growth" in v
                        else f"max {v['max']} ({v['note']})") for k, v in report["rss_mb"].items()),
        f"  drained                  {report['drained_after_load_s']} s after the load",
    ]
    for failure in report["failures"]:
        lines.append(f"  FAILURE: {failure}")
    return "\n".join(lines)


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
                report = asyncio.run(drill.run())
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
