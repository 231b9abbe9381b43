"""Dashboard sign-in: throttled password check, then a server-side session."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from redis.asyncio import Redis

from shared import passwords, redis_keys
from shared.errors import RateLimited, Unauthorized
from shared.models import Membership, User
from shared.repos import sessions as session_repo
from shared.repos import users as user_repo
from shared.settings import Settings


@dataclass(frozen=True, slots=True)
class SignedIn:
    user: User
    memberships: list[Membership]
    session_token: str
    csrf_token: str
    expires_at: datetime


def _throttle_keys(email: str, ip: str | None) -> list[str]:
    digest = hashlib.sha256(user_repo.normalise_email(email).encode()).hexdigest()
    keys = [redis_keys.LOGIN_FAILURES_EMAIL.format(digest=digest)]
    if ip:
        keys.append(redis_keys.LOGIN_FAILURES_IP.format(ip=ip))
    return keys


async def _check_throttle(redis: Redis, settings: Settings, keys: list[str]) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.get(key)
            pipe.ttl(key)
        results = await pipe.execute()
    limits = [settings.login_max_failures, settings.login_max_failures_per_ip]
    for count, ttl, limit in zip(results[::2], results[1::2], limits, strict=False):
        if count is not None and int(count) >= limit:
            raise RateLimited(max(int(ttl), 1), "Too many failed sign-ins; try again later.")


async def _record_failure(redis: Redis, settings: Settings, keys: list[str]) -> None:
    async with redis.pipeline(transaction=True) as pipe:
        for key in keys:
            pipe.incr(key)
            pipe.expire(key, settings.login_window_s, nx=True)
        await pipe.execute()


async def sign_in(
    db: asyncpg.Pool, redis: Redis, settings: Settings, email: str, password: str, ip: str | None
) -> SignedIn:
    """Raise RateLimited after too many failures (per email and per IP), Unauthorized on a bad pair."""
    keys = _throttle_keys(email, ip)
    await _check_throttle(redis, settings, keys)
    found = await user_repo.credentials(db, email)
    ok = await passwords.verify_password_async(found[1] if found else None, password)
    if found is None or not ok:
        await _record_failure(redis, settings, keys)
        raise Unauthorized("Wrong email or password.", scheme="Cookie")
    user = found[0]
    await redis.delete(keys[0])
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    expires_at = datetime.now(UTC) + timedelta(seconds=settings.session_ttl_s)
    await session_repo.create(db, hashlib.sha256(token.encode()).digest(), user.id, csrf, ip, expires_at)
    return SignedIn(user, await user_repo.memberships(db, user.id), token, csrf, expires_at)
