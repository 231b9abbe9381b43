"""Password hashing with argon2id (argon2-cffi's defaults, RFC 9106 low-memory profile)."""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
MIN_LENGTH = 8
MAX_LENGTH = 1024
# Verified against when the email is unknown, so both paths cost the same time. A stored hash (computing one
# at import cost every `kaihooks` command a full argon2 run); made again only if the hasher's parameters
# differ from the ones it was made with (a cheap parse), so the equaliser always costs what a real check does.
_DUMMY_HASH = "$argon2id$v=19$m=65536,t=3,p=4$z9kh3KdjDJMJJ7DfBKHWVA$dTucSHlHGUJuB8smIg/gRj/1EWXgJi6DqANtmkuG/fQ"
if _hasher.check_needs_rehash(_DUMMY_HASH):  # pragma: no cover - another argon2-cffi default profile
    _DUMMY_HASH = _hasher.hash("kaihooks-timing-equaliser")


def check_policy(password: str) -> str | None:
    """Why the password is refused, or None."""
    if len(password) < MIN_LENGTH:
        return f"must be at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"must be at most {MAX_LENGTH} characters"
    return None


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


async def hash_password_async(password: str) -> str:
    """Hashing costs tens of milliseconds of CPU: keep it off the event loop."""
    return await asyncio.to_thread(hash_password, password)


async def verify_password_async(stored_hash: str | None, password: str) -> bool:
    return await asyncio.to_thread(verify_password, stored_hash, password)
