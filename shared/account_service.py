"""Passwords and sessions of dashboard users, each change with its audit row.

A password change ends every session of the user in the same transaction: whoever signed in with the
old password (a thief included) is signed out at once, on every API process (sessions live in Postgres).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from shared import passwords
from shared.errors import NotFound
from shared.models import Role, User
from shared.repos import Executor, audit
from shared.repos import sessions as session_repo
from shared.repos import users as user_repo
from shared.repos.sessions import SessionInfo


async def _user(db: Executor, email: str) -> tuple[User, str]:
    found = await user_repo.credentials(db, email)
    if found is None:
        raise NotFound(f"no such user: {email}")
    return found


async def set_password(conn: asyncpg.Connection, email: str, password: str, actor: str) -> int:
    """Set the user's password and end all their sessions; returns how many ended."""
    user, _ = await _user(conn, email)
    password_hash = await passwords.hash_password_async(password)
    async with conn.transaction():
        await user_repo.set_password_hash(conn, user.id, password_hash)
        ended = await session_repo.delete_for_user(conn, user.id)
        await audit.record(conn, action="user.password_changed", business_id=None, actor_user_id=None,
                           target_id=user.public_id, details={"actor": actor, "sessions_ended": ended})
    return ended


async def create_or_update_user(conn: asyncpg.Connection, email: str, password: str,
                                business_ids: Sequence[uuid.UUID], role: Role, actor: str) -> tuple[User, int]:
    """Create the user, or give the existing one these memberships and this password. A password that
    differs from the stored one is a change: the user's sessions end. Returns the user and how many ended."""
    existing = await user_repo.credentials(conn, email)
    unchanged = existing is not None and await passwords.verify_password_async(existing[1], password)
    password_hash = existing[1] if existing is not None and unchanged else await passwords.hash_password_async(password)
    async with conn.transaction():
        user = await user_repo.upsert_with_memberships(conn, email, password_hash, business_ids, role)
        ended = 0
        if existing is not None and not unchanged:
            ended = await session_repo.delete_for_user(conn, user.id)
            await audit.record(conn, action="user.password_changed", business_id=None, target_id=user.public_id,
                               details={"actor": actor, "sessions_ended": ended})
    return user, ended


async def sessions(db: asyncpg.Pool, email: str) -> tuple[User, list[SessionInfo]]:
    """The user's live sessions, newest first."""
    user, _ = await _user(db, email)
    return user, await session_repo.live_for_user(db, user.id)


async def revoke_sessions(db: asyncpg.Pool, email: str, session_id: str | None, actor: str) -> int:
    """End one session of the user (``ses_…``) or, with ``session_id`` None, all of them."""
    user, _ = await _user(db, email)
    prefix = session_repo.id_prefix(session_id) if session_id is not None else None
    async with db.acquire() as conn, conn.transaction():
        ended = await session_repo.delete_for_user(conn, user.id, prefix)
        if session_id is not None and ended == 0:
            raise NotFound(f"no such session of {email}: {session_id}")
        await audit.record(conn, action="sessions.revoked", business_id=None, target_id=user.public_id,
                           details={"actor": actor, "session": session_id or "all", "sessions_ended": ended})
    return ended
