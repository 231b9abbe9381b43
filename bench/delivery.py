"""What the delivery scenarios (limit, P1, P2, P3, P4, P7) share.

- **Worlds**: businesses and webhook endpoints made with the project's own service code
  (``shared.webhook_service.create_endpoint``, as the ``POST …/webhook-endpoints`` route does), each
  endpoint ``http://127.0.0.1:<receiver port>/<kind>/<tag>/<n>`` with its own signing secret. They
  live for the whole run (``ctx.shared``); the receiver's port is chosen once per run so they stay valid.
- **Processes**: the receiver (``bench/receiver.py``), the API (``python -m api``) and one worker
  (``python -m dispatcher``), all with ``KAIHOOKS_ALLOW_PRIVATE_TARGETS=1`` (the receiver is on
  127.0.0.1), started per scenario on the scenario's own ``ExitStack``; the limit client
  (``bench/limit_client.py``).
- **Publishers** in the runner process: ``saturate`` (closed loop: batches of 500 whenever fewer than
  ``backlog`` published events are still unreceived, so the worker never runs dry and the backlog stays
  bounded) and ``paced`` (open loop: a fixed rate, a small batch every ``interval``). Every event is a
  ``call.completed`` with about 1 KiB of data (``callgen``) plus ``sent_at_ns``, the publish time, from
  which the receiver computes publish → receipt; the events go round-robin over the world's businesses.
- **Windows**: the load starts at once (warm-up); CPU of every process group is metered over
  ``[t0, t1]`` (wall clock), and the receiver counts what it received inside the same window.
- **Checks**: what was acknowledged (202) must arrive, signed right, once; the deliveries table must
  agree.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import math
import os
import random
import secrets
import statistics
import sys
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import asyncpg
import callgen
import common
import loadgen
import orjson
import procs
import redis
from setup_env import ROOT, Context

HERE = Path(__file__).resolve().parent
T = TypeVar("T")

BATCH = 500  # the API's maximum batch
BUSINESSES = 200
LIMIT_PATHS = 200  # the limit client spreads its POSTs over this many paths (each its own secret)
LIMIT_CANDIDATES = (8, 16, 32)
LIMIT_DEFAULT_CONCURRENCY = 16  # quality.md's measured best, used when the limit scenario did not run
EVENT_TYPE = "call.completed"
CPU_ORDER = ("limit client", "publisher", "api", "worker", "receiver", "postgres", "redis", "box", "steal", "other")
WORKER_READY = b"worker started"
MAX_EVENTS_PER_WINDOW = 1_000_000  # the count bound of every publishing loop


# ---- worlds -----------------------------------------------------------------------------------------------

@dataclass
class World:
    """Businesses, each with ``endpoints`` endpoints on the receiver; ``group`` is the receiver group
    (``<kind>/<tag>``) of business i's endpoints."""

    tag: str
    business_uuids: list[uuid.UUID]
    business_ids: list[str]  # public ids (biz_…), as publishers name them
    groups: list[str]
    endpoints: int  # per business
    secrets: dict[str, str] = field(repr=False)  # receiver path -> whsec_…

    def group_names(self) -> list[str]:
        return sorted(set(self.groups))


def receiver_port(ctx: Context) -> int:
    port: int = ctx.shared.setdefault("receiver_port", procs.free_port())
    return port


def delivery_env(ctx: Context, **extra: str) -> dict[str, str]:
    """The children's environment plus what delivery to 127.0.0.1 needs, plus ``extra``."""
    return {**ctx.env, "KAIHOOKS_ALLOW_PRIVATE_TARGETS": "1", **extra}


