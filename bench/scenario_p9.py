"""Scenario ``P9``: many small publishers: 64 concurrent publishers each ``POST /internal/v1/events`` with one
event per request, vs a bare loop of single-row ``INSERT``s at the same concurrency (quality target P9:
≥ 0.5 x the baseline); and, in the same run, what waking the workers costs, end to end and in Postgres.

Setup: P1's world (200 businesses x 1 webhook endpoint subscribed to every type, made with the project's
service code, shared with the delivery scenarios), so every accepted event is fanned out into one delivery
as in production; no worker runs (the deliveries stay pending; nothing is sent). Three APIs, each started
for its own windows only: the shipped one (``python -m api``: the workers are woken by a Redis ``PUBLISH``
after commit) and two bench-only variants of it (``bench/api_variant.py``): ``--wake notify``, the former
wake-up (``pg_notify`` in the accepting transaction, sent by Postgres at commit) and ``--wake none`` (no
wake-up).
A scratch table ``bench_events`` with the definition of ``events`` (``LIKE events INCLUDING ALL``: the
same indexes; plus the same foreign key to ``businesses``).

Event n (from one counter per target): business n mod 200, ``call.started`` for call n / 2 when n is even,
``call.completed`` of call (n - 1) / 2 - LAG when n is odd, about 1 KiB of ``data`` (``callgen``), its own
idempotency key.

Targets, in this order in every round (each table emptied and checkpointed before each window):

- ``bare``: one ``INSERT`` of the event's row (id, business_id, type, data as jsonb, idempotency_key,
  occurred_at) into ``bench_events`` per transaction (asyncpg ``execute``, autocommit), 64 connections;
- ``app``, ``notify``, ``no_wake``: 64 concurrent HTTP clients, one event per request, to each API;
- ``sql``, ``sql_notify``: Postgres alone: 64 asyncpg connections in the runner each running the accepting
  statement (``shared.repos.ingest.accept``) for one event per transaction, as shipped and with the former
  ``pg_notify`` put back: what the wake-up costs where many API processes' commits meet.

Checks after each window: the events stored equal the acknowledged ones, with one delivery each (bare: the
rows); a listener in the runner (as a worker would be: Redis ``SUBSCRIBE`` and Postgres ``LISTEN``) heard one
wake-up per acknowledged event on the channel the target uses and none on the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aiohttp
import api_variant
import asyncpg
import callgen
import common
import delivery
import loadgen
import orjson
import procs
import redis.asyncio
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
DEADLINE_S = 3 * 86_400.0  # the deliveries' deadline in the `sql` targets (the app uses its retry schedule's)

_INSERT = """INSERT INTO bench_events (id, business_id, type, data, idempotency_key, occurred_at)
             VALUES ($1, $2, $3, $4::jsonb, $5, $6)"""

TARGETS = ("bare", "app", "notify", "no_wake", "sql", "sql_notify")
QUICK_TARGETS = ("bare", "app", "sql", "sql_notify")  # --quick: the target ratio and NOTIFY in Postgres only
HTTP = ("app", "notify", "no_wake")
VARIANTS = {"notify": "notify", "no_wake": "none"}  # target -> bench/api_variant.py --wake
LABELS = {
    "bare": "bare asyncpg single-row INSERT, one per transaction (baseline)",
    "app": "kaihooks POST /internal/v1/events, one event per request (wake-up: Redis PUBLISH after commit)",
    "notify": "the same API with the former wake-up (NOTIFY at commit; bench-only variant)",
    "no_wake": "the same API with no wake-up (bench-only variant)",
    "sql": "Postgres alone: the accepting statement, one event per transaction (as shipped)",
    "sql_notify": "Postgres alone: the accepting statement with the former NOTIFY",
}
# Which wake-ups a listener must hear per acknowledged event: (on Redis, on Postgres).
HEARD = {"app": (1, 0), "notify": (0, 1), "no_wake": (0, 0), "sql": (0, 0), "sql_notify": (0, 1)}


def _timing(quick: bool) -> dict[str, float]:
    if quick:
        return {"warmup_s": 0.3, "duration_s": 1.0, "rounds": 1, "profile_s": 4.0}
    return {"warmup_s": 0.5, "duration_s": 3.5, "rounds": 2, "profile_s": 8.0}


# --- the events ------------------------------------------------------------------------------------------------

class Events:
    """Event n as an HTTP body (for the app), a row (for the baseline) or the accepting statement's input."""

    def __init__(self, world: delivery.World) -> None:
        rng = random.Random(9)
        self.businesses = list(zip(world.business_uuids, world.business_ids, strict=True))
        call_id = f"call_{PLACEHOLDER}"
        self.templates = {
            kind: [orjson.dumps(maker(rng, call_id, f"agt_{i % 7}", callgen.START)).decode() for i in range(TEMPLATES)]
            for kind, maker in (("started", callgen.started), ("completed", callgen.completed))
        }
        self.data_bytes = sum(len(t) for ts in self.templates.values() for t in ts) // (2 * TEMPLATES)

    def _parts(self, n: int) -> tuple[uuid.UUID, str, str, str, str, str]:
        kind = "started" if n % 2 == 0 else "completed"
        call = n // 2 if kind == "started" else n // 2 - LAG
        number = f"{call:08d}"
        data = self.templates[kind][call % TEMPLATES].replace(PLACEHOLDER, number)
        business_uuid, business_id = self.businesses[n % len(self.businesses)]
        return business_uuid, business_id, f"call.{kind}", data, f"call_{number}.{kind}", f"call_{number}"

    def body(self, n: int) -> bytes:
        _, business_id, kind, data, key, _ = self._parts(n)
        return (f'{{"business_id":"{business_id}","type":"{kind}","idempotency_key":"{key}","data":{data}}}'
                .encode())

    def row(self, n: int) -> tuple[object, ...]:
        business_uuid, _, kind, data, key, _ = self._parts(n)
        return uuid.UUID(int=common.uuid7_int()), business_uuid, kind, data, key, datetime.now(UTC)

    def accepted(self, n: int) -> tuple[list[Any], list[Any]]:
        """The accepting statement's input for event n, as ``shared.publishing`` makes it: the event and its
        call's change (built directly: the runner spends its CPU on the connections, not on validation)."""
        from shared.repos.events import NewEvent
        from shared.repos.ingest import Change

        business_uuid, _, kind, data, key, call_id = self._parts(n)
        now = datetime.now(UTC)
        event = NewEvent(uuid.UUID(int=common.uuid7_int()), business_uuid, kind, data, key, now)
        status = "in_progress" if kind == "call.started" else "completed"
        change = Change(business_uuid, call_id, data, now, event.id, status=status, agent_id=f"agt_{n % 7}",
                        started_at=callgen.START)
        return [event], [change]



