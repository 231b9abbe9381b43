"""What scenarios share: the API process, the process groups watched, py-spy under load, and the
whole "authenticated GET on the API vs a bare aiohttp handler" comparison (``me``, P6).

The GET comparison: three processes, the API (``python -m api``, as the Procfile runs
it), the baseline (``bench/bare_server.py``, serving the body the API answered) and
the load generator (the runner). Both servers get the same load at the same
concurrency (the bare handler's best), in alternating rounds (bare, app, bare, app, ...)
so drift on a shared box hits both alike. The figure is app requests/s / bare requests/s.
"""

from __future__ import annotations

import random
import sys
import time
import urllib.parse
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import asyncpg
import loadgen
import procs
import profiling
from setup_env import ROOT, Context

HERE = Path(__file__).resolve().parent
GET_CANDIDATES = (8, 16, 32)
GET_QUICK_CONCURRENCY = 16
# (url, headers, pid) of one server under GET load
Target = tuple[str, dict[str, str], int]


def get_timing(quick: bool) -> dict[str, float]:
    if quick:
        return {"warmup_s": 0.5, "duration_s": 3.0, "rounds": 1, "calibrate_s": 0.0, "profile_s": 4.0}
    return {"warmup_s": 1.0, "duration_s": 5.0, "rounds": 2, "calibrate_s": 1.5, "profile_s": 8.0}


def _port(url: str) -> int | None:
    return urllib.parse.urlsplit(url).port


def watched(ctx: Context, groups: dict[str, list[int]]) -> Callable[[], dict[str, list[int]]]:
    """``groups`` plus Redis and the Postgres server: its own processes and the backends connected to the
    bench database as they are when the window opens (backends of other databases are someone else's)."""

    def resolve() -> dict[str, list[int]]:
        out = dict(groups)
        database = urllib.parse.urlsplit(ctx.database_url).path.lstrip("/")
        out["postgres"] = procs.listening_group(_port(ctx.database_url) or 5432, database)
        out["redis"] = procs.listening_group(_port(ctx.redis_url) or 6379)
        return out

    return resolve


def start_api(ctx: Context, stack: ExitStack, name: str = "api",
              env: dict[str, str] | None = None) -> tuple[procs.Child, int]:
    """``python -m api`` on a free port, ready (``/healthz`` answers); ``env`` instead of ``ctx.env``."""
    port = procs.free_port()
    api = procs.start(stack, name, [sys.executable, "-m", "api"], {**(env or ctx.env), "PORT": str(port)}, ROOT,
                      ctx.tmp_dir)
    procs.wait_http(api, port, "/healthz")
    return api, port


def setup_summary(ctx: Context) -> dict[str, str]:
    """The KAIHOOKS_* settings the children ran with, secrets left out."""
    secret = ("KAIHOOKS_SECRET_KEY", "KAIHOOKS_INTERNAL_TOKENS")
    return {k: v for k, v in ctx.env.items() if k.startswith("KAIHOOKS_") and k not in secret}


def profile(ctx: Context, scenario_id: str, pid: int, seconds: float,
            load: Callable[[float], object], process: str = "api") -> dict[str, Any]:
    """Sample process ``pid`` (the ``process``, for the file name) with py-spy for ``seconds`` while
    ``load(seconds + 1)`` runs; summarise."""
    out = ctx.results_dir / f"{ctx.stamp}-{scenario_id}-{process}.collapsed.txt"
    spy = profiling.start(ctx.stack, pid, out, seconds, ctx.tmp_dir, ctx.env, native=ctx.profile == "native")
    load(seconds + 1.0)
    spy.popen.wait(30)
    if not out.exists():
        raise SystemExit(f"bench: py-spy wrote no profile:\n{spy.log_tail()}")
    return {"collapsed_stacks": str(out.relative_to(ROOT)), "native": ctx.profile == "native", "process": process,
            **profiling.summarise(out)}


def _calibrate(ctx: Context, target: Target, body: bytes, timing: dict[str, float]) -> tuple[int, dict[int, float]]:
    """The concurrency at which the bare handler serves the most requests/s."""
    if ctx.concurrency:
        return ctx.concurrency, {}
    if ctx.quick:
        return GET_QUICK_CONCURRENCY, {}
    url, headers, pid = target
    tried = {}
    for concurrency in GET_CANDIDATES:
        window = loadgen.measure(url, expected=body, concurrency=concurrency, warmup_s=0.5,
                                 duration_s=timing["calibrate_s"], pids={"server": [pid]}, headers=headers)
        tried[concurrency] = round(window.rps, 1)
    return max(tried, key=lambda c: tried[c]), tried


