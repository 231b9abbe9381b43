"""API-key verification: checksum, keyed-hash lookup (cached), revocation, rate limit, last use.

Every request is checked in Redis: the revocation marker, the per-key rate limit and the
once-a-minute ``last_used_at`` decision, in one script call that the requests waiting at the same
time share (one round trip for all of them). Keys are cached in the process for at most
``key_cache_ttl_s``; a deleted key is refused on the next request on every process because
deletion first sets a revocation marker that every check reads, and a Redis that restarted empty
(new epoch) empties every process's cache.
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
import redis.exceptions
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from api.ratelimit import GCRA_FUNCTION, interval_us
from shared import apikeys, db, ids, metrics, redis_client, redis_keys
from shared.api_key_service import key_hasher
from shared.errors import RateLimited, Unauthorized
from shared.models import ApiKey
from shared.repos import api_keys as key_repo
from shared.settings import Settings

log = logging.getLogger("kaihooks.api.keys")

# One call checks every request of a batch. KEYS: the epoch, then four per request (its key's revocation
# marker, rate bucket, touch marker, and its business's data version). ARGV: epoch candidate, emission
# interval (µs), burst, touch interval (s). Returns the epoch, then five values per request, in order:
# revoked, allowed, retry_after_us, touch, data_version.
_CHECK_SCRIPT = GCRA_FUNCTION + """
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
end
local interval, burst = tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {epoch}
for k = 2, #KEYS, 4 do
  local n = #out
  if redis.call('EXISTS', KEYS[k]) == 1 then
    out[n + 1], out[n + 2], out[n + 3], out[n + 4], out[n + 5] = 1, 0, 0, 0, 0
  else
    local wait = gcra(KEYS[k + 1], interval, burst)
    if wait > 0 then
      out[n + 1], out[n + 2], out[n + 3], out[n + 4], out[n + 5] = 0, 0, wait, 0, 0
    else
      local touched = redis.call('SET', KEYS[k + 2], '1', 'NX', 'EX', ARGV[4]) and 1 or 0
      out[n + 1], out[n + 2], out[n + 3], out[n + 4] = 0, 1, 0, touched
      out[n + 5] = redis.call('GET', KEYS[k + 3]) or '0'
    end
  end
