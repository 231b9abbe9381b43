"""Every background task of a worker starts here: named, its failure logged (never "Task exception was
never retrieved"), long-running loops restarted if they end unexpectedly, and all of them awaited at stop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger("kaihooks.dispatcher")

RESTART_AFTER_S = 1.0
COMPLAIN_EVERY_S = 30.0


class Supervisor:
    def __init__(self) -> None:
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._last_complaint: dict[str, float] = {}
        self.stopping = False

    def complain(self, what: str, exc: BaseException, error: bool = False) -> None:
        """Log a recurring failure once, then at most every 30 s while it goes on."""
        now = time.monotonic()
        if now - self._last_complaint.get(what, -1e9) < COMPLAIN_EVERY_S:
            return
        self._last_complaint[what] = now
        log.log(logging.ERROR if error else logging.WARNING, what, exc_info=exc)

    def loop(self, name: str, body: Callable[[], Awaitable[None]]) -> None:
        """Run ``body`` for the life of the worker; if it returns or raises, log it and run it again."""
        async def run() -> None:
            while not self.stopping:
                try:
                    await body()
                    if self.stopping:
                        return
                    log.error("background loop ended unexpectedly; restarting it", extra={"loop": name})
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.complain(f"background loop {name} failed; restarting it", exc, error=True)
                await asyncio.sleep(RESTART_AFTER_S)

        self._loops[name] = asyncio.create_task(run(), name=name)

    def spawn(self, work: Coroutine[Any, Any, object], failure: str) -> asyncio.Task[Any]:
        """Run one piece of work beside the hot path (a send, a pause, a refresh); a failure is logged."""
        async def run() -> object:
            try:
                return await work
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.complain(failure, exc)
                return None

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def track(self, work: Coroutine[Any, Any, object]) -> None:
        """Run work that handles its own failures (a send: it settles whatever happens), awaited at stop."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def busy(self) -> int:
        return len(self._tasks)

    async def finish_work(self, timeout_s: float) -> None:
        """Wait for the spawned work (up to ``timeout_s``); cancel what is left."""
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=max(0.01, timeout_s))
            for task in late:
                task.cancel()
            if late:
                await asyncio.gather(*late, return_exceptions=True)

    async def stop_loops(self, *, keep: tuple[str, ...] = ()) -> None:
        """Cancel the loops (except ``keep``) and wait until they have ended."""
        self.stopping = True
        ending = [task for name, task in self._loops.items() if name not in keep]
        for task in ending:
            task.cancel()
        await asyncio.gather(*ending, return_exceptions=True)
        self._loops = {name: task for name, task in self._loops.items() if name in keep}

    async def stop(self) -> None:
        await self.stop_loops()
