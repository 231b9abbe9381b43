"""API-key verification: checksum, keyed-hash lookup (cached), revocation, rate limit, last use.

One Redis round trip per request carries the revocation check, the per-key rate
limit and the once-a-minute ``last_used_at`` decision. Keys are cached in the
process for at most ``key_cache_ttl_s``; a deleted key is refused on the next
request on every process because deletion first sets a revocation marker that
this round trip checks, and a Redis that restarted empty (new epoch) empties
every process's cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from api.ratelimit import GCRA_FUNCTION, interval_us
from shared import apikeys, db, metrics, redis_client, redis_keys
from shared.api_key_service import key_hasher
from shared.errors import RateLimited, Unauthorized
from shared.models import ApiKey
from shared.repos import api_keys as key_repo
from shared.settings import Settings

log = logging.getLogger("kaihooks.api.keys")

# KEYS: epoch, revoked marker, rate bucket, touch marker, the key's business's data version
# ARGV: epoch candidate, emission interval (µs), burst, touch interval (s)
# Returns {epoch, revoked, allowed, retry_after_us, touch, data_version}
_CHECK_SCRIPT = GCRA_FUNCTION + """
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {epoch, 1, 0, 0, 0, 0}
end
local wait = gcra(KEYS[3], tonumber(ARGV[2]), tonumber(ARGV[3]))
if wait > 0 then
  return {epoch, 0, 0, wait, 0, 0}
