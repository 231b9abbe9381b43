"""Dashboard sign-in: a counted attempt (``shared.login_throttle``), a bounded password check
(``shared.password_checks``), then a server-side session; a user keeps at most ``sessions_max_per_user``."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from redis.asyncio import Redis

from shared import metrics, redis_client
from shared.errors import RateLimited, ServiceUnavailable, Unauthorized
from shared.login_throttle import LoginThrottle
from shared.models import Membership, User
from shared.password_checks import PasswordChecks
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


class SignIns:
    """Owned by one API process: the throttle's scripts and the bound on password checks."""

    def __init__(self, settings: Settings, db: asyncpg.Pool, redis: Redis) -> None:
        self._settings = settings
        self._db = db
        self._throttle = LoginThrottle(redis, settings)
        self._checks = PasswordChecks(settings.password_checks_max_in_flight, settings.password_checks_max_waiting)

    async def sign_in(self, email: str, password: str, ip: str | None) -> SignedIn:
        """RateLimited past a budget (per email, per address), ServiceUnavailable when the attempt cannot be
        counted or checked now, Unauthorized on a wrong pair."""
        try:
            attempt = await self._throttle.reserve(email, ip)
        except RateLimited:
            metrics.SIGN_INS.labels(outcome="throttled").inc()
            raise
        except redis_client.UNUSABLE as exc:
            # No count, no limit on guesses: refuse rather than check unthrottled.
            redis_client.note_failure("sign_in", exc)
            metrics.SIGN_INS.labels(outcome="unavailable").inc()
            raise ServiceUnavailable("Sign-in is unavailable for a moment; retry shortly.",
                                     headers={"Retry-After": "1"}) from None
        checked = False
        try:
            found = await user_repo.credentials(self._db, email)
            ok = await self._checks.verify(found[1] if found else None, password)
            checked = True
        except ServiceUnavailable:
            metrics.SIGN_INS.labels(outcome="busy").inc()
            raise
        finally:
            if not checked:
                await attempt.not_checked()
        if found is None or not ok:
            metrics.SIGN_INS.labels(outcome="wrong").inc()
            raise Unauthorized("Wrong email or password.")
        await attempt.succeeded()
        metrics.SIGN_INS.labels(outcome="succeeded").inc()
        return await self._new_session(found[0], ip)

    async def _new_session(self, user: User, ip: str | None) -> SignedIn:
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        expires_at = datetime.now(UTC) + timedelta(seconds=self._settings.session_ttl_s)
        async with self._db.acquire() as conn, conn.transaction():
            await session_repo.create(conn, hashlib.sha256(token.encode()).digest(), user.id, csrf, ip, expires_at)
            await session_repo.keep_newest(conn, user.id, self._settings.sessions_max_per_user)
        return SignedIn(user, await user_repo.memberships(self._db, user.id), token, csrf, expires_at)