def get_vs_bare(ctx: Context, stack: ExitStack, *, scenario_id: str, title: str, target_ratio: float,
                api: procs.Child, api_port: int, path: str, query: str, headers: dict[str, str], app_name: str,
                raw: bool) -> dict[str, Any]:
    """Capture the API's answer to ``GET path+query`` once, serve it from a bare handler, compare the two.

    ``raw``: the bare handler sends the captured bytes as they are; else it re-encodes the
    parsed document with orjson on every request, as ``api.render.json`` does for a dict.
    """
    timing = get_timing(ctx.quick)
    body = procs.wait_http(api, api_port, path + query, headers)
    document = ctx.tmp_dir / f"{scenario_id}.json"
    document.write_bytes(body)
    bare_port = procs.free_port()
    argv = [sys.executable, str(HERE / "bare_server.py"), "--port", str(bare_port), "--body", str(document),
            "--path", path, *(["--raw"] if raw else [])]
    bare = procs.start(stack, f"bare-{scenario_id}", argv, ctx.env, ROOT, ctx.tmp_dir)
    if procs.wait_http(bare, bare_port, path + query) != body:
        raise SystemExit(f"bench: the bare server's body differs from the API's {path} body")
    targets: dict[str, Target] = {
        "bare": (f"http://127.0.0.1:{bare_port}{path}{query}", {}, bare.pid),
        "app": (f"http://127.0.0.1:{api_port}{path}{query}", headers, api.pid),
    }
    concurrency, tried = _calibrate(ctx, targets["bare"], body, timing)
    windows: dict[str, list[loadgen.Window]] = {"bare": [], "app": []}
    for _ in range(int(timing["rounds"])):
        for name in ("bare", "app"):
            url, target_headers, pid = targets[name]
            windows[name].append(loadgen.measure(
                url, expected=body, concurrency=concurrency, warmup_s=timing["warmup_s"],
                duration_s=timing["duration_s"], pids=watched(ctx, {"server": [pid]}), headers=target_headers))
    bare_row, app_row = loadgen.summarise(windows["bare"]), loadgen.summarise(windows["app"])
    rounds = zip(windows["app"], windows["bare"], strict=True)
    result: dict[str, Any] = {
        "id": scenario_id,
        "title": title,
        "target_ratio": target_ratio,
        "ratio": round(app_row["requests_per_s"] / bare_row["requests_per_s"], 3),  # type: ignore[operator]
        "rounds_ratio": [round(a.rps / b.rps, 3) for a, b in rounds],
        "concurrency": concurrency,
        "calibration_requests_per_s": tried,
        "timing": timing,
        "response_bytes": len(body),
        "bare_sends": "the captured bytes as they are" if raw else "the document re-encoded with orjson per request",
        "rows": [
            {"name": "bare aiohttp handler (baseline)", **bare_row},
            {"name": app_name, **app_row},
        ],
        "setup": setup_summary(ctx),
    }
    if ctx.profile:
        url, app_headers, pid = targets["app"]
        result["profile"] = profile(ctx, scenario_id, pid, timing["profile_s"], lambda seconds: loadgen.measure(
            url, expected=body, concurrency=concurrency, warmup_s=0.5, duration_s=seconds, pids={},
            headers=app_headers))
    return result


async def sql(ctx: Context, *statements: str) -> list[Any]:
    """Run statements on the bench database in order; each one's single value (None for CHECKPOINT, which a
    server that does not let us run it skips)."""
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


def uuid7_int() -> int:
    """A UUIDv7 as an int (time-ordered, like the app's ids); the low 20 bits are left zero, so a batch's rows may
    take it and the next ones."""
    ms = time.time_ns() // 1_000_000
    rand = random.getrandbits(74) & ~((1 << 20) - 1)
    rand_a, rand_b = rand >> 62, rand & ((1 << 62) - 1)
    return (ms << 80) | (0x7 << 76) | (rand_a << 64) | (0x2 << 62) | rand_b
