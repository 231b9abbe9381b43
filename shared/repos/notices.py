"""Operational notices: what a business should know about its endpoints (disabled, deliveries that
ran out of retries after the endpoint had been working). Shown on the endpoint object; each kind
is named like the operational webhook that could carry it to a business-chosen URL later."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from shared.repos import Executor

Kind = Literal["endpoint.disabled", "delivery.exhausted"]  # matches the CHECK on notices.kind
EXHAUSTED_EVERY = "1 hour"  # at most one delivery.exhausted notice per endpoint in this time


@dataclass(frozen=True, slots=True)
class Notice:
    kind: str
    message: str
    created_at: datetime


async def record(db: Executor, business_id: uuid.UUID, endpoint_id: uuid.UUID, kind: Kind, message: str,
                 details: dict[str, Any] | None = None) -> None:
    await db.execute(
        "INSERT INTO notices (business_id, endpoint_id, kind, message, details) VALUES ($1, $2, $3, $4, $5)",
        business_id, endpoint_id, kind, message, details or {},
    )


async def record_exhausted(db: Executor, endpoint_ids: Sequence[uuid.UUID]) -> None:
    """A delivery to each of these endpoints ran out of retries: tell the business, if the endpoint had
    worked before (a success in its history) and no such notice was made in the last hour."""
    await db.execute(
        f"""INSERT INTO notices (business_id, endpoint_id, kind, message)
            SELECT ep.business_id, ep.id, 'delivery.exhausted',
                   'A delivery failed every retry; the endpoint had been receiving webhooks before. '
                   || 'Check it, then retry or recover the failed deliveries.'
            FROM endpoints ep WHERE ep.id = ANY($1::uuid[])
              AND EXISTS (SELECT 1 FROM deliveries d WHERE d.endpoint_id = ep.id AND d.status = 'succeeded')
              AND NOT EXISTS (SELECT 1 FROM notices n WHERE n.endpoint_id = ep.id AND n.kind = 'delivery.exhausted'
                              AND n.created_at > now() - interval '{EXHAUSTED_EVERY}')""",
        list(endpoint_ids),
    )


async def recent(db: Executor, endpoint_ids: Sequence[uuid.UUID], per_endpoint: int = 5
                 ) -> dict[uuid.UUID, list[Notice]]:
    rows = await db.fetch(
        """SELECT endpoint_id, kind, message, created_at FROM (
               SELECT *, row_number() OVER (PARTITION BY endpoint_id ORDER BY created_at DESC, id DESC) AS n
               FROM notices WHERE endpoint_id = ANY($1::uuid[])) x
           WHERE n <= $2 ORDER BY created_at DESC""",
        list(endpoint_ids), per_endpoint,
    )
    out: dict[uuid.UUID, list[Notice]] = {}
    for r in rows:
        out.setdefault(r["endpoint_id"], []).append(Notice(r["kind"], r["message"], r["created_at"]))
    return out
