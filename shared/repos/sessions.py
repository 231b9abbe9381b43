"""Server-side dashboard sessions, looked up by the SHA-256 of the cookie's token."""

from __future__ import annotations

import uuid
from datetime import datetime

from shared.models import Session, User
from shared.repos import Executor


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
