"""A bound on the password checks one process runs at once.

argon2id is made to be expensive (about 64 MiB and tens of milliseconds of CPU per check): a burst of
sign-ins, honest or not, would otherwise take every thread and all the memory of an API process. At most
``max_in_flight`` checks run at once and ``max_waiting`` more may queue for a slot; past that the
attempt is refused at once with ``ServiceUnavailable`` (503, ``Retry-After: 1``) rather than queued
without end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from shared import passwords
from shared.errors import ServiceUnavailable

T = TypeVar("T")
RETRY_AFTER_S = 1


class PasswordChecks:
    """Owned by one process (``create_app`` makes it); ``verify`` is ``passwords.verify_password_async``
    within the bound."""

    def __init__(self, max_in_flight: int, max_waiting: int) -> None:
        self._slots = asyncio.Semaphore(max_in_flight)
        self._max_waiting = max_waiting
        self._waiting = 0

    async def run(self, check: Callable[[], Awaitable[T]]) -> T:
        """``check()`` once a slot is free, or ServiceUnavailable if the queue for one is full."""
        if self._slots.locked():
            if self._waiting >= self._max_waiting:
                raise ServiceUnavailable("Too many sign-ins at once; retry in a moment.",
                                         headers={"Retry-After": str(RETRY_AFTER_S)})
            self._waiting += 1
            try:
                await self._slots.acquire()
            finally:
                self._waiting -= 1
        else:
            await self._slots.acquire()
        try:
            return await check()
        finally:
            self._slots.release()

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        return await self.run(lambda: passwords.verify_password_async(stored_hash, password))