async def _make_world(ctx: Context, tag: str, businesses: int, endpoints: int, hang_every: int) -> World:
    from shared import webhook_service
    from shared.db import create_pool
    from shared.repos import businesses as business_repo
    from shared.settings import Settings

    settings = Settings(  # type: ignore[call-arg]
        DATABASE_URL=ctx.env["DATABASE_URL"], REDIS_URL=ctx.env["REDIS_URL"],
        secret_key=ctx.env["KAIHOOKS_SECRET_KEY"], allow_private_targets=True,
    )
    base = f"http://127.0.0.1:{receiver_port(ctx)}"
    db = await create_pool(settings, min_size=1, max_size=4)
    world = World(tag, [], [], [], endpoints, {})
    try:
        made = [await business_repo.create(db, f"Bench Delivery {tag} {i:04d}") for i in range(businesses)]
        gate = asyncio.Semaphore(4)

        async def endpoint(business: uuid.UUID, path: str) -> None:
            async with gate:
                created = await webhook_service.create_endpoint(
                    db, settings, business_id=business, url=base + path, description=f"bench {tag}",
                    event_types=None, actor={})
            world.secrets[path] = created.secret

        jobs = []
        for i, business in enumerate(made):
            kind = "hang" if hang_every and i % hang_every == hang_every - 1 else "h"
            world.business_uuids.append(business.id)
            world.business_ids.append(business.public_id)
            world.groups.append(f"{kind}/{tag}")
            jobs += [endpoint(business.id, f"/{kind}/{tag}/{i}-{j}") for j in range(endpoints)]
        await asyncio.gather(*jobs)
    finally:
        await db.close()
    return world


def world(ctx: Context, tag: str, businesses: int, endpoints: int = 1, hang_every: int = 0) -> World:
    """The run's world named ``tag``, made on first use."""
    worlds: dict[str, World] = ctx.shared.setdefault("worlds", {})
    if tag not in worlds:
        started = time.monotonic()
        worlds[tag] = asyncio.run(_make_world(ctx, tag, businesses, endpoints, hang_every))
        print(f"bench: made {businesses} businesses x {endpoints} endpoint(s) '{tag}' in "
              f"{time.monotonic() - started:.1f}s", file=sys.stderr, flush=True)
    return worlds[tag]


