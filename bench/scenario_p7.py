"""Scenario ``P7``: backlog. The drain rate with 100,000 deliveries queued vs with 1,000 (quality target:
rate at 100k ≥ 0.9 x rate at 1k: the cost of a delivery does not grow with the backlog).

P1's world (200 businesses x 1 endpoint), the API and the receiver run throughout; no worker at first. A
round: empty tables; publish N ``call.completed`` events through the API in batches of 500
(round-robin over the 200 businesses, four batches at a time) while no worker runs, so N deliveries are
due in Postgres (made as the events are stored); check Postgres holds them; then start one worker
(``python -m dispatcher``) and wait until the receiver has all N. The drain time runs from the moment
the worker logs that its engine runs (start-up excluded) to the last receipt; the rate is N / that.
Rounds: 1k, the large one, 1k again (the 1k figure is their mean rate); each round's worker is stopped
before the next round.

Bounded: the large round is LARGE deliveries unless the first 1k round's rate says draining it would take
longer than DRAIN_BUDGET_S; then it is the largest multiple of 10,000 that fits, and the result says so.
Every round waits at most max(60 s, 3 x its predicted time), capped at MAX_WAIT_S.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from typing import Any

import common
import delivery
from setup_env import Context

ID = "P7"
TITLE = "Backlog: drain rate with 100,000 deliveries queued vs 1,000"
TARGET_RATIO = 0.9
SMALL = 1_000
LARGE = 100_000
QUICK_LARGE = 10_000
GROUP = "h/p1"
MAX_WAIT_S = 300.0


def _budget(quick: bool) -> float:
    return 15.0 if quick else 150.0


def _drain(ctx: Context, receiver: delivery.Receiver, api: Any, api_port: int, world: delivery.World,
           env: dict[str, str], n: int, name: str, wait_s: float) -> dict[str, Any]:
    delivery.reset_state(ctx)
    receiver.reset()
    publisher = delivery.Publisher(ctx, api_port, delivery.Events(world))
    started = time.monotonic()
    tally = delivery.run_async(lambda: publisher.burst(n, 4))
    publish_s = time.monotonic() - started
    problems = list(tally.errors)
    counts_before = delivery.db_counts(ctx, world)
    if counts_before["events"] != n or counts_before["deliveries"] != n:
        problems.append(f"before the worker started: {counts_before} (expected {n} events and deliveries)")
    before = receiver.counts().get(GROUP, 0)
    with ExitStack() as stack:  # the round's worker stops when the round ends (after Postgres has settled)
        worker, ready = delivery.start_worker(ctx, stack, env, name=f"worker-{name.split()[0]}")
        m = delivery.meter(ctx, {"api": [api.pid], "worker": [worker.pid], "receiver": [receiver.pid]})
        m.start()
        got, _ = receiver.wait_for(GROUP, before + n, wait_s)
        used = m.stop()
        rss = delivery.worker_rss_mb(worker.pid)
        received = got - before
        counts, settled_s = delivery.db_settled(ctx, world, n if received >= n else 0)
    stats = receiver.stats(GROUP, int(ready * 1e9))
    if received < n:
        problems.append(f"{received:,} of {n:,} deliveries received within {wait_s:.0f}s of the worker starting")
    if received >= n and (counts.get("succeeded", 0) != n or counts["attempts"] != n):
        problems.append(f"{n} deliveries received but Postgres holds {counts} {settled_s:.0f}s later")
    if stats["duplicates_total"] or stats["bad_signatures"] or stats["unverified_total"]:
        problems.append(f"{stats['duplicates_total']} duplicates, {stats['bad_signatures']} bad signatures, "
                        f"{stats['unverified_total']} unverified")
    drain_s = (stats["last_ns"] / 1e9 - ready) if stats["last_ns"] else used["wall_s"]
    row = delivery.row(name, stats, used, drain_s, errors=len(problems), samples=problems, count=received)
    row.update({"queued": n, "drain_s": round(drain_s, 3), "publish_s": round(publish_s, 2),
                "first_receipt_s": round(stats["first_ns"] / 1e9 - ready, 3) if stats["first_ns"] else None,
                "worker_rss_mb": rss, "complete": received >= n, "postgres_settled_after_s": round(settled_s, 2)})
    return row


def run(ctx: Context) -> dict[str, Any]:
    world = delivery.world(ctx, "p1", delivery.BUSINESSES)
    env = delivery.delivery_env(ctx)
    budget = _budget(ctx.quick)
    large = QUICK_LARGE if ctx.quick else LARGE
    note = ""
    with ExitStack() as stack:  # this scenario's processes stop when it ends
        receiver = delivery.start_receiver(ctx, stack)
        api, api_port = common.start_api(ctx, stack, env=env)
        first = _drain(ctx, receiver, api, api_port, world, env, SMALL, f"{SMALL:,} queued (before)", 60.0)
        small_rate = first["requests_per_s"] or 1.0
        predicted = large / small_rate
        if predicted > budget:
            fits = int(small_rate * budget) // 10_000 * 10_000
            note = (f"At the 1k rate ({small_rate:,.0f}/s) draining {large:,} would take about {predicted:.0f} s, "
                    f"over this scenario's {budget:.0f} s budget, so the large round is {max(10_000, fits):,}.")
            large = max(10_000, fits)
        wait_s = min(MAX_WAIT_S, max(60.0, 3 * large / small_rate))
        big = _drain(ctx, receiver, api, api_port, world, env, large, f"{large:,} queued", wait_s)
        last = _drain(ctx, receiver, api, api_port, world, env, SMALL, f"{SMALL:,} queued (after)", 60.0)
    small = (first["requests_per_s"] + last["requests_per_s"]) / 2
    ratio = round(big["requests_per_s"] / small, 3) if big["complete"] else 0.0
    if ctx.quick and not note:
        note = f"--quick: the large round is {large:,}, not {LARGE:,}."
    return {
        "id": ID,
        "title": TITLE,
        "target_ratio": TARGET_RATIO,
        "ratio": ratio,
        "ratio_label": f"drain rate at {large // 1000}k / at 1k",
        "rounds_ratio": [round(big["requests_per_s"] / first["requests_per_s"], 3),
                         round(big["requests_per_s"] / last["requests_per_s"], 3)],
        "rate_columns": [["requests_per_s", "deliveries/s"]],
        "latency_of": " (publish → receipt, incl. queued)",
        "op_name": "delivery",
        "rows": [first, big, last],
        "large": large,
        "note": note,
        "setup": delivery.setup_summary(env),
        "method": (
            (note + " " if note else "")
            + "P1's 200 businesses x 1 endpoint. Per round: empty tables; N events published through the API in "
            "batches of 500 with no worker running (the `publish_s` in the JSON), so N deliveries are due in "
            "Postgres (fanned out as the events were stored); then one worker starts. Drain time = the worker's "
            "\"worker started\" log line (engine running; process start-up excluded) → the last receipt; rate = N "
            "/ drain time; the 1k figure is the mean of the rounds before and after the large one. CPU is metered "
            "from the worker's start to the poll that saw the last delivery. Latency columns are publish → "
            "receipt, so they include the time queued while no worker ran. Every delivery arrived once, signed "
            "right, and Postgres holds N succeeded deliveries and attempts after each round."
        ),
    }



