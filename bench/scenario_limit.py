"""Scenario ``limit``: the physical ceiling of webhook delivery on this box, the baseline of P1-P4.

Two processes: the receiver (``bench/receiver.py``, the one every delivery scenario uses) and a bare
aiohttp client loop (``bench/limit_client.py``) that signs each request the Standard Webhooks way and
POSTs a 1 KiB JSON body, as the dispatcher does, with no database, no queue and no bookkeeping. Each
candidate concurrency (8, 16, 32) gets its own client process and window, in alternating rounds; the
best is the limit, and P1 measures it again beside its own window at that concurrency. The rate is
requests answered 200 inside the window (the receiver also counts them and checks every signature);
latency is send → receipt as the receiver sees it (the client's ``sent_at_ns`` in the body, the same
clock), the measure P2 uses for publish → receipt; the client's round trips are in the JSON.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import common
import delivery
from setup_env import Context

ID = "limit"
TITLE = "Limit: a bare aiohttp client signing and POSTing 1 KiB webhooks to the receiver (baseline of P1-P4)"


def _timing(quick: bool) -> dict[str, float]:
    if quick:
        return {"warmup_s": 0.5, "duration_s": 1.5, "rounds": 1}
    return {"warmup_s": 1.0, "duration_s": 4.0, "rounds": 2}


def run(ctx: Context) -> dict[str, Any]:
    timing = _timing(ctx.quick)
    candidates = (ctx.concurrency,) if ctx.concurrency else delivery.LIMIT_CANDIDATES
    windows: dict[int, list[dict[str, Any]]] = {c: [] for c in candidates}
    with ExitStack() as stack:  # this scenario's processes stop when it ends
        receiver = delivery.start_receiver(ctx, stack)
        for _ in range(int(timing["rounds"])):
            for concurrency in candidates:
                windows[concurrency].append(delivery.limit_window(
                    ctx, receiver, concurrency, timing["warmup_s"], timing["duration_s"], {}))
    rows = [delivery.pool(ws) for ws in windows.values()]
    best_row = max(rows, key=lambda r: r["requests_per_s"])
    best = int(best_row["concurrency"])
    ctx.shared["limit_concurrency"] = best
    ctx.shared["limit"] = best_row
    t = timing
    return {
        "id": ID,
        "title": TITLE,
        "rows": rows,
        "verdicts": [f"**Limit: {best_row['requests_per_s']:,.0f} signed POSTs/s at concurrency {best}** "
                     f"(send → receipt p50 {best_row['p50_ms']} ms, p99 {best_row['p99_ms']} ms; client round "
                     f"trip p50 {best_row['client_rtt_ms']['p50']} ms, p99 {best_row['client_rtt_ms']['p99']} ms). "
                     "No target: it is the baseline of P1-P4 (P1 measures it again beside its own window)."],
        "rate_columns": [["requests_per_s", "POSTs/s"]],
        "latency_of": " (send→receipt)",
        "op_name": "delivery",
        "concurrency": best,
        "timing": timing,
        "setup": common.setup_summary(ctx),
        "method": (
            f"Concurrency {', '.join(str(c) for c in candidates)}, each its own client process, "
            f"{int(t['rounds'])} alternating round(s) of {t['duration_s']:g} s after {t['warmup_s']:g} s warm-up; "
            f"{delivery.LIMIT_PATHS} paths, each with its own secret, round-robin; every request signed "
            "(HMAC-SHA256 over `id.timestamp.body`, base64) with the dispatcher's headers, every answer checked "
            "(200), every signature verified by the receiver. Latency: send → receipt at the receiver (the "
            "client's `sent_at_ns` in the body); the client's round trips are in the JSON (`client_rtt_ms`)."
        ),
    }