def limit_secrets(ctx: Context) -> dict[str, str]:
    """Paths and secrets of the limit client (no database: the receiver only needs the secrets)."""
    made: dict[str, str] = ctx.shared.setdefault("limit_secrets", {
        f"/h/lim/{i}": "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode() for i in range(LIMIT_PATHS)})
    return made


async def _sql(ctx: Context, *statements: str) -> list[Any]:
    conn = await asyncpg.connect(ctx.database_url)
    try:
        return [await conn.fetch(statement) for statement in statements]
    finally:
        await conn.close()


def reset_state(ctx: Context) -> None:
    """Every delivery scenario starts with no events, deliveries or attempts, and an empty Redis db."""
    asyncio.run(_sql(ctx, "TRUNCATE events, calls, deliveries, attempts CASCADE"))
    client = redis.Redis.from_url(ctx.redis_url)
    try:
        client.flushdb()
    finally:
        client.close()


async def _db_counts(ctx: Context, w: World) -> dict[str, int]:
    conn = await asyncpg.connect(ctx.database_url)
    try:
        rows = await conn.fetch("SELECT status, count(*) AS n FROM deliveries WHERE business_id = ANY($1::uuid[]) "
                                "GROUP BY status", w.business_uuids)
        attempts = await conn.fetchval("SELECT count(*) FROM attempts a JOIN deliveries d ON d.id = a.delivery_id "
                                       "WHERE d.business_id = ANY($1::uuid[])", w.business_uuids)
        events = await conn.fetchval("SELECT count(*) FROM events WHERE business_id = ANY($1::uuid[])",
                                     w.business_uuids)
    finally:
        await conn.close()
    out = {str(r["status"]): int(r["n"]) for r in rows}
    return {"events": int(events), "attempts": int(attempts), "deliveries": sum(out.values()), **out}


def db_counts(ctx: Context, w: World) -> dict[str, int]:
    """Events, deliveries by status and attempts of the world's businesses, from Postgres."""
    return asyncio.run(_db_counts(ctx, w))


def db_settled(ctx: Context, w: World, succeeded: int, timeout_s: float = 15.0) -> tuple[dict[str, int], float]:
    """Poll (bounded) until Postgres records ``succeeded`` succeeded deliveries and attempts of the world:
    the worker writes results in batches, a little after the receiver has them. (counts, seconds waited)."""
    started = time.monotonic()
    while True:
        counts = db_counts(ctx, w)
        waited = time.monotonic() - started
        if (counts.get("succeeded", 0) >= succeeded and counts["attempts"] >= succeeded) or waited > timeout_s:
            return counts, waited
        time.sleep(0.1)


# ---- processes --------------------------------------------------------------------------------------------

def _http(port: int, method: str, path: str, body: bytes | None = None) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
        response = conn.getresponse()
        answer = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise SystemExit(f"bench: receiver {method} {path}: HTTP {response.status}: {answer[:300]!r}")
    return orjson.loads(answer)


@dataclass
class Receiver:
    child: procs.Child
    port: int

    @property
    def pid(self) -> int:
        return self.child.pid

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def counts(self) -> dict[str, int]:
        found: dict[str, int] = _http(self.port, "GET", "/_bench/count")
        return found

    def stats(self, group: str, since_ns: int = 0, until_ns: int = 2**63) -> dict[str, Any]:
        query = urllib.parse.urlencode({"group": group, "since_ns": since_ns, "until_ns": until_ns})
        found: dict[str, Any] = _http(self.port, "GET", f"/_bench/stats?{query}")
        return found

    def reset(self) -> None:
        _http(self.port, "POST", "/_bench/reset", b"{}")

    def wait_for(self, group: str, count: int, timeout_s: float) -> tuple[int, float]:
        """Poll until ``group`` has ``count`` requests (or the time is up): (requests, seconds waited)."""
        started = time.monotonic()
        while True:
            got = self.counts().get(group, 0)
            if got >= count or time.monotonic() - started > timeout_s:
                return got, time.monotonic() - started
            if self.child.popen.poll() is not None:
                raise SystemExit(f"bench: the receiver exited:\n{self.child.log_tail()}")
            time.sleep(0.05)


def start_receiver(ctx: Context, stack: ExitStack, hang_s: float = 30.0) -> Receiver:
    """The receiver on the run's port, knowing the secrets of every world made so far and the limit's."""
    port = receiver_port(ctx)
    argv = [sys.executable, str(HERE / "receiver.py"), "--port", str(port), "--hang-s", str(hang_s)]
    child = procs.start(stack, "receiver", argv, ctx.env, ROOT, ctx.tmp_dir)
    procs.wait_http(child, port, "/_bench/count")
    known = dict(limit_secrets(ctx))
    for w in ctx.shared.get("worlds", {}).values():
        known.update(w.secrets)
    _http(port, "POST", "/_bench/secrets", orjson.dumps(known))
    return Receiver(child, port)


def start_worker(ctx: Context, stack: ExitStack, env: dict[str, str], name: str = "worker",
                 timeout_s: float = 30.0) -> tuple[procs.Child, float]:
    """``python -m dispatcher`` (the Procfile's worker); returns once it logged that its engine runs,
    with that moment (``time.time()``, to within 10 ms)."""
    child = procs.start(stack, name, [sys.executable, "-m", "dispatcher"], env, ROOT, ctx.tmp_dir)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.popen.poll() is not None:
            raise SystemExit(f"bench: {name} exited with {child.popen.returncode}:\n{child.log_tail()}")
        try:
            if WORKER_READY in child.log_path.read_bytes():
                return child, time.time()
        except OSError:
            pass
        time.sleep(0.01)
    raise SystemExit(f"bench: {name} not ready after {timeout_s:.0f}s:\n{child.log_tail()}")


# ---- CPU ----------------------------------------------------------------------------------------------------

def cpu_pct(used: dict[str, float]) -> dict[str, float | None]:
    """CPU seconds from ``CpuMeter.stop`` -> % of one core per group, in CPU_ORDER (None: not running)."""
    wall = used["wall_s"]
    pct: dict[str, float | None] = {k: round(100 * v / wall, 1) for k, v in used.items() if k != "wall_s"}
    ours = sum(v or 0.0 for k, v in pct.items() if k not in ("box", "steal"))
    pct["other"] = round(max(0.0, (pct["box"] or 0.0) - ours), 1)
    return {name: pct.get(name) for name in CPU_ORDER}


def meter(ctx: Context, groups: dict[str, list[int]]) -> procs.CpuMeter:
    return procs.CpuMeter(common.watched(ctx, groups)())


def run_async(main: Callable[[], Awaitable[T]]) -> T:
    with asyncio.Runner(loop_factory=loadgen._loop_factory()) as runner:
        return runner.run(main())  # type: ignore[arg-type]


def window(ctx: Context, groups: dict[str, list[int]], warmup_s: float, duration_s: float,
           load: Callable[[float, float], Awaitable[T]]) -> tuple[T, dict[str, float], float, float]:
    """Run ``load(t0, t1)`` (it starts at once and must stop by itself at ``t1``); meter CPU over
    ``[t0, t1]``, t0 = now + ``warmup_s``. Returns (load's result, CPU seconds, t0, t1), wall clock."""

    async def main() -> tuple[T, dict[str, float], float, float]:
        t0 = time.time() + warmup_s
        t1 = t0 + duration_s

        async def metered() -> dict[str, float]:
            await asyncio.sleep(max(0.0, t0 - time.time()))
            m = meter(ctx, groups)
            m.start()
            await asyncio.sleep(max(0.0, t1 - time.time()))
            return m.stop()

        meter_task = asyncio.create_task(metered())
        out = await load(t0, t1)
        return out, await meter_task, t0, t1

    return run_async(main)


# ---- publishing ---------------------------------------------------------------------------------------------

class Events:
    """``call.completed`` events for a world's businesses, round-robin, each with its publish time."""

    def __init__(self, w: World) -> None:
        rng = random.Random(11)
        self.world = w
        self.templates = [callgen.completed(rng, f"call_t{i}", f"agt_{i % 7}", callgen.START) for i in range(64)]
        self.nonce = secrets.token_hex(3)
        self.seq = 0

    def batch(self, n: int) -> tuple[bytes, Counter[str], int]:
        """The body of a batch of ``n`` events, how many deliveries it makes per receiver group, and the
        ``sent_at_ns`` its events carry."""
        now = time.time_ns()
        w = self.world
        events = []
        made: Counter[str] = Counter()
        for _ in range(n):
            s = self.seq
            self.seq += 1
            b = s % len(w.business_ids)
            call_id = f"call_{w.tag}_{self.nonce}_{s:08d}"
            data = {**self.templates[s % len(self.templates)], "id": call_id, "sent_at_ns": now}
            events.append({"business_id": w.business_ids[b], "type": EVENT_TYPE,
                           "idempotency_key": f"{call_id}.completed", "data": data})
            made[w.groups[b]] += w.endpoints
        return orjson.dumps({"events": events}), made, now


@dataclass
class Tally:
    """What a publisher did (over its whole loop, warm-up included)."""

    batches: int = 0  # acknowledged
    events: int = 0  # acknowledged
    posted: Counter[str] = field(default_factory=Counter)  # deliveries owed per receiver group, acknowledged
    errors: list[str] = field(default_factory=list)
    late_ticks: int = 0  # paced: ticks that found every publishing slot busy (the publisher fell behind)
    batch_latencies_s: list[float] = field(default_factory=list)
    acked_ns: dict[int, int] = field(default_factory=dict)  # a batch's sent_at_ns -> when its 202 arrived


class Publisher:
    """POSTs batches to the API's ``/internal/v1/events`` and checks every answer."""

    def __init__(self, ctx: Context, api_port: int, events: Events, receiver: Receiver | None = None) -> None:
        self.url = f"http://127.0.0.1:{api_port}/internal/v1/events"
        loadgen.check_local(self.url)
        self.headers = {"Authorization": f"Bearer {ctx.internal_token}", "Content-Type": "application/json"}
        self.events = events
        self.receiver = receiver
        self.tally = Tally()

    async def _post(self, session: aiohttp.ClientSession, n: int) -> None:
        body, made, sent_ns = self.events.batch(n)
        started = time.perf_counter()
        try:
            async with session.post(self.url, data=body, headers=self.headers) as response:
                answer = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.tally.errors.append(repr(exc))
            return
        if status != 202:
            self.tally.errors.append(f"HTTP {status}: {answer[:200]!r}")
            return
        try:
            accepted = orjson.loads(answer)["events"]
            fresh = sum(1 for e in accepted if e["duplicate"] is False)
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            self.tally.errors.append(f"202 with an unexpected body ({exc!r})")
            return
        if len(accepted) != n or fresh != n:
            self.tally.errors.append(f"202 with {len(accepted)} events, {fresh} new (expected {n})")
            return
        self.tally.batch_latencies_s.append(time.perf_counter() - started)
        self.tally.acked_ns[sent_ns] = time.time_ns()
        self.tally.batches += 1
        self.tally.events += n
        self.tally.posted.update(made)

    @staticmethod
    def _session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64),
                                     timeout=aiohttp.ClientTimeout(total=60))

    async def saturate(self, stop_at: float, group: str, backlog: int, in_flight: int = 2,
                       max_events: int = MAX_EVENTS_PER_WINDOW) -> Tally:
        """Closed loop until ``stop_at`` (wall clock): publish a batch of BATCH whenever the deliveries
        owed to ``group`` but not yet received there, plus the batches in flight, stay under ``backlog``."""
        assert self.receiver is not None
        count_url = f"{self.receiver.base}/_bench/count"
        posting: set[asyncio.Task[None]] = set()
        owed_in_flight = 0
        share = round(BATCH * self._share(group))  # deliveries to ``group`` per batch

        def done(task: asyncio.Task[None]) -> None:
            nonlocal owed_in_flight
            owed_in_flight -= share
            posting.discard(task)

        async with self._session() as session:
            async with session.get(count_url) as response:
                base = orjson.loads(await response.read()).get(group, 0)
            while time.time() < stop_at and self.tally.events < max_events:
                async with session.get(count_url) as response:
                    received = orjson.loads(await response.read()).get(group, 0) - base
                owed = self.tally.posted[group] - received + owed_in_flight
                while owed + share <= backlog and len(posting) < in_flight:
                    owed += share
                    owed_in_flight += share
                    task = asyncio.create_task(self._post(session, BATCH))
                    posting.add(task)
                    task.add_done_callback(done)
                await asyncio.sleep(0.02)
            if posting:
                await asyncio.wait(posting, timeout=60)
        return self.tally

    def _share(self, group: str) -> float:
        w = self.events.world
        return sum(w.endpoints for g in w.groups if g == group) / len(w.groups)

    async def paced(self, rate: float, stop_at: float, interval_s: float = 0.02, in_flight: int = 16,
                    max_events: int = MAX_EVENTS_PER_WINDOW) -> Tally:
        """Open loop until ``stop_at``: every ``interval_s``, a batch of the events due by then at
        ``rate`` events/s (at most BATCH); at most ``in_flight`` batches outstanding."""
        posting: set[asyncio.Task[None]] = set()
        start = time.time()
        sent = 0
        tick = 0
        async with self._session() as session:
            while self.tally.events < max_events:
                at = start + tick * interval_s
                if at >= stop_at:
                    break
                await asyncio.sleep(max(0.0, at - time.time()))
                tick += 1
                n = min(BATCH, math.floor(rate * (at - start + interval_s)) - sent)
                if n <= 0:
                    continue
                if len(posting) >= in_flight:
                    self.tally.late_ticks += 1
                    await asyncio.wait(posting, return_when=asyncio.FIRST_COMPLETED)
                sent += n
                task = asyncio.create_task(self._post(session, n))
                posting.add(task)
                task.add_done_callback(posting.discard)
            if posting:
                await asyncio.wait(posting, timeout=60)
        return self.tally

    async def burst(self, total: int, concurrency: int = 4) -> Tally:
        """Publish ``total`` events in batches of BATCH, ``concurrency`` at a time, as fast as the API takes them."""
        batches = [BATCH] * (total // BATCH) + ([total % BATCH] if total % BATCH else [])
        queue = list(reversed(batches))
        async with self._session() as session:

            async def one() -> None:
                while queue:
                    await self._post(session, queue.pop())

            await asyncio.gather(*(one() for _ in range(concurrency)))
        return self.tally


# ---- the limit -----------------------------------------------------------------------------------------------

def limit_window(ctx: Context, receiver: Receiver, concurrency: int, warmup_s: float, duration_s: float,
                 groups: dict[str, list[int]], name: str = "limit") -> dict[str, Any]:
    """One window of the limit client against ``receiver``; its row (see ``row``) plus the client's own
    round-trip figures."""
    secrets_file = ctx.tmp_dir / "limit-secrets.json"
    if not secrets_file.exists():
        secrets_file.write_bytes(orjson.dumps(limit_secrets(ctx)))
    out = ctx.tmp_dir / f"{name}-{concurrency}.json"
    out.unlink(missing_ok=True)
    startup_s = 0.8  # python, aiohttp and uvloop imports before the client sends anything
    t0 = time.time() + startup_s + warmup_s
    t1 = t0 + duration_s
    argv = [sys.executable, str(HERE / "limit_client.py"), "--base", receiver.base, "--secrets", str(secrets_file),
            "--concurrency", str(concurrency), "--t0", f"{t0:.6f}", "--t1", f"{t1:.6f}", "--out", str(out)]
    with ExitStack() as stack:
        client = procs.start(stack, f"{name}-client-{concurrency}", argv, ctx.env, ROOT, ctx.tmp_dir)
        time.sleep(max(0.0, t0 - time.time()))
        m = meter(ctx, {**groups, "limit client": [client.pid], "receiver": [receiver.pid]})
        m.start()
        time.sleep(max(0.0, t1 - time.time()))
        used = m.stop()
        try:
            client.popen.wait(30)
        except Exception as exc:
            raise SystemExit(f"bench: the limit client did not finish: {exc!r}\n{client.log_tail()}") from None
    if client.popen.returncode != 0 or not out.exists():
        raise SystemExit(f"bench: the limit client failed ({client.popen.returncode}):\n{client.log_tail()}")
    figures = orjson.loads(out.read_bytes())
    stats = receiver.stats("h/lim", int(t0 * 1e9), int(t1 * 1e9))
    problems = [f"{stats['bad_signatures']} bad signatures"] if stats["bad_signatures"] else []
    result = row(f"limit: bare aiohttp client, concurrency {concurrency}", stats, used, duration_s,
                 errors=figures["errors"] + len(problems), samples=problems + figures["error_samples"])
    result["requests_per_s"] = round(figures["ok"] / duration_s, 1)  # answered 200 inside the window
    result["requests"] = figures["ok"]
    result["client_rtt_ms"] = {q: figures[f"rtt_{q}_ms"] for q in ("p50", "p95", "p99", "max")}
    result["receiver_count"] = stats["count"]
    result["concurrency"] = concurrency
    return result


def limit_concurrency(ctx: Context) -> int:
    if ctx.concurrency:
        return ctx.concurrency
    best: int = ctx.shared.get("limit_concurrency", LIMIT_DEFAULT_CONCURRENCY)
    return best


# ---- rows ------------------------------------------------------------------------------------------------------

def row(name: str, stats: dict[str, Any], used: dict[str, float], seconds: float, *, errors: int = 0,
        samples: list[str] | None = None, count: int | None = None) -> dict[str, Any]:
    """A table row (the shape ``loadgen.summarise`` makes) from receiver stats and metered CPU.
    The rate is what the receiver got, signed right, inside the window; latency is publish → receipt."""
    got = (stats["count"] - stats["bad_signatures"]) if count is None else count
    return {
        "name": name,
        "requests_per_s": round(got / seconds, 1) if seconds else None,
        "requests": got,
        "errors": errors,
        "error_samples": (samples or [])[:loadgen.MAX_ERROR_SAMPLES],
        "p50_ms": stats["p50_ms"], "p95_ms": stats["p95_ms"], "p99_ms": stats["p99_ms"], "max_ms": stats["max_ms"],
        "seconds": round(seconds, 2),
        "rounds_requests_per_s": [round(got / seconds, 1)] if seconds else [],
        "cpu_pct": cpu_pct(used),
    }


def check_delivered(receiver: Receiver, tally: Tally, groups: list[str], drain_s: float) -> tuple[list[str], float]:
    """Wait (bounded) until every acknowledged delivery of ``groups`` arrived; what went wrong, and the
    seconds waited."""
    problems: list[str] = []
    waited = 0.0
    for group in groups:
        owed = tally.posted[group]
        got, took = receiver.wait_for(group, owed, max(0.0, drain_s - waited))
        waited += took
        stats = receiver.stats(group)
        if got < owed:
            problems.append(f"{group}: {owed - got} of {owed} acknowledged deliveries not received "
                            f"{drain_s:g}s after the load stopped")
        if stats["duplicates_total"]:
            problems.append(f"{group}: {stats['duplicates_total']} duplicate deliveries")
        if stats["bad_signatures"]:
            problems.append(f"{group}: {stats['bad_signatures']} bad signatures")
        if stats["unverified_total"]:
            problems.append(f"{group}: {stats['unverified_total']} requests to paths with no known secret")
    return problems, waited


def latency_split(receiver: Receiver, group: str, t0: float, t1: float, tally: Tally) -> dict[str, Any]:
    """Publish → receipt of the window's deliveries cut in two: publish → the API's 202 (validation, the
    commit that also fans out) and 202 → receipt (the worker notified, the claim, signing, the POST)."""
    query = urllib.parse.urlencode({"group": group, "since_ns": int(t0 * 1e9), "until_ns": int(t1 * 1e9)})
    api, after = [], []
    for received, latency in _http(receiver.port, "GET", f"/_bench/raw?{query}"):
        acked = tally.acked_ns.get(received - latency)
        if latency >= 0 and acked is not None:
            api.append((acked - (received - latency)) / 1e6)
            after.append((received - acked) / 1e6)

    def pct(values: list[float]) -> dict[str, float | None]:
        ordered = sorted(values)
        return {f"p{round(q * 100)}": round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)], 2)
                if ordered else None for q in (0.5, 0.95, 0.99)}

    return {"deliveries": len(after), "publish_to_202_ms": pct(api), "202_to_receipt_ms": pct(after)}


