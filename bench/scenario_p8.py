"""Scenario ``P8``: memory. RSS of the API and of the worker over a bounded run at half of P1's rate
(quality target: ≤ 200 MB each, growth ≤ 10 % after warm-up).

quality.md asks for a 10-minute run; the whole harness must finish in under 10 minutes and the other
scenarios already take about 5.5, so this one publishes for 120 s (15 s with ``--quick``) and says so in
its result; ``--long`` (``make bench LONG=1``) runs it for the full 600 s.
A linear trend fitted to the samples after warm-up is reported beside the
measured growth, with what it would reach at 10 minutes: an estimate, not a measurement.

Same world and processes as P1/P2: 200 businesses x 1 endpoint, the API (``python -m api``), one
worker (``python -m dispatcher``), the receiver; empty tables and queue. The runner publishes open
loop, P2's way (a batch of the events due every 20 ms), at half the rate P1 measured in this run when
P1 ran before it (``--only P1,P8``, or a full run), else at FIXED_RATE, half of the P1 rate recorded in
BENCHMARKS.md, rounded. Every second, from just before the load starts to the end of the window, the
runner samples the resident set size (psutil ``memory_info().rss``) of the API and the worker process.

Reported per process: RSS idle before the load, after warm-up (the sample nearest to WARMUP_SHARE of
the window), peak, at the end of the window, growth after warm-up ((end - warm-up) / warm-up); and
the verdict. The delivery row (rate, publish → receipt latency, CPU) is over the part after warm-up.
Afterwards every acknowledged event must have arrived once, signed right.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import ExitStack
from typing import Any

import common
import delivery
import psutil
from scenario_p2 import INTERVAL_S
from setup_env import Context

ID = "P8"
TITLE = "Memory: API and worker RSS over a bounded run at half of P1's rate"
LIMIT_MB = 200.0
MAX_GROWTH = 0.10
FIXED_RATE = 1_300.0  # events/s: half of the 2,633/s P1 recorded in BENCHMARKS.md (2026-11-27, 00857a4), rounded
WARMUP_SHARE = 0.25  # the RSS "after warm-up" is the sample at this share of the window
SAMPLE_EVERY_S = 1.0
QUALITY_WINDOW_S = 600.0  # what quality.md asks for
GROUP = "h/p1"
PROCESSES = ("api", "worker")


def timing(quick: bool, long: bool = False) -> dict[str, float]:
    if long:
        return {"window_s": QUALITY_WINDOW_S, "drain_s": 30.0}
    if quick:
        return {"window_s": 15.0, "drain_s": 20.0}
    return {"window_s": 120.0, "drain_s": 30.0}


async def _sample(pids: dict[str, int], start: float, until: float,
                  samples: list[dict[str, float | None]]) -> None:
    """RSS (MB) of each process every SAMPLE_EVERY_S from ``start`` to ``until`` (wall clock), both ends in."""
    handles = {}
    for name, pid in pids.items():
        try:
            handles[name] = psutil.Process(pid)
        except psutil.Error:
            handles[name] = None
    tick = 0
    while True:
        at = min(start + tick * SAMPLE_EVERY_S, until)
        await asyncio.sleep(max(0.0, at - time.time()))
        sample: dict[str, float | None] = {"t_s": round(time.time() - start, 2)}
        for name, proc in handles.items():
            try:
                sample[name] = round(proc.memory_info().rss / 2**20, 1) if proc is not None else None
            except psutil.Error:
                sample[name] = None  # the process is gone: reported as an error
        samples.append(sample)
        if at >= until:
            return
        tick += 1


def _trend_mb_per_min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MB), in MB per minute."""
    if len(points) < 3:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_m = sum(m for _, m in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if not var:
        return None
    return 60 * sum((t - mean_t) * (m - mean_m) for t, m in points) / var


def _summary(name: str, idle: float | None, samples: list[dict[str, float | None]],
             warmup_s: float, window_s: float) -> dict[str, Any]:
    series = [(float(s["t_s"] or 0.0), s[name]) for s in samples]
    values = [(t, m) for t, m in series if m is not None]
    missing = len(series) - len(values)
    if not values:
        return {"process": name, "idle_mb": idle, "missing_samples": missing, "ok": False}
    warm_t, warm = min(values, key=lambda tm: abs(tm[0] - warmup_s))
    end = values[-1][1]
    after = [(t, m) for t, m in values if t >= warm_t]
    peak = max(m for _, m in values)
    growth = (end - warm) / warm
    slope = _trend_mb_per_min(after)
    projected = None
    if slope is not None:
        projected = round(warm + slope * (QUALITY_WINDOW_S - warm_t) / 60, 1)
    ok = not missing and peak <= LIMIT_MB and growth <= MAX_GROWTH
    return {
        "process": name, "idle_mb": idle, "warmup_at_s": warm_t, "warmup_mb": warm, "peak_mb": peak,
        "end_mb": end, "growth_pct": round(100 * growth, 1),
        "max_after_warmup_mb": max(m for _, m in after),
        "trend_mb_per_min": None if slope is None else round(slope, 2),
        "projected_10min_mb": projected,
        "projected_10min_growth_pct": None if projected is None else round(100 * (projected - warm) / warm, 1),
        "missing_samples": missing, "window_s": window_s, "ok": ok,
    }


def _rss_table(summaries: list[dict[str, Any]]) -> str:
    head = ("| process | idle before the load | after warm-up | peak | end of the window | growth after warm-up "
            "| trend after warm-up | at 10 min if the trend held (estimate) | verdict |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for s in summaries:
        if "warmup_mb" not in s:
            lines.append(f"| {s['process']} | {s['idle_mb']} MB | - | - | - | - | - | - | no samples |")
            continue
        trend = "-" if s["trend_mb_per_min"] is None else f"{s['trend_mb_per_min']:+.2f} MB/min"
        projected = "-" if s["projected_10min_mb"] is None else \
            f"{s['projected_10min_mb']} MB ({s['projected_10min_growth_pct']:+.1f} %)"
        lines.append(
            f"| {s['process']} | {s['idle_mb']} MB | {s['warmup_mb']} MB (at {s['warmup_at_s']:g} s) | "
            f"**{s['peak_mb']} MB** | {s['end_mb']} MB | **{s['growth_pct']:+.1f} %** | {trend} | {projected} | "
            f"{'meets' if s['ok'] else 'does not meet'} |")
    return "\n".join(lines)


def run(ctx: Context) -> dict[str, Any]:
    t = timing(ctx.quick, ctx.long)
    window_s = t["window_s"]
    warmup_s = round(window_s * WARMUP_SHARE, 1)
    p1 = ctx.shared.get("P1")
    if p1 is not None:
        rate = round(p1["rate"] / 2, 1)
        rate_source = f"half of P1's {p1['rate']:,.1f}/s measured in this run"
    else:
        rate = FIXED_RATE
        rate_source = ("a fixed rate: P1 did not run before it, and this is half of the 2,633/s P1 recorded in "
                       "BENCHMARKS.md (2026-11-27), rounded")
    world = delivery.world(ctx, "p1", delivery.BUSINESSES)
    delivery.reset_state(ctx)
    env = delivery.delivery_env(ctx)
    samples: list[dict[str, float | None]] = []
    with ExitStack() as stack:  # this scenario's processes stop when it ends
        receiver = delivery.start_receiver(ctx, stack)
        api, api_port = common.start_api(ctx, stack, env=env)
        worker, _ = delivery.start_worker(ctx, stack, env)
        pids = {"api": api.pid, "worker": worker.pid}
        idle = {name: delivery.worker_rss_mb(pid) for name, pid in pids.items()}
        groups = delivery.pid_groups(api, worker, receiver)
        publisher = delivery.Publisher(ctx, api_port, delivery.Events(world))

        async def load(t0: float, t1: float) -> delivery.Tally:
            start = t0 - warmup_s
            tally, _ = await asyncio.gather(publisher.paced(rate, t1, INTERVAL_S), _sample(pids, start, t1, samples))
            return tally

        tally, used, t0, t1 = delivery.window(ctx, groups, warmup_s, window_s - warmup_s, load)
        stats = receiver.stats(GROUP, int(t0 * 1e9), int(t1 * 1e9))
        problems, drained_s = delivery.check_delivered(receiver, tally, [GROUP], t["drain_s"])
        after_drain = {name: delivery.worker_rss_mb(pid) for name, pid in pids.items()}
        exited = [f"{c.name} exited with {c.popen.returncode}" for c in (api, worker) if c.popen.poll() is not None]

    summaries = [_summary(name, idle[name], samples, warmup_s, window_s) for name in PROCESSES]
    problems += exited + [f"{s['process']}: {s['missing_samples']} RSS samples missing"
                          for s in summaries if s.get("missing_samples")]
    app = delivery.row(f"kaihooks at {rate:,.0f} events/s for {window_s:g} s (after warm-up)", stats, used,
                       window_s - warmup_s, errors=len(tally.errors) + len(problems),
                       samples=problems + tally.errors)
    ok = all(s["ok"] for s in summaries)
    worst_peak = max((s.get("peak_mb") or 0.0) for s in summaries)
    worst_growth = max((s.get("growth_pct") or 0.0) for s in summaries)
    full = window_s >= QUALITY_WINDOW_S
    shorter = (f"The window is quality.md's {QUALITY_WINDOW_S / 60:g} minutes (`--long`)." if full
               else f"The window is {window_s:g} s, not quality.md's {QUALITY_WINDOW_S / 60:g} minutes: the whole "
               "harness must finish in under 10 minutes (the other scenarios take about 5.5; `make bench LONG=1` "
               "runs this one for 10 minutes). The trend column extrapolates the samples after warm-up to 10 "
               "minutes: an estimate, not a measurement.")
    return {
        "id": ID,
        "title": TITLE,
        "rows": [app],
        "verdicts": [
            f"**RSS: peak {worst_peak:g} MB, growth after warm-up at most {worst_growth:+.1f} %** "
            f"({'meets' if ok else 'does not meet'} the ≤ {LIMIT_MB:g} MB each, growth ≤ "
            f"{100 * MAX_GROWTH:g} % after warm-up target, over {window_s:g} s).",
            _rss_table(summaries),
            shorter,
            f"After the drain ({drained_s:.1f} s after the load stopped): "
            + ", ".join(f"{name} {mb} MB" for name, mb in after_drain.items()) + ".",
        ],
        "rate_columns": [["requests_per_s", "deliveries/s"]],
        "latency_of": " (→ receipt)",
        "op_name": "delivery",
        "offered_events_per_s": rate,
        "rate_source": rate_source,
        "rss": summaries,
        "rss_idle_mb": idle,
        "rss_after_drain_mb": after_drain,
        "rss_samples": samples,
        "published_events": tally.events,
        "published_batches": tally.batches,
        "late_ticks": tally.late_ticks,
        "drained_after_s": round(drained_s, 2),
        "timing": {**t, "warmup_s": warmup_s, "sample_every_s": SAMPLE_EVERY_S},
        "setup": delivery.setup_summary(env),
        "method": (
            f"P1's world and processes (200 businesses x 1 endpoint, API, one worker, receiver), started fresh. "
            f"Open-loop publishing at {rate:,.1f} events/s ({rate_source}), P2's way: a batch every "
            f"{INTERVAL_S * 1000:g} ms of the events due by then, for {window_s:g} s ({tally.events:,} events "
            f"in {tally.batches:,} batches, {tally.late_ticks} ticks late). RSS (psutil `memory_info().rss`) of "
            f"the API and the worker process sampled every {SAMPLE_EVERY_S:g} s from the start of the load "
            f"({len(samples)} samples each; `rss_samples` in the JSON); 'after warm-up' is the sample at "
            f"{warmup_s:g} s ({100 * WARMUP_SHARE:g} % of the window), growth is end vs that sample; 'idle' is "
            "just before the load. The delivery row covers the window after warm-up. Every acknowledged event "
            "arrived once, signed right, checked afterwards."
        ),
    }
