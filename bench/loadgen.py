"""A bounded HTTP load loop: N concurrent keep-alive clients GET one URL for a fixed time.

Throughput counts the responses completed inside the measurement window (which starts
after the warm-up). A response is an error unless its status is 200 and its body is
exactly the expected bytes; errors are counted over the whole loop, warm-up included.
The loop is bounded by time and by a request count, and only ever targets 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from procs import CpuMeter

MAX_REQUESTS = 2_000_000
MAX_ERROR_SAMPLES = 5


@dataclass
class Window:
    """Raw figures of one measured window."""

    ok: int
    errors: int
    window_s: float
    latencies_s: list[float]
    cpu: dict[str, float]  # CPU seconds per watched process, "box", "steal", and "wall_s"
    error_samples: list[str] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.ok / self.window_s


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop
    return uvloop.new_event_loop  # type: ignore[no-any-return]


async def _load(url: str, headers: dict[str, str], expected: bytes, concurrency: int, warmup_s: float,
                duration_s: float, pids: dict[str, list[int]], max_requests: int) -> Window:
    now = time.perf_counter
    t0 = now() + warmup_s
    t1 = t0 + duration_s
    latencies: list[float] = []
    errors: list[str] = []
    issued = 0
    meter = CpuMeter({"client": [os.getpid()], **pids})

    async def metered() -> dict[str, float]:
        await asyncio.sleep(max(0.0, t0 - now()))
        meter.start()
        await asyncio.sleep(max(0.0, t1 - now()))
        return meter.stop()

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal issued
        while issued < max_requests:
            sent = now()
            if sent >= t1:
                return
            issued += 1
            try:
                async with session.get(url) as response:
                    body = await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors.append(repr(exc))
                continue
            done = now()
            if status != 200 or body != expected:
                errors.append(f"HTTP {status}: {body[:200]!r}")
            elif t0 <= done <= t1:
                latencies.append(done - sent)

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as session:
        meter_task = asyncio.create_task(metered())
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        cpu = await meter_task
    return Window(ok=len(latencies), errors=len(errors), window_s=duration_s, latencies_s=latencies, cpu=cpu,
                  error_samples=errors[:MAX_ERROR_SAMPLES])


def measure(url: str, *, expected: bytes, concurrency: int, warmup_s: float, duration_s: float,
            pids: dict[str, list[int]], headers: dict[str, str] | None = None,
            max_requests: int = MAX_REQUESTS) -> Window:
    """Run one bounded load window (its own event loop, uvloop if installed).

    ``pids`` names groups of processes whose CPU use over the window is reported (the
    load generator itself is always reported as ``client``).
    """
    if urllib.parse.urlsplit(url).hostname != "127.0.0.1":
        raise ValueError(f"benchmarks only target 127.0.0.1, not {url}")
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(_load(url, headers or {}, expected, concurrency, warmup_s, duration_s, pids,
                                max_requests))


def _percentile_ms(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return round(1000 * ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))], 2)


def summarise(windows: list[Window]) -> dict[str, object]:
    """Pool several windows (rounds) of one target into one row of figures."""
    ok = sum(w.ok for w in windows)
    seconds = sum(w.window_s for w in windows)
    ordered = sorted(x for w in windows for x in w.latencies_s)
    wall = sum(w.cpu["wall_s"] for w in windows)
    cpu_names = [k for k in windows[0].cpu if k != "wall_s"]
    cpu_pct = {name: round(100 * sum(w.cpu[name] for w in windows) / wall, 1) for name in cpu_names}
    # What the rest of the box used meanwhile (other tenants' work, the kernel): noise to be aware of.
    ours = sum(v for k, v in cpu_pct.items() if k not in ("box", "steal"))
    cpu_pct["other"] = round(max(0.0, cpu_pct["box"] - ours), 1)
    return {
        "requests_per_s": round(ok / seconds, 1),
        "requests": ok,
        "errors": sum(w.errors for w in windows),
        "error_samples": [s for w in windows for s in w.error_samples][:MAX_ERROR_SAMPLES],
        "p50_ms": _percentile_ms(ordered, 0.50),
        "p95_ms": _percentile_ms(ordered, 0.95),
        "p99_ms": _percentile_ms(ordered, 0.99),
        "max_ms": _percentile_ms(ordered, 1.0),
        "seconds": round(seconds, 2),
        "rounds_requests_per_s": [round(w.rps, 1) for w in windows],
        # per process group: % of one core; "box", "steal", "other": % of one core summed over all cores
        "cpu_pct": cpu_pct,
    }
