"""Scenario ``P5``: ingest, ``POST /internal/v1/events`` in batches of 500, vs a bare asyncpg
``executemany`` of the same rows (quality target P5: ≥ 0.3 x the baseline).

Setup: 200 businesses (made with the project's code), one API process (``python -m
api``), no dispatcher worker and no webhook endpoints (ingest is what is measured),
and a scratch table ``bench_events`` with the definition of ``events``
(``LIKE events INCLUDING ALL``, so the same indexes, plus the same foreign key to
``businesses``).

Each batch is 500 events over the 200 businesses: 250 ``call.started`` for new calls
and 250 ``call.completed`` for the calls started ``LAG`` batches earlier, about 1 KiB of
``data`` each (``callgen``), each with its own idempotency key. The app validates them,
inserts the events (and their deliveries: none, no endpoint exists) and upserts the
``calls`` projection in one statement; a 202 counts as 500 accepted events only if it names 500
distinct ids, none a duplicate. The baseline inserts the same rows (id, business_id,
type, data as jsonb, idempotency_key, occurred_at) with ``executemany``, 500 per call,
one connection per publisher, in its own transaction like the app's.

The concurrency (publishers) is the app's best of CANDIDATES; the baseline gets the
same. Rounds alternate (baseline, app, ...); both tables are emptied and checkpointed
before every window so each starts from the same state. After each window the row
count must equal what was acknowledged.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
import callgen
import common
import loadgen
import orjson
from setup_env import Context

ID = "P5"
TITLE = "Ingest: POST /internal/v1/events in batches of 500 vs a bare asyncpg executemany of the same rows"
TARGET_RATIO = 0.3
BATCH = 500
BUSINESSES = 200
LAG = 32  # a call started in batch n completes in batch n + LAG (never in a batch running alongside)
CANDIDATES = (2, 4, 8)
QUICK_CONCURRENCY = 4
MAX_BATCHES = 4_000  # per window: the count bound (2M events)
STARTED, COMPLETED = "SSSSSSSS", "CCCCCCCC"  # batch-number placeholders in the templates

_INSERT = """INSERT INTO bench_events (id, business_id, type, data, idempotency_key, occurred_at)
             VALUES ($1, $2, $3, $4::jsonb, $5, $6)"""


def _timing(quick: bool) -> dict[str, float]:
    if quick:
        return {"warmup_s": 0.5, "duration_s": 3.0, "rounds": 1, "calibrate_s": 0.0, "profile_s": 4.0}
    return {"warmup_s": 1.0, "duration_s": 5.0, "rounds": 2, "calibrate_s": 2.0, "profile_s": 8.0}


# --- the batch, once, with placeholders for the batch numbers --------------------------------------------------

class Batches:
    """Batch n, as an HTTP body for the app and as rows for the baseline, made cheaply from one template."""

    def __init__(self, businesses: list[tuple[uuid.UUID, str]]) -> None:
        rng = random.Random(5)
        events: list[dict[str, Any]] = []
        self.rows: list[tuple[uuid.UUID, str, str, str, str]] = []  # business, type, data, key, placeholder
        for j in range(BATCH):
            k = j // 2
            business_uuid, business_id = businesses[k % len(businesses)]
            placeholder, kind = (STARTED, "started") if j % 2 == 0 else (COMPLETED, "completed")
            call_id = f"call_{placeholder}_{k:03d}"
            maker = callgen.started if kind == "started" else callgen.completed
            data = maker(rng, call_id, f"agt_{k % 7}", callgen.START)
            key = f"{call_id}.{kind}"
            events.append({"business_id": business_id, "type": f"call.{kind}", "idempotency_key": key, "data": data})
            self.rows.append((business_uuid, f"call.{kind}", orjson.dumps(data).decode(), key, placeholder))
        self.body = orjson.dumps({"events": events})
        self.data_bytes = sum(len(r[2]) for r in self.rows) // BATCH
        self._next_id = 0

    @staticmethod
    def numbers(n: int) -> tuple[str, str]:
        """Batch n starts calls n and completes calls n - LAG (batch numbers start at LAG)."""
        return f"{n:08d}", f"{n - LAG:08d}"

    def body_of(self, n: int) -> bytes:
        started, completed = self.numbers(n)
        return self.body.replace(STARTED.encode(), started.encode()).replace(COMPLETED.encode(), completed.encode())

    def rows_of(self, n: int) -> list[tuple[object, ...]]:
        """The rows the app would store for batch n: ids time-ordered like the app's UUIDv7s, one timestamp."""
        started, completed = self.numbers(n)
        numbers = {STARTED: started, COMPLETED: completed}
        base = max(common.uuid7_int(), self._next_id)
        self._next_id = base + BATCH
        now = datetime.now(UTC)
        return [(uuid.UUID(int=base + j), business, kind, data.replace(p, numbers[p]), key.replace(p, numbers[p]), now)
                for j, (business, kind, data, key, p) in enumerate(self.rows)]



