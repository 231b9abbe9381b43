"""Scenario ``P4``: fan-out. One event to the 1,000 endpoints of one business, all received within
(1,000 / P1's rate) x 1.5 (P1's rate from this run).

Setup: one business with ENDPOINTS endpoints (``/h/p4/0-<n>`` on the receiver, each its own secret), the
API, one worker, the receiver, as in P1; empty tables and queue. A round publishes one ``call.completed``
event (``POST /internal/v1/events``, ``sent_at_ns`` in its data) and waits until the receiver has all
1,000 deliveries; the figure of a round is publish → last receipt. The first event after the worker
starts opens 1,000 lanes, their secrets and connections (the cold round, reported, not judged); then
ROUNDS measured rounds, one after the other. The verdict is on the slowest measured round.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from typing import Any

import common
import delivery
from setup_env import Context

ID = "P4"
TITLE = "Fan-out: one event to the 1,000 endpoints of one business"
ENDPOINTS = 1_000
GROUP = "h/p4"
WAIT_S = 30.0  # a round's bound


def _round(ctx: Context, receiver: delivery.Receiver, publisher: delivery.Publisher, groups: dict[str, list[int]],
           name: str) -> tuple[dict[str, Any], float | None]:
    before = receiver.counts().get(GROUP, 0)
    m = delivery.meter(ctx, groups)
    m.start()
    started_ns = time.time_ns()
    errors_before = len(publisher.tally.errors)
    tally = delivery.run_async(lambda: publisher.burst(1, 1))
    got, _ = receiver.wait_for(GROUP, before + ENDPOINTS, WAIT_S)
    used = m.stop()
    stats = receiver.stats(GROUP, started_ns)
    problems = tally.errors[errors_before:]
    if got - before < ENDPOINTS:
        problems.append(f"{got - before} of {ENDPOINTS} deliveries received within {WAIT_S:g}s")
    # Every delivery of the round carries the event's sent_at_ns: the largest publish -> receipt is the last one.
    fan_out_s = stats["max_ms"] / 1000 if stats["max_ms"] is not None and got - before >= ENDPOINTS else None
    seconds = fan_out_s or used["wall_s"]
    row = delivery.row(name, stats, used, seconds, errors=len(problems), samples=problems)
    row["fan_out_s"] = fan_out_s
    row["first_receipt_ms"] = round((stats["first_ns"] - started_ns) / 1e6, 1) if stats["first_ns"] else None
    return row, fan_out_s


def run(ctx: Context) -> dict[str, Any]:
    rounds = 2 if ctx.quick else 3
    p1 = ctx.shared["P1"]
    allowed_s = ENDPOINTS / p1["rate"] * 1.5
    world = delivery.world(ctx, "p4", 1, endpoints=ENDPOINTS)
    delivery.reset_state(ctx)
    env = delivery.delivery_env(ctx)
    rows = []
    times: list[float | None] = []
    with ExitStack() as stack:  # this scenario's processes stop when it ends
        receiver = delivery.start_receiver(ctx, stack)
        api, api_port = common.start_api(ctx, stack, env=env)
        worker, _ = delivery.start_worker(ctx, stack, env)
        groups = delivery.pid_groups(api, worker, receiver)
        publisher = delivery.Publisher(ctx, api_port, delivery.Events(world))
        cold, cold_s = _round(ctx, receiver, publisher, groups, "cold: the first event after the worker started")
        for i in range(rounds):
            row, seconds = _round(ctx, receiver, publisher, groups, f"round {i + 1}")
            rows.append(row)
            times.append(seconds)
        problems, _ = delivery.check_delivered(receiver, publisher.tally, [GROUP], WAIT_S)
        counts, _ = delivery.db_settled(ctx, world, (rounds + 1) * ENDPOINTS)
        rss = delivery.worker_rss_mb(worker.pid)
    if problems:
        rows[-1]["errors"] += len(problems)
        rows[-1]["error_samples"] = (problems + rows[-1]["error_samples"])[:5]
    worst = max((s for s in times if s is not None), default=None)
    ok = worst is not None and None not in times and worst <= allowed_s
    shown = ", ".join(f"{s:.3f} s" if s is not None else "incomplete" for s in times)
    return {
        "id": ID,
        "title": TITLE,
        "rows": [cold, *rows],
        "verdicts": [
            f"**Slowest round: {worst if worst is None else round(worst, 3)} s for {ENDPOINTS:,} deliveries** "
            f"({delivery.verdict(ok)} the ≤ {allowed_s:.3f} s target = {ENDPOINTS:,} / P1's "
            f"{p1['rate']:,.1f} per s x 1.5); rounds: {shown}; "
            f"cold round {cold_s if cold_s is None else round(cold_s, 3)} s.",
        ],
        "rate_columns": [["requests_per_s", "deliveries/s"]],
        "latency_of": " (→ receipt)",
        "op_name": "delivery",
        "allowed_s": round(allowed_s, 3),
        "fan_out_s": times,
        "cold_fan_out_s": cold_s,
        "postgres_counts": counts,
        "worker_rss_mb": rss,
        "setup": delivery.setup_summary(env),
        "method": (
            f"One business with {ENDPOINTS:,} endpoints; one event per round, published alone, the next round "
            f"once all {ENDPOINTS:,} deliveries arrived. A round's time is publish → the last receipt (the "
            "receiver's clock minus the event's `sent_at_ns`); its rate is 1,000 / that time; p50/p99 are of the "
            "1,000 deliveries' publish → receipt. CPU is metered from the publish until the poll that saw the "
            f"last delivery (polled every 50 ms). Every delivery arrived once, signed right; Postgres: {counts}."
        ),
    }
