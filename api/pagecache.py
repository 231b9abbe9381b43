"""Rendered read responses, reused while the business's data version has not moved.

Every accepted batch of events bumps its businesses' version in Redis (after commit); the key
check that every key-authenticated request makes already brings the current version back in
the same round trip. A page rendered at that version is served again without touching Postgres.
Entries also expire after ``max_age_s``, which bounds staleness should a bump ever be lost.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict


class PageCache:
    def __init__(self, max_bytes: int = 64 * 1024 * 1024, max_age_s: float = 60.0) -> None:
        self._entries: OrderedDict[tuple[uuid.UUID, str], tuple[str, float, bytes]] = OrderedDict()
        self._bytes = 0
        self._max_bytes = max_bytes
        self._max_age_s = max_age_s

    def get(self, business_id: uuid.UUID, url: str, version: str | None) -> bytes | None:
        if version is None:
            return None
        entry = self._entries.get((business_id, url))
        if entry is None:
            return None
        at_version, stored_at, body = entry
        if at_version != version or time.monotonic() - stored_at > self._max_age_s:
            return None
        self._entries.move_to_end((business_id, url))
        return body

    def put(self, business_id: uuid.UUID, url: str, version: str | None, body: bytes) -> None:
        if version is None or len(body) > self._max_bytes // 16:
            return
        old = self._entries.pop((business_id, url), None)
        if old is not None:
            self._bytes -= len(old[2])
        self._entries[(business_id, url)] = (version, time.monotonic(), body)
        self._bytes += len(body)
        while self._bytes > self._max_bytes:
            _, (_, _, evicted) = self._entries.popitem(last=False)
            self._bytes -= len(evicted)
