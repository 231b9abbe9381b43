"""A real dispatcher (delivery engine and crons), run in the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from dispatcher.worker import serve
from shared.settings import Settings


@contextlib.asynccontextmanager
async def running_worker(settings: Settings) -> AsyncIterator[None]:
    """Start the worker exactly as `python -m dispatcher` does; stop it as SIGTERM would."""
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve(settings, stop, ready))
    try:
        waiting = asyncio.create_task(ready.wait())
        await asyncio.wait({task, waiting}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if task.done():
            task.result()
        assert ready.is_set(), "worker did not start"
        yield
    finally:
        stop.set()
        await task
