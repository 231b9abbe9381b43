"""Users and their memberships."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from shared import ids
from shared.models import Business, Membership, Role, User
from shared.repos import Executor


def normalise_email(email: str) -> str:
    return email.strip().lower()


async def upsert_with_memberships(
    db: Executor, email: str, password_hash: str, business_ids: Sequence[uuid.UUID], role: Role
) -> User:
    """Create the user (or set the password of the existing one) and add/update each membership."""
    row = await db.fetchrow(
        """INSERT INTO users (id, email, password_hash) VALUES ($1, $2, $3)
           ON CONFLICT (lower(email)) DO UPDATE
               SET password_hash = EXCLUDED.password_hash, updated_at = now()
           RETURNING id, email""",
        ids.new_uuid(), normalise_email(email), password_hash,
    )
    await db.executemany(
        """INSERT INTO memberships (user_id, business_id, role) VALUES ($1, $2, $3)
           ON CONFLICT (user_id, business_id) DO UPDATE SET role = EXCLUDED.role""",
        [(row["id"], b, role) for b in business_ids],
    )
    return User(id=row["id"], email=row["email"])


async def set_password_hash(db: Executor, user_id: uuid.UUID, password_hash: str) -> None:
    await db.execute("UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1", user_id, password_hash)


async def credentials(db: Executor, email: str) -> tuple[User, str] | None:
    """The user and stored password hash for a sign-in attempt."""
    row = await db.fetchrow(
        "SELECT id, email, password_hash FROM users WHERE lower(email) = $1", normalise_email(email)
    )
    if row is None:
        return None
    return User(id=row["id"], email=row["email"]), row["password_hash"]


async def memberships(db: Executor, user_id: uuid.UUID) -> list[Membership]:
    rows = await db.fetch(
        """SELECT b.id, b.name, b.created_at, m.role FROM memberships m
           JOIN businesses b ON b.id = m.business_id
           WHERE m.user_id = $1 ORDER BY b.name, b.id""",
        user_id,
    )
    return [
        Membership(Business(id=r["id"], name=r["name"], created_at=r["created_at"]), r["role"]) for r in rows
    ]


async def role_in(db: Executor, user_id: uuid.UUID, business_id: uuid.UUID) -> Role | None:
    role: Role | None = await db.fetchval(
        "SELECT role FROM memberships WHERE user_id = $1 AND business_id = $2", user_id, business_id
    )
    return role