end
return out
"""
_PER_CHECK = 5  # values per request in the script's answer


class _Coalescer:
    """Key checks in batches: one ``EVALSHA`` (one write, one read) for every request waiting, and at most one
    batch on its way to Redis per process. Requests that arrive while a batch is out wait for its answer
    and go together in the next one, so under load a round trip serves many requests, and when idle a
    request goes at the end of the event-loop iteration it arrived in."""

    def __init__(self, script: AsyncScript, args: list[int]) -> None:
        self._script = script
        self._args = args  # the ARGV after the epoch candidate: the same for every request of this process
        self._pending: list[tuple[tuple[str, ...], asyncio.Future[list[Any]]]] = []
        self._task: asyncio.Task[None] | None = None  # the running batches (held: the loop keeps weak refs)
        self._scheduled = False

    async def check(self, keys: tuple[str, ...]) -> list[Any]:
        """Epoch, revoked, allowed, retry_after_us, touch, data_version for one request's four keys."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._pending.append((keys, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._start, loop)
        return await future

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._task = loop.create_task(self._run())

    async def _run(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                await self._flush(batch)
        finally:
            for _, future in self._pending:  # only when cancelled between batches
                future.cancel()
            self._pending = []
            self._scheduled = False
            self._task = None

    async def _flush(self, batch: list[tuple[tuple[str, ...], asyncio.Future[list[Any]]]]) -> None:
        keys = [redis_keys.KEY_EPOCH]
        for request_keys, _ in batch:
            keys += request_keys
        args: list[str | int] = [os.urandom(8).hex(), *self._args]
        try:
            try:
                result = await self._script(keys=keys, args=args)
            except redis.exceptions.ConnectionError:
                # The kept connection was closed under us (Redis restarted, an idle timeout): sent once more,
                # on a new one. (At worst a batch that Redis ran but could not answer counts twice against
                # its keys' rate limits.) Still failing, Redis is down: the waiters decide.
                result = await self._script(keys=keys, args=args)
        except Exception as exc:  # every waiter gets the failure and decides
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:  # cancelled (the process is stopping): no waiter may wait forever
            for _, future in batch:
                future.cancel()
            raise
        epoch = result[0]
        for i, (_, future) in enumerate(batch):
            if not future.done():  # a waiter cancelled meanwhile
                at = 1 + i * _PER_CHECK
                future.set_result([epoch, *result[at:at + _PER_CHECK]])


@dataclass(frozen=True, slots=True)
class Verified:
    key: ApiKey
    # The business's data version as Redis knows it (None when Redis could not be asked): read
    # routes may serve a cached page rendered at this same version.
    data_version: str | None
    business: str  # the public id of the key's business (biz_…)


@dataclass(frozen=True, slots=True)
class _Cached:
    """A key as the process caches it, with what each request would otherwise work out again."""

    at: float  # time.monotonic() when it was read from Postgres
    key: ApiKey
    redis_keys: tuple[str, ...]  # its revocation marker, rate bucket, touch marker, business's data version
    business: str


class KeyVerifier:
    """Owned by one API process; ``verify`` is the whole per-request cost of key auth."""

    def __init__(self, settings: Settings, db: asyncpg.Pool, redis: Redis) -> None:
        self._settings = settings
        self._db = db
        # One connection of the pool kept for the checks (one batch at a time needs no more): no pool
        # round (lock, liveness probe) per batch. It reconnects by itself after an error.
        self._check_client = redis.client()
        self._checks = _Coalescer(self._check_client.register_script(_CHECK_SCRIPT), [
            interval_us(settings.rate_limit_per_s), settings.rate_limit_burst, settings.key_touch_interval_s])
        self._cache: dict[bytes, _Cached] = {}  # by the key's keyed hash
        self._epoch: bytes | None = None
        self._used: dict[uuid.UUID, datetime] = {}
        self._local_touch: dict[uuid.UUID, float] = {}
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
        key_hash = self._hasher.hash(token).value
        cached = self._cache.get(key_hash)
        from_cache = cached is not None and time.monotonic() - cached.at < self._settings.key_cache_ttl_s
        if not from_cache:
            # Only a well-formed key is looked up (a cached one was: its keyed hash is in the cache).
            if not apikeys.is_well_formed(token):
                raise Unauthorized()
            cached = await self._lookup(token, key_hash)
        if cached is None:
            raise Unauthorized()
        key = cached.key
        if key.expires_at is not None and key.expires_at <= datetime.now(UTC):
            raise Unauthorized()
        try:
            epoch, revoked, allowed, retry_after_us, touch, version = await self._checks.check(cached.redis_keys)
        except redis_client.UNUSABLE as exc:
            # Without Redis (down, or answering errors: out of memory, read-only after a failover) we cannot
            # see revocations made elsewhere: trust only Postgres, and let the request through unthrottled
            # rather than fail every integration.
            redis_client.note_failure("key_check", exc)
            self._cache.clear()
            if from_cache:
                return await self._verify(token)
            self._touch_locally(key.id)
            return Verified(key, None, cached.business)
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
        return Verified(key, f"{epoch.decode()}:{version.decode() if isinstance(version, bytes) else version}",
                        cached.business)

    async def _lookup(self, token: str, key_hash: bytes) -> _Cached | None:
        """The key from Postgres, now cached under its current hash. A key stored the older way (hashed with
        the master key itself, or under an older master key) is re-hashed the current way."""
        read_at = time.monotonic()
        candidates = self._hasher.candidates(token)
        found = await key_repo.by_hashes(self._db, candidates)
        if found is None:
            return None
        key = found[0]
        if found[1] != key_hash:
            await self._rehash(key, found[1], candidates[0])
        names = (redis_keys.KEY_REVOKED.format(key_id=key.id), redis_keys.KEY_RATE.format(key_id=key.id),
                 redis_keys.KEY_TOUCHED.format(key_id=key.id),
                 redis_keys.DATA_VERSION.format(business_id=key.business_id))
        if len(self._cache) > 50_000:
            self._cache.clear()
        cached = self._cache[key_hash] = _Cached(read_at, key, names, ids.encode("biz", key.business_id))
        return cached

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

    async def aclose(self) -> None:
        """Give the checks' connection back to the pool."""
        await self._check_client.aclose(close_connection_pool=False)

    async def run_flusher(self, every_s: float = 5.0) -> None:
        """Background task: flush stamps every few seconds until cancelled (then once more)."""
        try:
            while True:
                await asyncio.sleep(every_s)
                await self.flush_last_used()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.flush_last_used())
