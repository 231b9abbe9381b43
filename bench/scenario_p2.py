"""Scenario ``P2``: publish → receipt latency at half of P1's rate (targets: p50 ≤ 15 ms, p99 ≤ 100 ms;
the limit's p99 recorded beside it).

Same setup as P1 (its 200 businesses x 1 endpoint, the API, one worker, the receiver; empty tables and
queue). The runner publishes open loop at half the rate P1 measured in this run: every INTERVAL_S a batch
of the events due by then (so about rate x INTERVAL_S events per batch, round-robin over the 200
businesses; at most 16 batches in flight). Each event's data carries ``sent_at_ns``, taken just before
its batch is encoded and POSTed, so the latency covers the whole path: the API's validation and commit
(events, projections and deliveries in one statement), the worker being notified and claiming them,
signing, the POST. The receiver computes receipt -
sent_at_ns (same clock, same box) for every delivery received in the window. Afterwards every
acknowledged event must have arrived once, signed right.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import common
import delivery
from setup_env import Context

ID = "P2"
TITLE = "Delivery latency: publish → receipt at half of P1's rate"
TARGET_P50_MS = 15.0
TARGET_P99_MS = 100.0
GROUP = "h/p1"
INTERVAL_S = 0.02  # one publish request every 20 ms (50 batches/s)


def timing(quick: bool) -> dict[str, float]:
    if quick:
        return {"warmup_s": 1.5, "duration_s": 4.0, "drain_s": 15.0, "profile_s": 8.0}
    return {"warmup_s": 3.0, "duration_s": 20.0, "drain_s": 20.0, "profile_s": 12.0}


def paced_window(ctx: Context, world: delivery.World, api_port: int, groups: dict[str, list[int]], rate: float,
                 warmup_s: float, duration_s: float, interval_s: float = INTERVAL_S,
                 ) -> tuple[delivery.Tally, dict[str, float], float, float]:
    """One open-loop publishing window at ``rate`` events/s, a request every ``interval_s`` (P2, P2s, P3):
    tally, CPU seconds, t0, t1."""
    publisher = delivery.Publisher(ctx, api_port, delivery.Events(world))
    return delivery.window(ctx, groups, warmup_s, duration_s,
                           lambda t0, t1: publisher.paced(rate, t1, interval_s, in_flight=in_flight(interval_s)))


def in_flight(interval_s: float) -> int:
    """Publish requests allowed outstanding: 16 at P2's pace, as many more as the requests are more frequent
    (the same time's worth of requests may wait)."""
    return max(16, round(16 * INTERVAL_S / interval_s))


def run(ctx: Context, scenario_id: str = ID, title: str = TITLE, interval_s: float = INTERVAL_S,
        duration_s: float | None = None) -> dict[str, Any]:
    """P2, or with another ``interval_s`` the same measurement in smaller, more frequent requests (P2s);
    ``duration_s`` shortens the full run's window (not ``--quick``'s)."""
    t = timing(ctx.quick)
    if duration_s is not None and not ctx.quick:
        t["duration_s"] = duration_s
    p1 = ctx.shared["P1"]
    rate = round(p1["rate"] / 2, 1)
    world = delivery.world(ctx, "p1", delivery.BUSINESSES)
    delivery.reset_state(ctx)
    env = delivery.delivery_env(ctx)
    with ExitStack() as stack:  # this scenario's processes stop when it ends
        receiver = delivery.start_receiver(ctx, stack)
        api, api_port = common.start_api(ctx, stack, env=env)
        worker, _ = delivery.start_worker(ctx, stack, env)
        groups = delivery.pid_groups(api, worker, receiver)
        tally, used, t0, t1 = paced_window(ctx, world, api_port, groups, rate, t["warmup_s"], t["duration_s"],
                                           interval_s)
        stats = receiver.stats(GROUP, int(t0 * 1e9), int(t1 * 1e9))
        split = delivery.latency_split(receiver, GROUP, t0, t1, tally)
        problems, drained_s = delivery.check_delivered(receiver, tally, [GROUP], t["drain_s"])
        profiles = []
        if ctx.profile:  # the worker, then the API, each under the same paced load
            for name, pid in (("worker", worker.pid), ("api", api.pid)):
                profiles.append(common.profile(
                    ctx, scenario_id, pid, t["profile_s"], process=name,
                    load=lambda seconds: paced_window(ctx, world, api_port, {}, rate, 0.0, seconds, interval_s)))

    app = delivery.row(f"kaihooks at half of P1's rate ({rate:,.0f} events/s offered)", stats, used,
                       t["duration_s"], errors=len(tally.errors) + len(problems), samples=problems + tally.errors)
    limit = p1["limit_row"]
    ctx.shared[scenario_id] = {"rate": rate, "row": app, "split": split}
    p50, p99 = app["p50_ms"], app["p99_ms"]
    per_batch = rate * interval_s
    result: dict[str, Any] = {
        "id": scenario_id,
        "title": title,
        "rows": [limit, app],
        "verdicts": [
            f"**p50 {p50} ms** ({delivery.verdict(p50 is not None and p50 <= TARGET_P50_MS)} the ≤ "
            f"{TARGET_P50_MS:g} ms target); "
            f"**p99 {p99} ms** ({delivery.verdict(p99 is not None and p99 <= TARGET_P99_MS)} "
            f"the ≤ {TARGET_P99_MS:g} ms target); the limit's p99 beside it: {limit['p99_ms']} ms send → receipt "
            f"(client round trip {limit['client_rtt_ms']['p99']} ms), at full load.",
            f"Where it goes: publish → the API's 202 p50 {split['publish_to_202_ms']['p50']} ms, p99 "
            f"{split['publish_to_202_ms']['p99']} ms; 202 → receipt p50 {split['202_to_receipt_ms']['p50']} ms, p99 "
            f"{split['202_to_receipt_ms']['p99']} ms (of the same {split['deliveries']:,} deliveries).",
            f"Offered {rate:,.1f} events/s (half of P1's {p1['rate']:,.1f}/s), delivered "
            f"{app['requests_per_s']:,.1f}/s; {tally.late_ticks} publish ticks found all "
            f"{in_flight(interval_s)} slots busy.",
        ],
        "rate_columns": [["requests_per_s", "deliveries/s"]],
        "latency_of": " (→ receipt)",
        "op_name": "delivery",
        "offered_events_per_s": rate,
        "latency_split": split,
        "published_events": tally.events,
        "published_batches": tally.batches,
        "publish_batch_p50_ms": _ms(sorted(tally.batch_latencies_s), 0.5),
        "publish_batch_p99_ms": _ms(sorted(tally.batch_latencies_s), 0.99),
        "drained_after_s": round(drained_s, 2),
        "timing": t,
        "setup": delivery.setup_summary(env),
        "method": (
            f"P1's world and processes. Open-loop publishing at {rate:,.1f} events/s: a batch every "
            f"{interval_s * 1000:g} ms of the events due by then (about {per_batch:,.1f} per batch), "
            f"{t['warmup_s']:g} s warm-up, {t['duration_s']:g} s measured. Latency is publish → receipt of every "
            "delivery received in the window: the receiver's clock minus the `sent_at_ns` the publisher put in "
            "the event data just before encoding and POSTing the batch, so it includes the API's work "
            f"(the publish request itself: p50 {_ms(sorted(tally.batch_latencies_s), 0.5)} ms, p99 "
            f"{_ms(sorted(tally.batch_latencies_s), 0.99)} ms). The limit row is P1's, measured in this run at "
            "full load (send → receipt). Every acknowledged event arrived once, signed right, checked afterwards."
        ),
    }
    if profiles:
        result["profiles"] = profiles
    return result


def _ms(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)
