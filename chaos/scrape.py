"""The workers' own view: each worker serves Prometheus ``/metrics`` (``KAIHOOKS_METRICS_PORT``, a free port per
worker slot, the same across its restarts), and the drill scrapes it every ``SCRAPE_EVERY_S``.

Kept per process life (a restart starts its counters afresh), each a sum over its label sets, the metrics
in ``WANTED`` that the worker exports; any may be absent (``kaihooks_oldest_held_seconds``,
``kaihooks_writer_flush_failures_total``, ``kaihooks_results_dropped_total`` and
``kaihooks_deliveries_claimed_total`` come with the new delivery engine; a labelled counter appears only once
incremented): the checks use what is there and say what was not.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import aiohttp
from fleet import Fleet

SCRAPE_EVERY_S = 1.0
HELD = "kaihooks_held_deliveries"
OLDEST = "kaihooks_oldest_held_seconds"
FLUSH_FAILURES = "kaihooks_writer_flush_failures_total"
DROPPED = "kaihooks_results_dropped_total"
CLAIMED = "kaihooks_deliveries_claimed_total"
ATTEMPTS = "kaihooks_delivery_attempts_total"  # requests sent, by outcome: the old engine's sign of work
# Older releases (drilled for before/after figures) named it so, and counted deferrals in it too.
RENAMED = {"kaihooks_deliveries_total": ATTEMPTS}
IN_FLIGHT = "kaihooks_in_flight"
WANTED = (HELD, OLDEST, FLUSH_FAILURES, DROPPED, CLAIMED, ATTEMPTS, IN_FLIGHT)


@dataclass
class LifeMetrics:
    slot: str  # worker-0, ...
    life: int  # 0 for the first start
    pid: int
    started: float
    killed: float | None = None
    samples: list[tuple[float, dict[str, float]]] = field(default_factory=list)  # (wall time, metric -> value)
    errors: int = 0  # scrapes that got no answer while the process lived

    @property
    def name(self) -> str:
        return f"{self.slot} (start {self.life + 1})" if self.life else self.slot

    def series(self, metric: str) -> list[tuple[float, float]]:
        return [(t, v[metric]) for t, v in self.samples if metric in v]

    def has(self, metric: str) -> bool:
        return any(metric in v for _, v in self.samples)


def parse(text: str) -> dict[str, float]:
    """The ``WANTED`` metrics of a Prometheus text exposition, each summed over its label sets."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_end = min((i for i in (line.find("{"), line.find(" ")) if i >= 0), default=-1)
        if name_end < 0:
            continue
        name = line[:name_end]
        name = RENAMED.get(name, name)
        if name not in WANTED:
            continue
        value_part = line[line.rfind("}") + 1:] if "{" in line[:name_end + 1] else line[name_end:]
        fields = value_part.split()
        if not fields:
            continue
        with contextlib.suppress(ValueError):
            out[name] = out.get(name, 0.0) + float(fields[0])
    return out


class Scraper:
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.lives: dict[tuple[str, int], LifeMetrics] = {}

    async def run(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.5)) as http:
            while True:
                began = time.monotonic()
                await asyncio.gather(*(self._scrape(http, slot.name) for slot in self.fleet.of("worker")))
                await asyncio.sleep(max(0.05, SCRAPE_EVERY_S - (time.monotonic() - began)))

    async def _scrape(self, http: aiohttp.ClientSession, name: str) -> None:
        slot = self.fleet.slot(name)
        if not slot.lives or slot.metrics_port is None:
            return
        n = len(slot.lives) - 1
        life = slot.lives[-1]
        record = self.lives.get((name, n))
        if record is None:
            record = self.lives[(name, n)] = LifeMetrics(name, n, life.pid, life.started)
        record.killed = life.killed
        if not slot.alive:
            return
        try:
            async with http.get(f"http://127.0.0.1:{slot.metrics_port}/metrics") as r:
                text = await r.text()
        except (aiohttp.ClientError, TimeoutError):
            record.errors += 1
            return
        at = time.time()
        if slot.lives[-1].pid == record.pid and slot.alive:
            record.samples.append((at, parse(text)))