def median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def worker_rss_mb(pid: int) -> float | None:
    try:
        import psutil

        return round(psutil.Process(pid).memory_info().rss / 2**20, 1)
    except Exception:
        return None


def verdict(ok: bool) -> str:
    return "meets" if ok else "below"


def pid_groups(api: procs.Child, worker: procs.Child, receiver: Receiver) -> dict[str, list[int]]:
    return {"api": [api.pid], "worker": [worker.pid], "receiver": [receiver.pid], "publisher": [os.getpid()]}


def setup_summary(env: dict[str, str]) -> dict[str, str]:
    """The KAIHOOKS_* settings the API and worker ran with, secrets left out."""
    secret = ("KAIHOOKS_SECRET_KEY", "KAIHOOKS_INTERNAL_TOKENS")
    return {k: v for k, v in env.items() if k.startswith("KAIHOOKS_") and k not in secret}


def pool(ws: list[dict[str, Any]]) -> dict[str, Any]:
    """Windows (rounds) of one load -> one row: the rate over all windows, the mean of the rounds' p50 and the
    worst round's p95/p99/max (so is the client's round trip, for the limit), CPU averaged."""

    def worst(key: str, of: list[dict[str, Any]]) -> float | None:
        values = [w[key] for w in of if w.get(key) is not None]
        return max(values) if values else None

    def mean(key: str, of: list[dict[str, Any]]) -> float | None:
        values = [w[key] for w in of if w.get(key) is not None]
        return round(sum(values) / len(values), 2) if values else None

    seconds = sum(w["seconds"] for w in ws)
    requests = sum(w["requests"] for w in ws)
    cpu = {k: (round(sum(w["cpu_pct"][k] or 0.0 for w in ws) / len(ws), 1)
               if any(w["cpu_pct"][k] is not None for w in ws) else None) for k in ws[0]["cpu_pct"]}
    out = {**ws[0], "requests_per_s": round(requests / seconds, 1), "requests": requests,
           "errors": sum(w["errors"] for w in ws),
           "error_samples": [s for w in ws for s in w["error_samples"]][:5], "seconds": round(seconds, 2),
           "rounds_requests_per_s": [w["requests_per_s"] for w in ws], "cpu_pct": cpu,
           "p50_ms": mean("p50_ms", ws), "p95_ms": worst("p95_ms", ws), "p99_ms": worst("p99_ms", ws),
           "max_ms": worst("max_ms", ws)}
    if all("client_rtt_ms" in w for w in ws):
        rtts = [w["client_rtt_ms"] for w in ws]
        out["client_rtt_ms"] = {"p50": mean("p50", rtts), "p95": worst("p95", rtts), "p99": worst("p99", rtts),
                                "max": worst("max", rtts)}
    return out