# --- setup and per-window bookkeeping ----------------------------------------------------------------------

async def _make_businesses(ctx: Context, n: int) -> list[tuple[uuid.UUID, str]]:
    from shared.db import create_pool
    from shared.repos import businesses
    from shared.settings import Settings

    settings = Settings(  # type: ignore[call-arg]
        DATABASE_URL=ctx.env["DATABASE_URL"], REDIS_URL=ctx.env["REDIS_URL"], secret_key=ctx.env["KAIHOOKS_SECRET_KEY"]
    )
    db = await create_pool(settings, min_size=1, max_size=2)
    try:
        made = [await businesses.create(db, f"Bench Ingest Co. {i:03d}") for i in range(n)]
        await db.execute("CREATE TABLE bench_events (LIKE events INCLUDING ALL)")
        await db.execute("ALTER TABLE bench_events ADD FOREIGN KEY (business_id) "
                         "REFERENCES businesses (id) ON DELETE CASCADE")
    finally:
        await db.close()
    return [(b.id, b.public_id) for b in made]



def _empty_tables(ctx: Context) -> None:
    """Every window starts from empty tables and a fresh checkpoint (no WAL flush owed by the previous one)."""
    asyncio.run(common.sql(ctx, "TRUNCATE events, calls, bench_events CASCADE", "CHECKPOINT"))


def _count(ctx: Context, table: str) -> int:
    return int(asyncio.run(common.sql(ctx, f"SELECT count(*) FROM {table}"))[0])


# --- the two loads ---------------------------------------------------------------------------------------------

class Tally:
    def __init__(self) -> None:
        self.batches = 0  # acknowledged over the whole loop (warm-up and tail included)


def _app_window(ctx: Context, url: str, batches: Batches, counter: itertools.count[int], concurrency: int,
                warmup_s: float, duration_s: float, pids: loadgen.Pids, tally: Tally) -> loadgen.Window:
    loadgen.check_local(url)
    headers = {"Authorization": f"Bearer {ctx.internal_token}", "Content-Type": "application/json"}

    @asynccontextmanager
    async def open_post(concurrency: int) -> AsyncIterator[loadgen.Op]:
        connector = aiohttp.TCPConnector(limit=concurrency)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as session:

            async def post(_: int) -> str | None:
                body = batches.body_of(next(counter))
                try:
                    async with session.post(url, data=body) as response:
                        answer = await response.read()
                        status = response.status
                except (aiohttp.ClientError, TimeoutError) as exc:
                    return repr(exc)
                if status != 202:
                    return f"HTTP {status}: {answer[:200]!r}"
                try:
                    events = orjson.loads(answer)["events"]
                    fresh = {e["id"] for e in events if e["duplicate"] is False}
                except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                    return f"202 with an unexpected body ({exc!r}): {answer[:200]!r}"
                if len(events) != BATCH or len(fresh) != BATCH:
                    return f"202 with {len(events)} ids, {len(fresh)} distinct and new (expected {BATCH})"
                tally.batches += 1
                return None

            yield post

    return loadgen.run_ops(open_post, concurrency=concurrency, warmup_s=warmup_s, duration_s=duration_s, pids=pids,
                           max_ops=MAX_BATCHES)


def _bare_window(ctx: Context, batches: Batches, counter: itertools.count[int], concurrency: int, warmup_s: float,
                 duration_s: float, pids: loadgen.Pids, tally: Tally) -> loadgen.Window:
    @asynccontextmanager
    async def open_insert(concurrency: int) -> AsyncIterator[loadgen.Op]:
        conns = [await asyncpg.connect(ctx.database_url) for _ in range(concurrency)]
        try:

            async def insert(worker: int) -> str | None:
                rows = batches.rows_of(next(counter))
                try:
                    await conns[worker].executemany(_INSERT, rows)
                except (asyncpg.PostgresError, OSError) as exc:
                    return repr(exc)
                tally.batches += 1
                return None

            yield insert
        finally:
            for conn in conns:
                await conn.close()

    return loadgen.run_ops(open_insert, concurrency=concurrency, warmup_s=warmup_s, duration_s=duration_s,
                           pids=pids, max_ops=MAX_BATCHES)


# --- the scenario ------------------------------------------------------------------------------------------------

