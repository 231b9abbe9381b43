"""The sign-in throttle: attempts counted per email (hashed) and per client address (its /64 for IPv6).

An attempt is counted *before* its password is checked, in one Lua call that refuses it instead if
either budget is spent: however many guesses arrive at once, at most ``login_max_failures`` passwords
are checked per email, and ``login_max_failures_per_ip`` per address, in a window. Afterwards:

- a wrong password keeps its count (it is a failure);
- a right password clears the email's count (its owner has just proved who they are) and gives the
  attempt back to the address (an office behind one address signs in all day without spending it);
- an attempt that was not checked at all (password checks busy, Postgres unreachable) is given back to both.

A window starts at the first attempt counted and is not extended by later ones (``login_window_s``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from redis.asyncio import Redis

from shared import addresses, redis_client, redis_keys
from shared.errors import RateLimited
from shared.repos.users import normalise_email
from shared.settings import Settings

# KEYS: the email's counter[, the address's]. ARGV: their limits, the window (s).
# Returns 0 with one attempt counted on each, or the seconds until the spent budget is whole again.
_RESERVE = """
local window = tonumber(ARGV[3])
for i, key in ipairs(KEYS) do
  if tonumber(redis.call('GET', key) or '0') >= tonumber(ARGV[i]) then
    local ttl = redis.call('TTL', key)
    if ttl < 0 then
      redis.call('EXPIRE', key, window)
      ttl = window
    end
    return math.max(ttl, 1)
  end
end
for _, key in ipairs(KEYS) do
  if redis.call('INCR', key) == 1 then redis.call('EXPIRE', key, window) end
end
return 0
"""
# KEYS: counters to give the attempt back to. ARGV[1] == '1': clear the first one instead.
_RELEASE = """
for i, key in ipairs(KEYS) do
  if i == 1 and ARGV[1] == '1' then
    redis.call('DEL', key)
  elseif tonumber(redis.call('GET', key) or '0') > 0 then
    redis.call('DECR', key)
  end
end
return 0
"""


@dataclass(frozen=True, slots=True)
class Reservation:
    """One counted attempt; tell it how the check went."""

    throttle: LoginThrottle
    keys: list[str]

    async def succeeded(self) -> None:
        await self.throttle.release(self.keys, clear_email=True)

    async def not_checked(self) -> None:
        await self.throttle.release(self.keys, clear_email=False)


class LoginThrottle:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._settings = settings
        self._reserve = redis.register_script(_RESERVE)
        self._release = redis.register_script(_RELEASE)

    def _keys(self, email: str, ip: str | None) -> list[str]:
        digest = hashlib.sha256(normalise_email(email).encode()).hexdigest()
        keys = [redis_keys.LOGIN_FAILURES_EMAIL.format(digest=digest)]
        if ip:
            keys.append(redis_keys.LOGIN_FAILURES_IP.format(ip=addresses.bucket(ip)))
        return keys

    async def reserve(self, email: str, ip: str | None) -> Reservation:
        """Count one attempt, or RateLimited if a budget is spent. Redis failures propagate: without the
        count, guesses would be unlimited, so the caller refuses the sign-in."""
        keys = self._keys(email, ip)
        s = self._settings
        wait_s = int(await self._reserve(keys=keys, args=[s.login_max_failures, s.login_max_failures_per_ip,
                                                          s.login_window_s]))
        if wait_s:
            raise RateLimited(wait_s, "Too many failed sign-ins; try again later.")
        return Reservation(self, keys)

    async def release(self, keys: list[str], *, clear_email: bool) -> None:
        try:
            await self._release(keys=keys, args=["1" if clear_email else "0"])
        except redis_client.UNUSABLE as exc:  # the count stays until its window ends: safe, if strict
            redis_client.note_failure("sign_in", exc)
