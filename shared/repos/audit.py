"""The audit log: append-only rows of who did what to which business, and from where."""

from __future__ import annotations

import uuid
from typing import Any

from shared.repos import Executor


async def record(
    db: Executor,
    *,
    action: str,
    business_id: uuid.UUID | None,
    actor_user_id: uuid.UUID | None = None,
    actor_key_id: uuid.UUID | None = None,
    target_id: str | None = None,
    ip: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    await db.execute(
        """INSERT INTO audit_log (business_id, actor_user_id, actor_key_id, action, target_id, ip, details)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        business_id, actor_user_id, actor_key_id, action, target_id, ip, details or {},
    )

