"""Scenario ``P3``: isolation. P1 again with 20 % of the endpoints hanging until the delivery timeout
(targets: healthy deliveries/s ≥ 0.8 x P1's, healthy p99 ≤ 2 x P2's p99).

Setup: 200 fresh businesses with one endpoint each; every fifth one (40, 20 %) points at ``/hang/p3/<n>``,
where the receiver holds the request for HANG_S (longer than the worker's ``KAIHOOKS_DELIVERY_TIMEOUT``
of TIMEOUT_S, so every attempt there times out); the others at ``/h/p3/<n>``, answered at once. The
API and one worker run with ``KAIHOOKS_DELIVERY_TIMEOUT=5``, otherwise as in P1; empty tables and queue.

Two phases, same processes, in this order:

1. throughput: P1's closed-loop publisher (batches of 500 round-robin over all 200 businesses, so 20 %
   of the events are for hanging endpoints; a batch whenever fewer than P1's backlog of *healthy*
   deliveries are unreceived). A warm-up longer than the timeout, so the first attempts to the hanging
   endpoints have timed out and their breakers opened before the window; the figure is correctly
   signed healthy deliveries/s inside the window, against P1's figure from this run.
2. latency: P2's open-loop publisher at P2's rate (half of P1's), 20 % of it to hanging endpoints; the
   healthy deliveries' publish → receipt p50/p99 against P2's from this run.

The hanging endpoints' deliveries are retried on the schedule and stay pending; they are not errors.
Healthy ones must all arrive, once, signed right.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import common
import delivery
import scenario_p1
import scenario_p2
from setup_env import Context

ID = "P3"
TITLE = "Isolation: P1 and P2 again with 20 % of the endpoints hanging until the delivery timeout"
TARGET_RATE_RATIO = 0.8
TARGET_P99_RATIO = 2.0
HANG_EVERY = 5  # every fifth business's endpoint hangs: 20 %
TIMEOUT_S = 5
HANG_S = 30.0
HEALTHY, HANGING = "h/p3", "hang/p3"


def timing(quick: bool) -> dict[str, float]:
    if quick:
        return {"warmup_s": TIMEOUT_S + 1.5, "duration_s": 3.5, "paced_warmup_s": 1.5, "paced_s": 3.0,
                "drain_s": 20.0}
    return {"warmup_s": TIMEOUT_S + 3.0, "duration_s": 30.0, "paced_warmup_s": 3.0, "paced_s": 20.0,
            "drain_s": 30.0}


def run(ctx: Context) -> dict[str, Any]:
    t = timing(ctx.quick)
    p1, p2 = ctx.shared["P1"], ctx.shared["P2"]
    world = delivery.world(ctx, "p3", delivery.BUSINESSES, hang_every=HANG_EVERY)
    delivery.reset_state(ctx)
    env = delivery.delivery_env(ctx, KAIHOOKS_DELIVERY_TIMEOUT=str(TIMEOUT_S))
    healthy_share = world.groups.count(HEALTHY) / len(world.groups)
    with ExitStack() as stack:  # this scenario's processes stop when it ends
        receiver = delivery.start_receiver(ctx, stack, hang_s=HANG_S)
        api, api_port = common.start_api(ctx, stack, env=env)
        worker, _ = delivery.start_worker(ctx, stack, env)
        groups = delivery.pid_groups(api, worker, receiver)

        tally, used, t0, t1 = scenario_p1.saturated_window(
            ctx, world, api_port, receiver, groups, t["warmup_s"], t["duration_s"], HEALTHY,
            backlog=round(scenario_p1.BACKLOG * healthy_share))
        stats = receiver.stats(HEALTHY, int(t0 * 1e9), int(t1 * 1e9))
        hang_stats = receiver.stats(HANGING, int(t0 * 1e9), int(t1 * 1e9))
        problems, drained_s = delivery.check_delivered(receiver, tally, [HEALTHY], t["drain_s"])

        paced, paced_used, p0, p1_end = scenario_p2.paced_window(ctx, world, api_port, groups, p2["rate"],
                                                                 t["paced_warmup_s"], t["paced_s"])
        paced_stats = receiver.stats(HEALTHY, int(p0 * 1e9), int(p1_end * 1e9))
        split = delivery.latency_split(receiver, HEALTHY, p0, p1_end, paced)
        paced_hang = receiver.stats(HANGING, int(p0 * 1e9), int(p1_end * 1e9))
        more, paced_drained_s = delivery.check_delivered(receiver, paced, [HEALTHY], t["drain_s"])
        problems += more
        rss = delivery.worker_rss_mb(worker.pid)
        counts = delivery.db_counts(ctx, world)

    sat = delivery.row("P3 throughput: healthy endpoints, 20 % hanging beside them", stats, used, t["duration_s"],
                       errors=len(tally.errors) + len(problems), samples=problems + tally.errors)
    lat = delivery.row(f"P3 latency: healthy endpoints at P2's rate ({p2['rate']:,.0f} events/s, 20 % hanging)",
                       paced_stats, paced_used, t["paced_s"], errors=len(paced.errors), samples=paced.errors)
    p1_row = {**p1["row"], "name": f"P1 (this run): {p1['row']['name']}"}
    p2_row = {**p2["row"], "name": f"P2 (this run): {p2['row']['name']}"}
    rate_ratio = round(sat["requests_per_s"] / p1["rate"], 3)
    p99_ratio = round(lat["p99_ms"] / p2["row"]["p99_ms"], 2) if lat["p99_ms"] and p2["row"]["p99_ms"] else None
    return {
        "id": ID,
        "title": TITLE,
        "rows": [p1_row, sat, p2_row, lat],
        "verdicts": [
            f"**Healthy throughput / P1: {rate_ratio:.2f}** ({delivery.verdict(rate_ratio >= TARGET_RATE_RATIO)} "
            f"the ≥ {TARGET_RATE_RATIO} target): {sat['requests_per_s']:,.1f} vs {p1['rate']:,.1f} deliveries/s.",
            f"**Healthy p99 / P2's p99: {p99_ratio}** "
            f"({delivery.verdict(p99_ratio is not None and p99_ratio <= TARGET_P99_RATIO)} "
            f"the ≤ {TARGET_P99_RATIO:g} target): {lat['p99_ms']} ms vs {p2['row']['p99_ms']} ms "
            f"(p50 {lat['p50_ms']} ms vs {p2['row']['p50_ms']} ms).",
            f"Healthy latency split: publish → 202 p50 {split['publish_to_202_ms']['p50']} ms, p99 "
            f"{split['publish_to_202_ms']['p99']} ms; 202 → receipt p50 {split['202_to_receipt_ms']['p50']} ms, "
            f"p99 {split['202_to_receipt_ms']['p99']} ms (P2: {p2['split']['publish_to_202_ms']['p99']} and "
            f"{p2['split']['202_to_receipt_ms']['p99']} ms at p99).",
            f"Requests that reached the hanging endpoints: {hang_stats['count']} in the throughput window, "
            f"{paced_hang['count']} in the latency window (each held {HANG_S:g} s, the worker gives up after "
            f"{TIMEOUT_S} s); Postgres at the end: {counts}.",
        ],
        "rate_columns": [["requests_per_s", "deliveries/s"]],
        "latency_of": " (→ receipt)",
        "op_name": "delivery",
        "rate_ratio": rate_ratio,
        "latency_split": split,
        "p99_ratio": p99_ratio,
        "hanging_requests": {"throughput_window": hang_stats["count"], "latency_window": paced_hang["count"]},
        "published_events": {"throughput": tally.events, "latency": paced.events},
        "drained_after_s": {"throughput": round(drained_s, 2), "latency": round(paced_drained_s, 2)},
        "worker_rss_mb": rss,
        "postgres_counts": counts,
        "timing": t,
        "setup": delivery.setup_summary(env),
        "method": (
            f"200 businesses x 1 endpoint, every {HANG_EVERY}th hanging ({world.groups.count(HANGING)} endpoints: "
            f"the receiver holds them {HANG_S:g} s; `KAIHOOKS_DELIVERY_TIMEOUT={TIMEOUT_S}`). Throughput: P1's "
            f"closed-loop publisher over all 200 (backlog {round(scenario_p1.BACKLOG * healthy_share):,} healthy "
            f"deliveries), {t['warmup_s']:g} s warm-up (longer than the timeout), {t['duration_s']:g} s measured. "
            f"Latency: P2's open-loop publisher at {p2['rate']:,.1f} events/s over all 200, "
            f"{t['paced_warmup_s']:g} s warm-up, {t['paced_s']:g} s measured, right after (same processes). "
            "Rates and latencies are of the healthy endpoints only, signature verified; every acknowledged "
            "healthy event arrived once. The P1 and P2 rows are those measured earlier in this run."
        ),
    }