def run(ctx: Context) -> dict[str, Any]:
    timing = _timing(ctx.quick)
    businesses = asyncio.run(_make_businesses(ctx, BUSINESSES))
    batches = Batches(businesses)
    counters = {"app": itertools.count(LAG), "bare": itertools.count(LAG)}
    problems: dict[str, list[str]] = {"app": [], "bare": []}

    with ExitStack() as stack:  # this scenario's processes stop when it ends
        api, api_port = common.start_api(ctx, stack)
        url = f"http://127.0.0.1:{api_port}/internal/v1/events"
        pids = common.watched(ctx, {"api": [api.pid]})

        def window(name: str, concurrency: int, warmup_s: float, duration_s: float,
                   watch: loadgen.Pids) -> loadgen.Window:
            """One window on empty tables, then check that what was acknowledged is stored (and queued)."""
            _empty_tables(ctx)
            tally = Tally()
            if name == "app":
                measured = _app_window(ctx, url, batches, counters["app"], concurrency, warmup_s, duration_s,
                                       watch, tally)
                stored = _count(ctx, "events")
            else:
                measured = _bare_window(ctx, batches, counters["bare"], concurrency, warmup_s, duration_s, watch,
                                        tally)
                stored = _count(ctx, "bench_events")
            if stored != tally.batches * BATCH:
                problems[name].append(f"{tally.batches * BATCH} events acknowledged but {stored} rows stored")
            return measured

        # Concurrency: the app's best (the baseline runs at the same).
        tried: dict[int, float] = {}
        if ctx.concurrency:
            concurrency = ctx.concurrency
        elif ctx.quick:
            concurrency = QUICK_CONCURRENCY
        else:
            for candidate in CANDIDATES:
                tried[candidate] = round(window("app", candidate, 0.5, timing["calibrate_s"], {}).rps * BATCH, 1)
            concurrency = max(tried, key=lambda c: tried[c])

        windows: dict[str, list[loadgen.Window]] = {"bare": [], "app": []}
        for _ in range(int(timing["rounds"])):
            for name in ("bare", "app"):
                windows[name].append(window(name, concurrency, timing["warmup_s"], timing["duration_s"], pids))

        profile = None
        if ctx.profile:
            _empty_tables(ctx)
            profile = common.profile(ctx, ID, api.pid, timing["profile_s"], lambda seconds: _app_window(
                ctx, url, batches, counters["app"], concurrency, 0.5, seconds, {}, Tally()))

    rows: list[dict[str, Any]] = []
    for name, label in (("bare", f"bare asyncpg executemany, {BATCH} rows per call (baseline)"),
                        ("app", f"kaihooks POST /internal/v1/events, {BATCH} per batch")):
        row = loadgen.summarise(windows[name])
        row["events_per_s"] = round(row["requests_per_s"] * BATCH, 1)  # type: ignore[operator]
        row["errors"] = row["errors"] + len(problems[name])  # type: ignore[operator]
        row["error_samples"] = [*problems[name], *row["error_samples"]][:loadgen.MAX_ERROR_SAMPLES]  # type: ignore[misc]
        rows.append({"name": label, **row})
    bare, app = rows
    calibration = ", ".join(f"{c} → {r:,.0f}" for c, r in tried.items())
    t = timing
    result: dict[str, Any] = {
        "id": ID,
        "title": TITLE,
        "target_ratio": TARGET_RATIO,
        "ratio": round(app["events_per_s"] / bare["events_per_s"], 3),
        "ratio_label": "app / executemany (events/s)",
        "rounds_ratio": [round(a.rps / b.rps, 3) for a, b in zip(windows["app"], windows["bare"], strict=True)],
        "rate_columns": [["events_per_s", "events/s"], ["requests_per_s", "batches/s"]],
        "latency_of": " (batch)",
        "op_name": "batch",
        "concurrency": concurrency,
        "calibration_events_per_s": tried,
        "timing": timing,
        "batch_size": BATCH,
        "businesses": BUSINESSES,
        "data_bytes_per_event": batches.data_bytes,
        "request_bytes": len(batches.body),
        "rows": rows,
        "setup": common.setup_summary(ctx),
        "method": (
            f"{concurrency} concurrent publishers (the app's best of {calibration or 'fixed, not calibrated'} "
            f"events/s; the baseline runs at the same); {int(t['rounds'])} alternating round(s) of "
            f"{t['duration_s']:g} s per target after {t['warmup_s']:g} s warm-up, each on emptied tables after a "
            f"CHECKPOINT. A batch is {BATCH} events over {BUSINESSES} businesses: {BATCH // 2} `call.started` "
            f"and {BATCH // 2} `call.completed` (of calls started {LAG} batches earlier), "
            f"{batches.data_bytes:,} bytes of `data` each on average, each with an idempotency key "
            f"({len(batches.body):,}-byte request). Every 202 checked ({BATCH} distinct ids, none a duplicate); "
            "after each window the stored rows equal the acknowledged events (no dispatcher worker runs, no endpoint "
            "exists). The app does, per batch, one statement: `INSERT … SELECT unnest(…)` into `events`, the "
            "fan-out into `deliveries` (empty here), upsert of the `calls` projection. "
            f"The baseline: `executemany` of the same {BATCH} rows (id, business_id, type, data::jsonb, "
            "idempotency_key, occurred_at) into `bench_events` (`LIKE events INCLUDING ALL` plus the same "
            "foreign key), one connection per publisher, from the runner process (its CPU is `client`). "
            "Latency is per batch."
        ),
    }
    if profile is not None:
        result["profile"] = profile
    return result
