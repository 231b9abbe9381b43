"""Server-side dashboard sessions, looked up by the SHA-256 of the cookie's token.

A session's public id (``ses_…``, shown by ``kaihooks sessions list``) is the first 16 bytes of that hash:
no column of its own, and no way back to the cookie.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from shared import ids
from shared.models import Session, User
from shared.repos import Executor


@dataclass(frozen=True, slots=True)
class SessionInfo:
    id: str
    created_at: datetime
    expires_at: datetime
    ip: str | None


def public_id(token_hash: bytes) -> str:
    return ids.encode("ses", uuid.UUID(bytes=token_hash[:16]))


def id_prefix(session_id: str) -> bytes | None:
    """The hash prefix a public id stands for, or None if it is not a session id."""
    value = ids.decode("ses", session_id)
    return value.bytes if value is not None else None


async def create(
    db: Executor, token_hash: bytes, user_id: uuid.UUID, csrf_token: str, ip: str | None, expires_at: datetime
) -> None:
    await db.execute(
        """INSERT INTO sessions (token_hash, user_id, csrf_token, ip, expires_at)
           VALUES ($1, $2, $3, $4, $5)""",
        token_hash, user_id, csrf_token, ip, expires_at,
    )


async def get_live(db: Executor, token_hash: bytes) -> Session | None:
    row = await db.fetchrow(
        """SELECT u.id, u.email, s.csrf_token, s.expires_at FROM sessions s
           JOIN users u ON u.id = s.user_id
           WHERE s.token_hash = $1 AND s.expires_at > now()""",
        token_hash,
    )
    if row is None:
        return None
    return Session(User(row["id"], row["email"]), row["csrf_token"], row["expires_at"])


async def delete(db: Executor, token_hash: bytes) -> None:
    await db.execute("DELETE FROM sessions WHERE token_hash = $1", token_hash)


async def delete_expired(db: Executor, batch: int = 1000) -> int:
    """Remove up to ``batch`` expired sessions; returns how many went."""
    result: str = await db.execute(
        """DELETE FROM sessions WHERE token_hash IN (
               SELECT token_hash FROM sessions WHERE expires_at <= now() LIMIT $1)""",
        batch,
    )
    return int(result.split()[-1])


async def keep_newest(db: Executor, user_id: uuid.UUID, count: int) -> int:
    """End the user's sessions beyond the newest ``count``; returns how many ended."""
    result: str = await db.execute(
        """DELETE FROM sessions WHERE token_hash IN (
               SELECT token_hash FROM sessions WHERE user_id = $1
               ORDER BY created_at DESC, token_hash DESC OFFSET $2)""",
        user_id, count,
    )
    return int(result.split()[-1])


async def live_for_user(db: Executor, user_id: uuid.UUID) -> list[SessionInfo]:
    rows = await db.fetch(
        """SELECT token_hash, created_at, expires_at, ip FROM sessions
           WHERE user_id = $1 AND expires_at > now() ORDER BY created_at DESC, token_hash DESC""",
        user_id,
    )
    return [SessionInfo(public_id(r["token_hash"]), r["created_at"], r["expires_at"], r["ip"]) for r in rows]


async def delete_for_user(db: Executor, user_id: uuid.UUID, prefix: bytes | None = None) -> int:
    """End one session of the user (by its id's hash prefix) or, without ``prefix``, all of them."""
    result: str = await db.execute(
        """DELETE FROM sessions WHERE user_id = $1
               AND ($2::bytea IS NULL OR substring(token_hash FROM 1 FOR 16) = $2)""",
        user_id, prefix,
    )
    return int(result.split()[-1])
