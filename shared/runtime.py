"""Process-wide tuning for the long-running processes (web and worker)."""

from __future__ import annotations

import asyncio
import gc


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop loop where uvloop is installed (Linux, macOS), else asyncio's. Passed as a loop factory
    (``asyncio.Runner(loop_factory=…)``, ``web.run_app(loop=…)``): no event-loop policy is replaced, which
    Python 3.12 deprecates (``uvloop.install()``)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def tune_process() -> None:
    """A garbage collector sized for request/batch churn.

    A 500-event publish allocates tens of thousands of short-lived objects; with the default
    generation-0 threshold (700) the collector ran several full passes per batch (about a
    quarter of the API's CPU under load). Objects alive after start-up are frozen out of it.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)
