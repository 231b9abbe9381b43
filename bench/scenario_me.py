"""Scenario ``me``: authenticated ``GET /v1/me`` on one API process vs a bare aiohttp handler (P6 style).

Three processes: the API (``python -m api``, as the Procfile runs it), the baseline
(``bench/bare_server.py``, serving the very bytes the API answered, re-encoded with
orjson per request), and the load generator (the runner). Both servers get the same
load at the same concurrency, in alternating rounds (bare, app, bare, app, ...) so
drift on a shared box hits both alike. The figure is app requests/s / bare requests/s.
"""

from __future__ import annotations

import sys
import urllib.parse
from pathlib import Path
from typing import Any

import loadgen
import procs
import profiling
from setup_env import ROOT, Context

ID = "me"
TITLE = "Authenticated GET /v1/me on one API process vs a bare aiohttp handler (P6 style)"
TARGET_RATIO = 0.5  # P6's target, which is for /calls; /v1/me is reported the same way
CANDIDATES = (8, 16, 32)
QUICK_CONCURRENCY = 16
HERE = Path(__file__).resolve().parent


def _timing(quick: bool) -> dict[str, float]:
    if quick:
        return {"warmup_s": 0.5, "duration_s": 3.0, "rounds": 1, "calibrate_s": 0.0, "profile_s": 4.0}
    return {"warmup_s": 1.0, "duration_s": 5.0, "rounds": 2, "calibrate_s": 1.5, "profile_s": 8.0}


def _port(url: str) -> int | None:
    return urllib.parse.urlsplit(url).port


def _watched(ctx: Context, server_pid: int) -> dict[str, list[int]]:
    groups = {"server": [server_pid]}
    for name, url, default in (("postgres", ctx.database_url, 5432), ("redis", ctx.redis_url, 6379)):
        groups[name] = procs.listening_group(_port(url) or default)
    return groups


def _start_servers(ctx: Context) -> tuple[dict[str, tuple[str, dict[str, str], int]], bytes]:
    python = sys.executable
    auth = {"Authorization": f"Bearer {ctx.api_key}"}
    api_port = procs.free_port()
    api = procs.start(ctx.stack, "api", [python, "-m", "api"], {**ctx.env, "PORT": str(api_port)}, ROOT,
                      ctx.tmp_dir)
    procs.wait_http(api, api_port, "/healthz")
    body = procs.wait_http(api, api_port, "/v1/me", auth)
    document = ctx.tmp_dir / "me.json"
    document.write_bytes(body)

    bare_port = procs.free_port()
    bare = procs.start(ctx.stack, "bare", [python, str(HERE / "bare_server.py"), "--port", str(bare_port),
                                           "--body", str(document)], ctx.env, ROOT, ctx.tmp_dir)
    if procs.wait_http(bare, bare_port, "/v1/me") != body:
        raise SystemExit("bench: the bare server's body differs from the API's /v1/me body")
    targets = {
        "bare": (f"http://127.0.0.1:{bare_port}/v1/me", {}, bare.pid),
        "app": (f"http://127.0.0.1:{api_port}/v1/me", auth, api.pid),
    }
    return targets, body


def _calibrate(ctx: Context, target: tuple[str, dict[str, str], int], body: bytes,
               timing: dict[str, float]) -> tuple[int, dict[int, float]]:
    """The concurrency at which the bare handler serves the most requests/s."""
    if ctx.concurrency:
        return ctx.concurrency, {}
    if ctx.quick:
        return QUICK_CONCURRENCY, {}
    url, headers, pid = target
    tried = {}
    for concurrency in CANDIDATES:
        window = loadgen.measure(url, expected=body, concurrency=concurrency, warmup_s=0.5,
                                 duration_s=timing["calibrate_s"], pids={"server": [pid]}, headers=headers)
        tried[concurrency] = round(window.rps, 1)
    return max(tried, key=lambda c: tried[c]), tried


def _profile(ctx: Context, target: tuple[str, dict[str, str], int], body: bytes, concurrency: int,
             seconds: float) -> dict[str, Any]:
    url, headers, pid = target
    out = ctx.results_dir / f"{ctx.stamp}-{ID}-api.collapsed.txt"
    spy = profiling.start(ctx.stack, pid, out, seconds, ctx.tmp_dir, ctx.env, native=ctx.profile == "native")
    loadgen.measure(url, expected=body, concurrency=concurrency, warmup_s=0.5, duration_s=seconds + 1.0,
                    pids={}, headers=headers)
    spy.popen.wait(30)
    if not out.exists():
        raise SystemExit(f"bench: py-spy wrote no profile:\n{spy.log_tail()}")
    return {"collapsed_stacks": str(out.relative_to(ROOT)), "native": ctx.profile == "native",
            **profiling.summarise(out)}


def run(ctx: Context) -> dict[str, Any]:
    timing = _timing(ctx.quick)
    targets, body = _start_servers(ctx)
    concurrency, tried = _calibrate(ctx, targets["bare"], body, timing)
    windows: dict[str, list[loadgen.Window]] = {"bare": [], "app": []}
    for _ in range(int(timing["rounds"])):
        for name in ("bare", "app"):
            url, headers, pid = targets[name]
            windows[name].append(loadgen.measure(
                url, expected=body, concurrency=concurrency, warmup_s=timing["warmup_s"],
                duration_s=timing["duration_s"], pids=_watched(ctx, pid), headers=headers))
    bare, app = loadgen.summarise(windows["bare"]), loadgen.summarise(windows["app"])
    rounds = zip(windows["app"], windows["bare"], strict=True)
    result: dict[str, Any] = {
        "id": ID,
        "title": TITLE,
        "target_ratio": TARGET_RATIO,
        "ratio": round(app["requests_per_s"] / bare["requests_per_s"], 3),  # type: ignore[operator]
        "rounds_ratio": [round(a.rps / b.rps, 3) for a, b in rounds],
        "concurrency": concurrency,
        "calibration_requests_per_s": tried,
        "timing": timing,
        "response_bytes": len(body),
        "rows": [
            {"name": "bare aiohttp handler (baseline)", **bare},
            {"name": "kaihooks GET /v1/me (API key)", **app},
        ],
        "setup": {k: v for k, v in ctx.env.items() if k.startswith("KAIHOOKS_") and k != "KAIHOOKS_SECRET_KEY"},
    }
    if ctx.profile:
        result["profile"] = _profile(ctx, targets["app"], body, concurrency, timing["profile_s"])
    return result
