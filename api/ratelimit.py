"""Per-credential request rate limits in Redis (GCRA), for API keys (inside ``api.keyauth``'s one round
trip) and for dashboard sessions (here).

GCRA keeps one number per credential, the "theoretical arrival time" in microseconds of Redis's clock:
each allowed request pushes it one emission interval (1/rate) later; a request that would push it more
than ``burst`` intervals ahead of now is refused, told how long until it would fit. The key expires as
soon as the credential has its whole burst back.
"""

from __future__ import annotations

from redis.asyncio import Redis

from shared import redis_client, redis_keys
from shared.errors import RateLimited
from shared.repos import sessions as session_repo

# A Lua function for scripts to include: 0 if a request is allowed now (and counted), else the
# microseconds until it would be.
GCRA_FUNCTION = """
local function gcra(key, interval, burst)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - burst * interval
  if now < allow_at then return allow_at - now end
  redis.call('SET', key, string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
  return 0
end
"""
_SESSION_SCRIPT = GCRA_FUNCTION + "return gcra(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))\n"


def interval_us(per_s: float) -> int:
    return int(1_000_000 / per_s)


class SessionRateLimit:
    """Owned by one API process. Without Redis (down, or answering errors) the limit is not applied, as
    for API keys: a dashboard that keeps working beats one that fails closed on a cache outage."""

    def __init__(self, redis: Redis, per_s: float, burst: int) -> None:
        self._script = redis.register_script(_SESSION_SCRIPT)
        self._interval_us = interval_us(per_s)
        self._burst = burst

    async def take(self, token_hash: bytes) -> None:
        """Count one request of the session, or RateLimited with the seconds until it would be allowed."""
        key = redis_keys.SESSION_RATE.format(session_id=session_repo.public_id(token_hash))
        try:
            wait_us = int(await self._script(keys=[key], args=[self._interval_us, self._burst]))
        except redis_client.UNUSABLE as exc:
            redis_client.note_failure("session_rate", exc)
            return
        if wait_us > 0:
            raise RateLimited(wait_us / 1_000_000)