# --- setup and per-window bookkeeping ----------------------------------------------------------------------


def _make_table(ctx: Context) -> None:
    asyncio.run(common.sql(ctx, "DROP TABLE IF EXISTS bench_events",
                     "CREATE TABLE bench_events (LIKE events INCLUDING ALL)",
                     "ALTER TABLE bench_events ADD FOREIGN KEY (business_id) REFERENCES businesses (id) "
                     "ON DELETE CASCADE"))


def _empty_tables(ctx: Context) -> None:
    """Every window starts from empty tables and a fresh checkpoint (no WAL flush owed by the previous one)."""
    asyncio.run(common.sql(ctx, "TRUNCATE events, calls, deliveries, attempts, bench_events CASCADE", "CHECKPOINT"))


def _counts(ctx: Context) -> dict[str, int]:
    found = asyncio.run(common.sql(ctx, "SELECT count(*) FROM events", "SELECT count(*) FROM deliveries",
                             "SELECT count(*) FROM bench_events"))
    return dict(zip(("events", "deliveries", "bench_events"), (int(n) for n in found), strict=True))


# --- the loads ----------------------------------------------------------------------------------------------------

class Tally:
    def __init__(self) -> None:
        self.acked = 0  # over the whole loop (warm-up and tail included)
        self.on_redis = 0  # wake-ups heard on the Redis wake channel
        self.on_postgres = 0  # and on the Postgres due channel


