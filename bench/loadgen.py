"""Bounded load loops: N concurrent workers repeat one operation for a fixed time.

``measure`` is the HTTP one: keep-alive clients GET one URL, and a response is an error
unless its status is 200 and its body is exactly the expected bytes. ``run_ops`` runs
any operation the same way (a scenario's POSTs, a baseline's database inserts).
Throughput counts the operations completed inside the measurement window (which starts
after the warm-up); errors are counted over the whole loop, warm-up included. Every
loop is bounded by time and by an operation count, and only ever targets 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
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


# One operation of a load loop, given the index of the worker running it (0..concurrency-1):
# None if it went right, else what went wrong (the operation catches its own exceptions).
Op = Callable[[int], Awaitable[str | None]]


# Process groups whose CPU is reported: a dict, or a function giving it when the window opens (so that
# processes started during the warm-up, such as new Postgres backends, are counted).
Pids = dict[str, list[int]] | Callable[[], dict[str, list[int]]]


async def _loop(open_op: Callable[[int], AbstractAsyncContextManager[Op]], concurrency: int, warmup_s: float,
                duration_s: float, pids: Pids, max_ops: int) -> Window:
    """``concurrency`` workers repeat ``op`` until the window closes or ``max_ops`` were issued."""
    now = time.perf_counter
    latencies: list[float] = []
    errors: list[str] = []
    issued = 0

    async with open_op(concurrency) as op:
        # The clock starts once the operation is set up (sessions, connections).
        t0 = now() + warmup_s
        t1 = t0 + duration_s

        async def metered() -> dict[str, float]:
            await asyncio.sleep(max(0.0, t0 - now()))
            meter = CpuMeter({"client": [os.getpid()], **(pids() if callable(pids) else pids)})
            meter.start()
            await asyncio.sleep(max(0.0, t1 - now()))
            return meter.stop()

        async def worker(index: int) -> None:
            nonlocal issued
            while issued < max_ops:
                sent = now()
                if sent >= t1:
                    return
                issued += 1
                error = await op(index)
                done = now()
                if error is not None:
                    errors.append(error)
                elif t0 <= done <= t1:
                    latencies.append(done - sent)

        meter_task = asyncio.create_task(metered())
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        cpu = await meter_task
    return Window(ok=len(latencies), errors=len(errors), window_s=duration_s, latencies_s=latencies, cpu=cpu,
                  error_samples=errors[:MAX_ERROR_SAMPLES])


def run_ops(open_op: Callable[[int], AbstractAsyncContextManager[Op]], *, concurrency: int, warmup_s: float,
            duration_s: float, pids: Pids, max_ops: int) -> Window:
    """Run one bounded window of any operation (its own event loop, uvloop if installed).

    ``open_op(concurrency)`` is an async context manager that sets up what the workers
    share (an HTTP session, database connections) and yields the operation; it runs
    inside the window's event loop. Throughput counts the operations completed inside
    the window; errors are counted over the whole loop, warm-up included.
    """
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(_loop(open_op, concurrency, warmup_s, duration_s, pids, max_ops))


def check_local(url: str) -> None:
    if urllib.parse.urlsplit(url).hostname != "127.0.0.1":
        raise ValueError(f"benchmarks only target 127.0.0.1, not {url}")


def measure(url: str, *, expected: bytes, concurrency: int, warmup_s: float, duration_s: float,
            pids: Pids, headers: dict[str, str] | None = None, max_requests: int = MAX_REQUESTS) -> Window:
    """One bounded window of keep-alive ``GET url``; a response is right if it is 200 with exactly ``expected``.

    ``pids`` names groups of processes whose CPU use over the window is reported (the
    load generator itself is always reported as ``client``).
    """
    check_local(url)

    @asynccontextmanager
    async def open_get(concurrency: int) -> AsyncIterator[Op]:
        connector = aiohttp.TCPConnector(limit=concurrency)
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers or {}) as session:

            async def get(_: int) -> str | None:
                try:
                    async with session.get(url) as response:
                        body = await response.read()
                        status = response.status
                except (aiohttp.ClientError, TimeoutError) as exc:
                    return repr(exc)
                if status != 200 or body != expected:
                    return f"HTTP {status}: {body[:200]!r}"
                return None

            yield get

    return run_ops(open_get, concurrency=concurrency, warmup_s=warmup_s, duration_s=duration_s, pids=pids,
                   max_ops=max_requests)


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
