"""Businesses."""

from __future__ import annotations

import uuid

from shared import ids
from shared.models import Business
from shared.repos import Executor


async def create(db: Executor, name: str) -> Business:
    row = await db.fetchrow(
        "INSERT INTO businesses (id, name) VALUES ($1, $2) RETURNING id, name, created_at",
        ids.new_uuid(), name,
    )
    return Business(**row)


async def get(db: Executor, business_id: uuid.UUID) -> Business | None:
    row = await db.fetchrow("SELECT id, name, created_at FROM businesses WHERE id = $1", business_id)
    return Business(**row) if row else None


async def existing(db: Executor, business_ids: list[uuid.UUID]) -> list[uuid.UUID]:
    """Which of these businesses exist."""
    return [r["id"] for r in await db.fetch("SELECT id FROM businesses WHERE id = ANY($1::uuid[])", business_ids)]