@asynccontextmanager
async def _listening(ctx: Context, tally: Tally, expect: tuple[int, int]) -> AsyncIterator[None]:
    """Listen as a worker does, on both channels, counting what is heard; at the end, wait (2 s at most) for
    the wake-ups of the last acknowledged events (sent at commit or just after, before the answer)."""
    from shared.repos.handoff import DUE_CHANNEL, wake_channel

    caught_up = asyncio.Event()

    def check() -> None:
        if tally.on_redis >= expect[0] * tally.acked and tally.on_postgres >= expect[1] * tally.acked:
            caught_up.set()

    def on_postgres(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        if payload == "":
            tally.on_postgres += 1
            check()

    pg = await asyncpg.connect(ctx.database_url)
    await pg.add_listener(DUE_CHANNEL, on_postgres)
    client = redis.asyncio.Redis.from_url(ctx.redis_url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(wake_channel(ctx.env["KAIHOOKS_QUEUE_NAME"]))

    async def hear() -> None:
        async for message in pubsub.listen():
            if message["type"] == "message":
                tally.on_redis += 1
                check()

    hearing = asyncio.create_task(hear())
    try:
        yield
        if any(expect):
            caught_up.clear()
            check()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(caught_up.wait(), 2.0)
    finally:
        hearing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await hearing
        await pubsub.aclose()
        await client.aclose()
        await pg.close()


def _app_window(ctx: Context, url: str, events: Events, counter: itertools.count[int], warmup_s: float,
                duration_s: float, pids: loadgen.Pids, tally: Tally, expect: tuple[int, int]) -> loadgen.Window:
    loadgen.check_local(url)
    headers = {"Authorization": f"Bearer {ctx.internal_token}", "Content-Type": "application/json"}

    @asynccontextmanager
    async def open_post(concurrency: int) -> AsyncIterator[loadgen.Op]:
        connector = aiohttp.TCPConnector(limit=concurrency)
        timeout = aiohttp.ClientTimeout(total=30)
        async with _listening(ctx, tally, expect), aiohttp.ClientSession(
                connector=connector, timeout=timeout, headers=headers) as session:

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

    return loadgen.run_ops(open_post, concurrency=CONCURRENCY, warmup_s=warmup_s, duration_s=duration_s, pids=pids,
                           max_ops=MAX_OPS)


def _connections_window(ctx: Context, op_of: Any, warmup_s: float, duration_s: float, pids: loadgen.Pids,
                        tally: Tally, expect: tuple[int, int]) -> loadgen.Window:
    """64 asyncpg connections in the runner, each repeating ``op_of(connection)`` (one transaction)."""

    @asynccontextmanager
    async def open_conns(concurrency: int) -> AsyncIterator[loadgen.Op]:
        conns = await asyncio.gather(*(asyncpg.connect(ctx.database_url) for _ in range(concurrency)))
        try:
            async with _listening(ctx, tally, expect):

                async def op(worker: int) -> str | None:
                    try:
                        await op_of(conns[worker])
                    except (asyncpg.PostgresError, OSError) as exc:
                        return repr(exc)
                    tally.acked += 1
                    return None

                yield op
        finally:
            await asyncio.gather(*(conn.close() for conn in conns))

    return loadgen.run_ops(open_conns, concurrency=CONCURRENCY, warmup_s=warmup_s, duration_s=duration_s,
                           pids=pids, max_ops=MAX_OPS)


# --- the scenario ------------------------------------------------------------------------------------------------

def run(ctx: Context) -> dict[str, Any]:
    from shared.repos import ingest

    timing = _timing(ctx.quick)
    targets = QUICK_TARGETS if ctx.quick else TARGETS
    world = delivery.world(ctx, "p1", delivery.BUSINESSES)
    events = Events(world)
    _make_table(ctx)
    statements = {"sql": ingest._SQL, "sql_notify": api_variant.notifying_statement()}
    counters = {name: itertools.count(2 * LAG) for name in TARGETS}
    problems: dict[str, list[str]] = {name: [] for name in TARGETS}
    heard: dict[str, list[tuple[int, int, int]]] = {name: [] for name in TARGETS if name != "bare"}

    def bare_op(conn: asyncpg.Connection) -> Any:
        return conn.execute(_INSERT, *events.row(next(counters["bare"])))

    def sql_op(name: str) -> Any:
        def op(conn: asyncpg.Connection) -> Any:
            accepted, calls = events.accepted(next(counters[name]))
            return ingest.accept(conn, accepted, [], calls, [], DEADLINE_S)
        return op

    def start_api(stack: ExitStack, name: str) -> tuple[procs.Child, int]:
        """The API a target loads: shipped, or a variant (``bench/api_variant.py``)."""
        if name == "app":
            return common.start_api(ctx, stack)
        port = procs.free_port()
        argv = [sys.executable, str(common.HERE / "api_variant.py"), "--wake", VARIANTS[name]]
        child = procs.start(stack, f"api-wake-{VARIANTS[name]}", argv, {**ctx.env, "PORT": str(port)}, ROOT,
                            ctx.tmp_dir)
        procs.wait_http(child, port, "/healthz")
        return child, port

    def window(name: str, warmup_s: float, duration_s: float) -> loadgen.Window:
        """One window on empty tables, then check that what was acknowledged is stored, and heard. An API
        runs only for its own window (three pools beside 64 connections would crowd a shared Postgres)."""
        _empty_tables(ctx)
        tally = Tally()
        expect = HEARD.get(name, (0, 0))
        with ExitStack() as stack:
            if name in HTTP:
                api, port = start_api(stack, name)
                watch = common.watched(ctx, {"api": [api.pid]})
                url = f"http://127.0.0.1:{port}/internal/v1/events"
                measured = _app_window(ctx, url, events, counters[name], warmup_s, duration_s, watch, tally, expect)
            elif name == "bare":
                watch = common.watched(ctx, {"api": []})
                measured = _connections_window(ctx, bare_op, warmup_s, duration_s, watch, tally, expect)
            else:
                watch = common.watched(ctx, {"api": []})
                ingest._SQL = statements[name]
                try:
                    measured = _connections_window(ctx, sql_op(name), warmup_s, duration_s, watch, tally, expect)
                finally:
                    ingest._SQL = statements["sql"]
        stored = _counts(ctx)
        if name == "bare":
            if stored["bench_events"] != tally.acked:
                problems[name].append(f"{tally.acked} inserts acknowledged but {stored['bench_events']} rows")
            return measured
        if stored["events"] != tally.acked or stored["deliveries"] != tally.acked:
            problems[name].append(f"{tally.acked} events acknowledged but {stored['events']} stored with "
                                  f"{stored['deliveries']} deliveries (one each expected)")
        wanted = (expect[0] * tally.acked, expect[1] * tally.acked)
        if (tally.on_redis, tally.on_postgres) != wanted:
            problems[name].append(f"wake-ups heard on Redis / Postgres: {tally.on_redis} / {tally.on_postgres} "
                                  f"for {tally.acked} acknowledged (expected {wanted[0]} / {wanted[1]})")
        heard[name].append((tally.acked, tally.on_redis, tally.on_postgres))
        return measured

    windows: dict[str, list[loadgen.Window]] = {name: [] for name in targets}
    for _ in range(int(timing["rounds"])):
        for name in targets:
            windows[name].append(window(name, timing["warmup_s"], timing["duration_s"]))

    profile = None
    if ctx.profile:
        _empty_tables(ctx)
        with ExitStack() as stack:
            api, port = start_api(stack, "app")
            url = f"http://127.0.0.1:{port}/internal/v1/events"
            profile = common.profile(ctx, ID, api.pid, timing["profile_s"], lambda seconds: _app_window(
                ctx, url, events, counters["app"], 0.5, seconds, {}, Tally(), (0, 0)))
    _empty_tables(ctx)  # leave no pending deliveries for the scenarios after this one

    rows: dict[str, dict[str, Any]] = {}
    for name in targets:
        row = loadgen.summarise(windows[name])
        row["errors"] = row["errors"] + len(problems[name])  # type: ignore[operator]
        row["error_samples"] = [*problems[name], *row["error_samples"]][:loadgen.MAX_ERROR_SAMPLES]  # type: ignore[misc]
        rows[name] = {"name": LABELS[name], **row}

    def ratio(a: str, b: str) -> tuple[float, list[float]]:
        overall = round(rows[a]["requests_per_s"] / rows[b]["requests_per_s"], 3)
        return overall, [round(x.rps / y.rps, 3) for x, y in zip(windows[a], windows[b], strict=True)]

    def line(key: str) -> str:
        value, per_round = ratios[key]
        return f"{value:.2f} (per round: {', '.join(f'{r:.2f}' for r in per_round)})"

    target, target_rounds = ratio("app", "bare")
    pairs = {"notify_vs_app": ("notify", "app"), "no_wake_vs_app": ("no_wake", "app"),
             "sql_notify_vs_sql": ("sql_notify", "sql"), "no_wake_vs_bare": ("no_wake", "bare")}
    ratios = {key: ratio(a, b) for key, (a, b) in pairs.items() if a in rows and b in rows}
    end_to_end = (f"End to end, the former wake-up (NOTIFY at commit) / the shipped one (Redis PUBLISH after "
                  f"commit): {line('notify_vs_app')}; no wake-up at all / the shipped one: {line('no_wake_vs_app')}. "
                  if "notify" in rows else "")
    ok = "meets" if target >= TARGET_RATIO else "below"
    t = timing
    result: dict[str, Any] = {
        "id": ID,
        "title": TITLE,
        "target_ratio": TARGET_RATIO,
        "ratio": target,
        "ratio_label": "app / bare INSERT (events/s)",
        "rounds_ratio": target_rounds,
        "ratios": {k: {"ratio": v[0], "rounds": v[1]} for k, v in ratios.items()},
        "wake_ups_heard": {k: [{"acked": a, "redis": r, "postgres": p} for a, r, p in v] for k, v in heard.items()},
        "verdicts": [
            f"**Ratio app / bare INSERT (events/s): {target:.2f}** ({ok} the ≥ {TARGET_RATIO} target); per round: "
            f"{', '.join(f'{r:.2f}' for r in target_rounds)}.",
            f"**What waking the workers costs.** {end_to_end}Postgres alone, 64 connections committing the "
            f"accepting statement, with NOTIFY / without: **{line('sql_notify_vs_sql')}**.",
        ],
        "rate_columns": [["requests_per_s", "events/s"]],
        "op_name": "event",
        "concurrency": CONCURRENCY,
        "timing": timing,
        "businesses": len(world.business_uuids),
        "data_bytes_per_event": events.data_bytes,
        "rows": [rows[name] for name in targets],
        "setup": common.setup_summary(ctx),
        "method": (
            f"{CONCURRENCY} concurrent publishers for every target, one event per request (or transaction); "
            f"{'with --quick only the baseline, the app and Postgres alone; ' if ctx.quick else ''}"
            f"{int(t['rounds'])} round(s), each target in turn for {t['duration_s']:g} s after {t['warmup_s']:g} s "
            "warm-up, on tables emptied after a CHECKPOINT. An event is a `call.started` or a `call.completed` "
            f"(of a call started {2 * LAG} events earlier) for one of {len(world.business_uuids)} businesses, "
            f"{events.data_bytes:,} bytes of `data` on average, with an idempotency key. Each business has one "
            "webhook endpoint subscribed to every type, so each accepted event is fanned out into one delivery, "
            "as in production; no worker runs. The app does, per request: HTTP, the internal token, "
            "validation, one statement that is one transaction (the event into `events`, its delivery into "
            "`deliveries`, the upsert of the `calls` projection), then one Redis round trip (the wake-up "
            "`PUBLISH` and the bump of the business's data version), the 202. The variants run the same code "
            "under `bench/api_variant.py`: `--wake notify` sends no `PUBLISH` and puts the former `pg_notify` "
            "back into the accepting statement; `--wake none` sends neither. The `Postgres alone` rows: 64 "
            "asyncpg connections in the runner, each committing `shared.repos.ingest.accept` for one event "
            "(the event and its call's change built in the runner), as shipped and with the `pg_notify` put "
            "back. Checks: every 202 names one new `evt_` id; after each window the stored events and "
            "deliveries equal the acknowledged events; a listener in the runner (Redis `SUBSCRIBE` and "
            "Postgres `LISTEN`, as a worker) heard one wake-up per event on the target's channel, none on the "
            "other. The baseline: one `INSERT` of the same row (id, business_id, type, data::jsonb, "
            "idempotency_key, occurred_at) into `bench_events` (`LIKE events INCLUDING ALL` plus the same "
            f"foreign key) per transaction, {CONCURRENCY} asyncpg connections. Runner CPU is `client`; `api` is "
            "the API process under load, started for its window only (one API's pool at a time beside 64 "
            "connections), with the default pool (`KAIHOOKS_DB_POOL_MAX_SIZE`, 10). Latency is per event "
            "(request or transaction)."
        ),
    }
    if profile is not None:
        result["profile"] = profile
    return result
