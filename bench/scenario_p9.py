"""Scenario ``P9``: many small publishers: 64 concurrent publishers each ``POST /internal/v1/events`` with one
event per request, vs a bare loop of single-row ``INSERT``s at the same concurrency (quality target P9:
≥ 0.5 x the baseline); and, in the same run, the API with its wake-up of the workers taken out, to put a
number on what the wake-up costs.

Setup: P1's world (200 businesses x 1 webhook endpoint subscribed to every type, made with the project's
service code, shared with the delivery scenarios), so every accepted event is fanned out into one delivery
as in production; no worker runs (the deliveries stay pending; nothing is sent). Two API processes: the
shipped one (``python -m api``) and the bench-only variant ``bench/api_variant.py --no-wake`` (the same
code, its wake-up replaced by a constant). A scratch table ``bench_events`` with the definition of
``events`` (``LIKE events INCLUDING ALL``: the same indexes; plus the same foreign key to ``businesses``).

Event n (from one counter per target): business n mod 200, ``call.started`` for call n / 2 when n is even,
``call.completed`` of call (n - 1) / 2 - LAG when n is odd, about 1 KiB of ``data`` (``callgen``), its own
idempotency key. The app validates it, stores the event, its delivery and the ``calls`` projection in one
statement (one transaction) and answers 202 with its id. The baseline: one ``INSERT`` of the same row (id,
business_id, type, data as jsonb, idempotency_key, occurred_at) into ``bench_events`` per transaction
(asyncpg ``execute`` with the row's values, autocommit), one connection per publisher, 64 connections.

Rounds alternate (baseline, app, app without the wake-up, ...); every table is emptied and checkpointed
before each window. After each window: the rows stored equal the 202s (app: events, and one delivery
each) or the inserts acknowledged (baseline); a listener in the runner (as a worker would be) counts the
wake-ups heard: one per accepted request with the wake-up, none without.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
import callgen
import common
import delivery
import loadgen
import orjson
import procs
from setup_env import ROOT, Context

ID = "P9"
TITLE = ("Many small publishers: 64 concurrent POST /internal/v1/events of one event each vs a bare single-row "
         "INSERT loop")
TARGET_RATIO = 0.5
CONCURRENCY = 64  # quality.md's P9
LAG = 64  # call m completes 2 x LAG events after it started (never in a request running alongside)
TEMPLATES = 64  # distinct data bodies per kind
MAX_OPS = 200_000  # per window: the count bound
PLACEHOLDER = "NNNNNNNN"  # the call number in the templates

_INSERT = """INSERT INTO bench_events (id, business_id, type, data, idempotency_key, occurred_at)
             VALUES ($1, $2, $3, $4::jsonb, $5, $6)"""

TARGETS = ("bare", "app", "no_wake")
LABELS = {
    "bare": "bare asyncpg single-row INSERT, one per transaction (baseline)",
    "app": "kaihooks POST /internal/v1/events, one event per request",
    "no_wake": "the same API without the wake-up (bench-only variant)",
}


def _timing(quick: bool) -> dict[str, float]:
    if quick:
        return {"warmup_s": 0.5, "duration_s": 3.0, "rounds": 1, "profile_s": 4.0}
    return {"warmup_s": 1.0, "duration_s": 5.0, "rounds": 2, "profile_s": 8.0}


# --- the events ------------------------------------------------------------------------------------------------

class Events:
    """Event n as an HTTP body (for the app) and as a row (for the baseline), from a few templates."""

    def __init__(self, world: delivery.World) -> None:
        rng = random.Random(9)
        self.businesses = list(zip(world.business_uuids, world.business_ids, strict=True))
        call_id = f"call_{PLACEHOLDER}"
        self.templates = {
            kind: [orjson.dumps(maker(rng, call_id, f"agt_{i % 7}", callgen.START)).decode() for i in range(TEMPLATES)]
            for kind, maker in (("started", callgen.started), ("completed", callgen.completed))
        }
        self.data_bytes = sum(len(t) for ts in self.templates.values() for t in ts) // (2 * TEMPLATES)

    def _parts(self, n: int) -> tuple[uuid.UUID, str, str, str, str]:
        kind = "started" if n % 2 == 0 else "completed"
        call = n // 2 if kind == "started" else n // 2 - LAG
        number = f"{call:08d}"
        data = self.templates[kind][call % TEMPLATES].replace(PLACEHOLDER, number)
        business_uuid, business_id = self.businesses[n % len(self.businesses)]
        return business_uuid, business_id, f"call.{kind}", data, f"call_{number}.{kind}"

    def body(self, n: int) -> bytes:
        _, business_id, kind, data, key = self._parts(n)
        return (f'{{"business_id":"{business_id}","type":"{kind}","idempotency_key":"{key}","data":{data}}}'
                .encode())

    def row(self, n: int) -> tuple[object, ...]:
        business_uuid, _, kind, data, key = self._parts(n)
        return uuid.UUID(int=_uuid7_int()), business_uuid, kind, data, key, datetime.now(UTC)


def _uuid7_int() -> int:
    """A UUIDv7 as an int (time-ordered, like the app's ids)."""
    ms = time.time_ns() // 1_000_000
    rand = random.getrandbits(74)
    return (ms << 80) | (0x7 << 76) | ((rand >> 62) << 64) | (0x2 << 62) | (rand & ((1 << 62) - 1))


# --- setup and per-window bookkeeping ----------------------------------------------------------------------

async def _sql(ctx: Context, *statements: str) -> list[Any]:
    conn = await asyncpg.connect(ctx.database_url)
    try:
        out: list[Any] = []
        for statement in statements:
            if statement == "CHECKPOINT":
                try:
                    await conn.execute(statement)
                except asyncpg.InsufficientPrivilegeError:
                    pass
                out.append(None)
            else:
                out.append(await conn.fetchval(statement))
        return out
    finally:
        await conn.close()


def _make_table(ctx: Context) -> None:
    asyncio.run(_sql(ctx, "DROP TABLE IF EXISTS bench_events",
                     "CREATE TABLE bench_events (LIKE events INCLUDING ALL)",
                     "ALTER TABLE bench_events ADD FOREIGN KEY (business_id) REFERENCES businesses (id) "
                     "ON DELETE CASCADE"))


def _empty_tables(ctx: Context) -> None:
    """Every window starts from empty tables and a fresh checkpoint (no WAL flush owed by the previous one)."""
    asyncio.run(_sql(ctx, "TRUNCATE events, calls, deliveries, attempts, bench_events CASCADE", "CHECKPOINT"))


def _counts(ctx: Context) -> dict[str, int]:
    found = asyncio.run(_sql(ctx, "SELECT count(*) FROM events", "SELECT count(*) FROM deliveries",
                             "SELECT count(*) FROM bench_events"))
    return dict(zip(("events", "deliveries", "bench_events"), (int(n) for n in found), strict=True))


# --- the loads ----------------------------------------------------------------------------------------------------

class Tally:
    def __init__(self) -> None:
        self.acked = 0  # over the whole loop (warm-up and tail included)
        self.woken = 0  # wake-ups the listener heard


def _app_window(ctx: Context, url: str, events: Events, counter: itertools.count[int], warmup_s: float,
                duration_s: float, pids: loadgen.Pids, tally: Tally, wake: bool = True) -> loadgen.Window:
    loadgen.check_local(url)
    headers = {"Authorization": f"Bearer {ctx.internal_token}", "Content-Type": "application/json"}

    @asynccontextmanager
    async def open_post(concurrency: int) -> AsyncIterator[loadgen.Op]:
        from shared.repos.handoff import DUE_CHANNEL

        listener = await asyncpg.connect(ctx.database_url)
        caught_up = asyncio.Event()

        def heard(*_: object) -> None:
            tally.woken += 1
            if tally.woken >= tally.acked:
                caught_up.set()

        await listener.add_listener(DUE_CHANNEL, heard)
        connector = aiohttp.TCPConnector(limit=concurrency)
        timeout = aiohttp.ClientTimeout(total=30)
        try:
            async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as session:

                async def post(_: int) -> str | None:
                    try:
                        async with session.post(url, data=events.body(next(counter))) as response:
                            answer = await response.read()
                            status = response.status
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        return repr(exc)
                    if status != 202:
                        return f"HTTP {status}: {answer[:200]!r}"
                    try:
                        (accepted,) = orjson.loads(answer)["events"]
                        fresh = accepted["duplicate"] is False and accepted["id"].startswith("evt_")
                    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                        return f"202 with an unexpected body ({exc!r}): {answer[:200]!r}"
                    if not fresh:
                        return f"202 but not one new event: {answer[:200]!r}"
                    tally.acked += 1
                    return None

                yield post
            if wake and tally.woken < tally.acked:  # sent at commit, before the 202: the last may be on their way
                caught_up.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(caught_up.wait(), 2.0)
        finally:
            await listener.close()

    return loadgen.run_ops(open_post, concurrency=CONCURRENCY, warmup_s=warmup_s, duration_s=duration_s, pids=pids,
                           max_ops=MAX_OPS)


def _bare_window(ctx: Context, events: Events, counter: itertools.count[int], warmup_s: float, duration_s: float,
                 pids: loadgen.Pids, tally: Tally) -> loadgen.Window:
    @asynccontextmanager
    async def open_insert(concurrency: int) -> AsyncIterator[loadgen.Op]:
        conns = await asyncio.gather(*(asyncpg.connect(ctx.database_url) for _ in range(concurrency)))
        try:

            async def insert(worker: int) -> str | None:
                try:
                    await conns[worker].execute(_INSERT, *events.row(next(counter)))
                except (asyncpg.PostgresError, OSError) as exc:
                    return repr(exc)
                tally.acked += 1
                return None

            yield insert
        finally:
            await asyncio.gather(*(conn.close() for conn in conns))

    return loadgen.run_ops(open_insert, concurrency=CONCURRENCY, warmup_s=warmup_s, duration_s=duration_s,
                           pids=pids, max_ops=MAX_OPS)


# --- the scenario ------------------------------------------------------------------------------------------------

def run(ctx: Context) -> dict[str, Any]:
    timing = _timing(ctx.quick)
    world = delivery.world(ctx, "p1", delivery.BUSINESSES)
    events = Events(world)
    _make_table(ctx)
    counters = {name: itertools.count(2 * LAG) for name in TARGETS}
    problems: dict[str, list[str]] = {name: [] for name in TARGETS}
    woken: dict[str, list[int]] = {"app": [], "no_wake": []}

    with ExitStack() as stack:  # this scenario's processes stop when it ends
        api, api_port = common.start_api(ctx, stack)
        variant_port = procs.free_port()
        variant = procs.start(stack, "api-no-wake", [sys.executable, str(common.HERE / "api_variant.py"), "--no-wake"],
                              {**ctx.env, "PORT": str(variant_port)}, ROOT, ctx.tmp_dir)
        procs.wait_http(variant, variant_port, "/healthz")
        urls = {"app": f"http://127.0.0.1:{api_port}/internal/v1/events",
                "no_wake": f"http://127.0.0.1:{variant_port}/internal/v1/events"}
        under_load = {"bare": api.pid, "app": api.pid, "no_wake": variant.pid}

        def window(name: str, warmup_s: float, duration_s: float, watch: loadgen.Pids) -> loadgen.Window:
            """One window on empty tables, then check that what was acknowledged is stored."""
            _empty_tables(ctx)
            tally = Tally()
            if name == "bare":
                measured = _bare_window(ctx, events, counters[name], warmup_s, duration_s, watch, tally)
                stored = _counts(ctx)
                if stored["bench_events"] != tally.acked:
                    problems[name].append(f"{tally.acked} inserts acknowledged but {stored['bench_events']} rows")
                return measured
            measured = _app_window(ctx, urls[name], events, counters[name], warmup_s, duration_s, watch, tally,
                                  wake=name == "app")
            stored = _counts(ctx)
            if stored["events"] != tally.acked or stored["deliveries"] != tally.acked:
                problems[name].append(f"{tally.acked} events accepted but {stored['events']} stored with "
                                      f"{stored['deliveries']} deliveries (one each expected)")
            expected = tally.acked if name == "app" else 0
            if tally.woken != expected:
                problems[name].append(f"{tally.woken} wake-ups heard for {tally.acked} accepted (expected {expected})")
            woken[name].append(tally.woken)
            return measured

        windows: dict[str, list[loadgen.Window]] = {name: [] for name in TARGETS}
        for _ in range(int(timing["rounds"])):
            for name in TARGETS:
                pids = common.watched(ctx, {"api": [under_load[name]]})
                windows[name].append(window(name, timing["warmup_s"], timing["duration_s"], pids))

        profile = None
        if ctx.profile:
            _empty_tables(ctx)
            profile = common.profile(ctx, ID, api.pid, timing["profile_s"], lambda seconds: _app_window(
                ctx, urls["app"], events, counters["app"], 0.5, seconds, {}, Tally()))
        _empty_tables(ctx)  # leave no pending deliveries for the scenarios after this one

    rows: list[dict[str, Any]] = []
    for name in TARGETS:
        row = loadgen.summarise(windows[name])
        row["errors"] = row["errors"] + len(problems[name])  # type: ignore[operator]
        row["error_samples"] = [*problems[name], *row["error_samples"]][:loadgen.MAX_ERROR_SAMPLES]  # type: ignore[misc]
        rows.append({"name": LABELS[name], **row})
    bare, app, no_wake = rows
    ratio = round(app["requests_per_s"] / bare["requests_per_s"], 3)
    rounds_ratio = [round(a.rps / b.rps, 3) for a, b in zip(windows["app"], windows["bare"], strict=True)]
    wake_ratio = round(app["requests_per_s"] / no_wake["requests_per_s"], 3)
    rounds_wake = [round(a.rps / n.rps, 3) for a, n in zip(windows["app"], windows["no_wake"], strict=True)]
    no_wake_ratio = round(no_wake["requests_per_s"] / bare["requests_per_s"], 3)
    ok = "meets" if ratio >= TARGET_RATIO else "below"
    t = timing
    result: dict[str, Any] = {
        "id": ID,
        "title": TITLE,
        "target_ratio": TARGET_RATIO,
        "ratio": ratio,
        "ratio_label": "app / bare INSERT (events/s)",
        "rounds_ratio": rounds_ratio,
        "wake_ratio": wake_ratio,
        "rounds_wake_ratio": rounds_wake,
        "no_wake_ratio": no_wake_ratio,
        "wake_ups_heard": woken,
        "verdicts": [
            f"**Ratio app / bare INSERT (events/s): {ratio:.2f}** ({ok} the ≥ {TARGET_RATIO} target); per round: "
            f"{', '.join(f'{r:.2f}' for r in rounds_ratio)}.",
            f"**The wake-up's cost: app / app without it {wake_ratio:.2f}** (per round: "
            f"{', '.join(f'{r:.2f}' for r in rounds_wake)}); without it the app would be {no_wake_ratio:.2f} x "
            "the bare INSERT.",
        ],
        "rate_columns": [["requests_per_s", "events/s"]],
        "op_name": "event",
        "concurrency": CONCURRENCY,
        "timing": timing,
        "businesses": len(world.business_uuids),
        "data_bytes_per_event": events.data_bytes,
        "rows": rows,
        "setup": common.setup_summary(ctx),
        "method": (
            f"{CONCURRENCY} concurrent publishers for every target, each sending one event per request (or "
            f"insert); {int(t['rounds'])} alternating round(s) of {t['duration_s']:g} s per target (baseline, "
            f"app, app without the wake-up) after {t['warmup_s']:g} s warm-up, each on emptied tables after a "
            f"CHECKPOINT. An event is a `call.started` or a `call.completed` (of a call started {2 * LAG} events "
            f"earlier) for one of {len(world.business_uuids)} businesses, {events.data_bytes:,} bytes of `data` "
            "on average, with an idempotency key. Each business has one webhook endpoint subscribed to every "
            "type, so each accepted event is fanned out into one delivery, as in production; no worker runs. "
            "Every 202 checked (one new `evt_` id); after each window the stored events and deliveries equal "
            "the 202s, and a listener in the runner heard one wake-up per 202 (none from the variant). The "
            "app does, per request: HTTP, the internal token, validation, one statement (the event into "
            "`events`, its delivery into `deliveries`, the upsert of the `calls` projection) that is one "
            "transaction, the Redis bump of the business's data version, the 202. The variant is the same "
            "code run by `bench/api_variant.py --no-wake`, its wake-up replaced by a constant. The baseline: "
            "one `INSERT` of the same row (id, business_id, type, data::jsonb, idempotency_key, "
            "occurred_at) into `bench_events` (`LIKE events INCLUDING ALL` plus the same foreign key) per "
            f"transaction, {CONCURRENCY} asyncpg connections, from the runner process (its CPU is `client`). "
            "The API runs with its default pool (`KAIHOOKS_DB_POOL_MAX_SIZE`); `api` is the API process "
            "under load. Latency is per event (request or insert)."
        ),
    }
    if profile is not None:
        result["profile"] = profile
    return result