end
local touched = redis.call('SET', KEYS[4], '1', 'NX', 'EX', ARGV[4])
local version = redis.call('GET', KEYS[5]) or '0'
if touched then return {epoch, 0, 1, 0, 1, version} end
return {epoch, 0, 1, 0, 0, version}
"""


class _Coalescer:
    """Runs the checks of every request that reached this point in the same event-loop
    iteration as one Redis pipeline: one write and one read for many requests."""

    def __init__(self, redis: Redis, script: AsyncScript) -> None:
        self._redis = redis
        self._script = script
        self._pending: list[tuple[list[str], list[str | int], asyncio.Future[list[Any]]]] = []

    async def check(self, keys: list[str], args: list[str | int]) -> list[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        if not self._pending:
            loop.call_soon(lambda: loop.create_task(self._flush()))
        self._pending.append((keys, args, future))
        return await future

    async def _flush(self) -> None:
        batch, self._pending = self._pending, []
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for keys, args, _ in batch:
                    await self._script(keys=keys, args=args, client=pipe)
                results = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # every waiter gets the failure and decides
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, _, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)


@dataclass(frozen=True, slots=True)
class Verified:
    key: ApiKey
    # The business's data version as Redis knows it (None when Redis could not be asked): read
    # routes may serve a cached page rendered at this same version.
    data_version: str | None


class KeyVerifier:
    """Owned by one API process; ``verify`` is the whole per-request cost of key auth."""

    def __init__(self, settings: Settings, db: asyncpg.Pool, redis: Redis) -> None:
        self._settings = settings
        self._db = db
        self._redis = redis
        self._checks = _Coalescer(redis, redis.register_script(_CHECK_SCRIPT))
        self._cache: dict[bytes, tuple[float, ApiKey]] = {}
        self._epoch: bytes | None = None
        self._used: dict[uuid.UUID, datetime] = {}
        self._local_touch: dict[uuid.UUID, float] = {}
        self._interval_us = interval_us(settings.rate_limit_per_s)
        self._hasher = key_hasher(settings)

    async def verify(self, token: str) -> Verified:
        """The key, or Unauthorized / RateLimited."""
        try:
            return await self._verify(token)
        except Unauthorized:
            metrics.KEY_AUTH_FAILURES.inc()
            raise
        except RateLimited:
            metrics.RATE_LIMITED.inc()
            raise

    async def _verify(self, token: str) -> Verified:
        if not apikeys.is_well_formed(token):
            raise Unauthorized()
        key_hash = self._hasher.hash(token).value
        key, from_cache = await self._lookup(token, key_hash)
        if key is None or (key.expires_at is not None and key.expires_at <= datetime.now(UTC)):
            raise Unauthorized()
        try:
            epoch, revoked, allowed, retry_after_us, touch, version = await self._checks.check(
                [
                    redis_keys.KEY_EPOCH,
                    redis_keys.KEY_REVOKED.format(key_id=key.id),
                    redis_keys.KEY_RATE.format(key_id=key.id),
                    redis_keys.KEY_TOUCHED.format(key_id=key.id),
                    redis_keys.DATA_VERSION.format(business_id=key.business_id),
                ],
                [os.urandom(8).hex(), self._interval_us, self._settings.rate_limit_burst,
                 self._settings.key_touch_interval_s],
            )
        except redis_client.UNUSABLE as exc:
            # Without Redis (down, or answering errors: out of memory, read-only after a failover) we cannot
            # see revocations made elsewhere: trust only Postgres, and let the request through unthrottled
            # rather than fail every integration.
            redis_client.note_failure("key_check", exc)
            self._cache.clear()
            if from_cache:
                return await self._verify(token)
            self._touch_locally(key.id)
            return Verified(key, None)
        if epoch != self._epoch:
            known, self._epoch = self._epoch, epoch
            if known is not None:  # Redis lost its data: revocation markers may be gone too
                self._cache.clear()
                if from_cache:
                    return await self._verify(token)
        if revoked:
            self._cache.pop(key_hash, None)
            raise Unauthorized()
        if not allowed:
            raise RateLimited(retry_after_us / 1_000_000)
        if touch:
            self._used[key.id] = datetime.now(UTC)
        return Verified(key, f"{epoch.decode()}:{version.decode() if isinstance(version, bytes) else version}")

    async def _lookup(self, token: str, key_hash: bytes) -> tuple[ApiKey | None, bool]:
        """The key (cached under its current hash), and whether it came from the cache. A key stored the older
        way (hashed with the master key itself, or under an older master key) is re-hashed the current way."""
        now = time.monotonic()
        hit = self._cache.get(key_hash)
        if hit is not None and now - hit[0] < self._settings.key_cache_ttl_s:
            return hit[1], True
        candidates = self._hasher.candidates(token)
        found = await key_repo.by_hashes(self._db, candidates)
        key = found[0] if found is not None else None
        if found is not None and found[1] != key_hash:
            await self._rehash(found[0], found[1], candidates[0])
        if key is not None:
            if len(self._cache) > 50_000:
                self._cache.clear()
            self._cache[key_hash] = (now, key)
        return key, False

    async def _rehash(self, key: ApiKey, old: bytes, new: apikeys.StoredHash) -> None:
        """Best effort: the key verified either way, and is re-hashed at a later use if this fails."""
        try:
            if await key_repo.rehash(self._db, key.id, old, new):
                log.info("API key re-hashed under the current master key", extra={"key_id": key.public_id})
        except db.ERRORS:
            log.warning("could not re-hash an API key; will retry at its next use", exc_info=True,
                        extra={"key_id": key.public_id})

    def _touch_locally(self, key_id: uuid.UUID) -> None:
        now = time.monotonic()
        if now - self._local_touch.get(key_id, -1e9) >= self._settings.key_touch_interval_s:
            self._local_touch[key_id] = now
            self._used[key_id] = datetime.now(UTC)

    async def flush_last_used(self) -> None:
        """Write the batched ``last_used_at`` stamps in one statement."""
        if not self._used:
            return
        used, self._used = self._used, {}
        try:
            await key_repo.touch_many(self._db, used)
        except db.ERRORS:
            log.warning("could not record key last use; will retry", exc_info=True)
            for key_id, at in used.items():
                self._used.setdefault(key_id, at)

    async def run_flusher(self, every_s: float = 5.0) -> None:
        """Background task: flush stamps every few seconds until cancelled (then once more)."""
        try:
            while True:
                await asyncio.sleep(every_s)
                await self.flush_last_used()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.flush_last_used())
