"""Scenario ``P2s``: P2 in the shape publishing services send: a small request every 5 ms (a few events each)
at half of P1's rate (targets: p50 ≤ 15 ms, p99 ≤ 100 ms). Everything else is P2's (``scenario_p2``):
the world, the processes, the checks, the latency split (publish → 202, 202 → receipt)."""

from __future__ import annotations

from typing import Any

import scenario_p2
from setup_env import Context

ID = "P2s"
TITLE = "Delivery latency in small requests: a publish every 5 ms at half of P1's rate"
INTERVAL_S = 0.005


def run(ctx: Context) -> dict[str, Any]:
    return scenario_p2.run(ctx, scenario_id=ID, title=TITLE, interval_s=INTERVAL_S, duration_s=12.0)
