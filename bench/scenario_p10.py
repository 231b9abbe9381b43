"""Scenario ``P10``: two workers. P1's measurement (200 businesses x 1 endpoint, closed-loop publishing in
batches of 500) with two ``python -m dispatcher`` processes instead of one, against P1's rate from the same
run (target: ≥ P1 with one worker), and the contention between them: each worker's claim queries (those that
found work and those that came back empty, ``kaihooks_claims_total``) and deliveries claimed, scraped from
their ``/metrics`` after the window. Exactly-once is checked as in P1: every acknowledged event arrives once
(a delivery two workers both sent would be a duplicate at the receiver).

On this 2-core box the API, the receiver, Postgres and the load generator share the cores with the workers:
a second worker adds claim and send capacity but competes for the same CPU, so the figure says what a
second process costs or gains here, not what it gains on a machine of its own (docs/scaling.md).
"""

from __future__ import annotations

import re
import urllib.request
from contextlib import ExitStack
from typing import Any

import common
import delivery
import procs
import scenario_p1
from setup_env import Context

ID = "P10"
TITLE = "Two workers: P1 with two worker processes vs one (same run), and their claim contention"
TARGET_RATIO = 1.0
GROUP = scenario_p1.GROUP
_SAMPLE = re.compile(r'^(kaihooks_claims_total\{result="(rows|empty)"\}|kaihooks_deliveries_claimed_total) '
                     r'([0-9.e+]+)$', re.M)


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    found = {"claims_rows": 0.0, "claims_empty": 0.0, "claimed": 0.0}
    for _name, result, value in _SAMPLE.findall(text):
        found["claimed" if not result else f"claims_{result}"] = float(value)
    return found


def timing(quick: bool) -> dict[str, float]:
    """P1's, with a shorter window in the full run (the whole of ``make bench`` stays under 10 minutes)."""
    return {**scenario_p1.timing(quick), **({} if quick else {"warmup_s": 3.0, "duration_s": 15.0})}


def run(ctx: Context) -> dict[str, Any]:
    t = timing(ctx.quick)
    p1 = ctx.shared["P1"]
    world = delivery.world(ctx, "p1", delivery.BUSINESSES)
    delivery.reset_state(ctx)
    env = delivery.delivery_env(ctx)
    ports = [procs.free_port(), procs.free_port()]
    with ExitStack() as stack:
        receiver = delivery.start_receiver(ctx, stack)
        api, api_port = common.start_api(ctx, stack, env=env)
        workers = [delivery.start_worker(ctx, stack, {**env, "KAIHOOKS_METRICS_PORT": str(port)}, name=f"worker{i}")[0]
                   for i, port in enumerate(ports, 1)]
        groups = {**delivery.pid_groups(api, workers[0], receiver), "worker": [w.pid for w in workers]}
        before = [_scrape(port) for port in ports]
        tally, used, t0, t1 = scenario_p1.saturated_window(ctx, world, api_port, receiver, groups, t["warmup_s"],
                                                           t["duration_s"], GROUP)
        after = [_scrape(port) for port in ports]
        stats = receiver.stats(GROUP, int(t0 * 1e9), int(t1 * 1e9))
        problems, drained_s = delivery.check_delivered(receiver, tally, [GROUP], t["drain_s"])
        counts, settled_s = delivery.db_settled(ctx, world, tally.events)
        if counts.get("succeeded", 0) != tally.events or counts["attempts"] != tally.events:
            problems.append(f"{tally.events} events acknowledged but Postgres holds {counts} {settled_s:.0f}s later")

    app = delivery.row("kaihooks: API + 2 workers, 200 businesses x 1 endpoint", stats, used, t["duration_s"],
                       errors=len(tally.errors) + len(problems), samples=problems + tally.errors)
    one = dict(p1["row"], name="kaihooks: API + 1 worker (P1, this run)")
    rate = app["requests_per_s"]
    ratio = round(rate / p1["rate"], 3) if p1["rate"] else None
    claims = [{k: round(a[k] - b[k]) for k in a} for a, b in zip(after, before, strict=True)]
    share = [c["claimed"] for c in claims]
    total = sum(share) or 1
    contention = (
        "; ".join(f"worker {i}: {c['claimed']:,} deliveries claimed ({100 * c['claimed'] / total:.0f} %) in "
                  f"{c['claims_rows']:,} claims that found work, {c['claims_empty']:,} that came back empty"
                  for i, c in enumerate(claims, 1))
    )
    return {
        "id": ID,
        "title": TITLE,
        "target_ratio": TARGET_RATIO,
        "ratio": ratio,
        "ratio_label": "two workers / one worker (deliveries/s)",
        "rate_columns": [["requests_per_s", "deliveries/s"]],
        "latency_of": " (→ receipt)",
        "op_name": "delivery",
        "rows": [one, app],
        "verdicts": [
            f"**Ratio two workers / one: {ratio}** ({delivery.verdict(ratio is not None and ratio >= TARGET_RATIO)} "
            f"the ≥ {TARGET_RATIO:g} target): {rate:,.1f} vs {p1['rate']:,.1f} deliveries/s.",
            f"Contention (claims from before the warm-up to the end of the window): {contention}. "
            f"Problems (duplicates, missing, Postgres disagreeing): {'none' if not problems else problems[:3]}.",
        ],
        "claims": claims,
        "timing": t,
        "published_events": tally.events,
        "drained_after_s": round(drained_s, 2),
        "postgres_settled_after_s": round(settled_s, 2),
        "postgres_counts": counts,
        "setup": delivery.setup_summary(env),
        "method": (
            "P1's world, publisher and checks (closed loop, batches of 500 over "
            f"{delivery.BUSINESSES} businesses, {t['warmup_s']:g} s warm-up, {t['duration_s']:g} s measured) with "
            "two worker processes; the one-worker row is P1's from this run. `worker` CPU is both workers'. "
            "Claims are each worker's `kaihooks_claims_total` and `kaihooks_deliveries_claimed_total` over the "
            "warm-up and the window (scraped from their `/metrics` before and after). Afterwards every "
            f"acknowledged event arrived once, signed right ({tally.events:,} events), and Postgres holds as many "
            "succeeded deliveries and attempts."
        ),
    }
