"""Endpoint health: how its last hour of attempts went, and how far behind it is."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from shared.repos import Executor

WINDOW = "1 hour"


@dataclass(frozen=True, slots=True)
class Health:
    attempts_last_hour: int
    success_rate: float | None  # None: no attempts in the window
    p95_ms: int | None
    backlog: int  # pending deliveries
    lag_s: float | None  # age of the oldest pending delivery
    last_failure: str | None
    last_failure_at: datetime | None


async def of_endpoints(db: Executor, endpoint_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Health]:
    ids = list(endpoint_ids)
    if not ids:
        return {}
    recent = {r["endpoint_id"]: r for r in await db.fetch(
        f"""SELECT endpoint_id, count(*) AS attempts,
                   count(*) FILTER (WHERE response_status BETWEEN 200 AND 299) AS ok,
                   percentile_disc(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95_ms
            FROM attempts WHERE endpoint_id = ANY($1::uuid[]) AND started_at > now() - interval '{WINDOW}'
            GROUP BY endpoint_id""", ids)}
    backlog = {r["endpoint_id"]: r for r in await db.fetch(
        """SELECT endpoint_id, count(*) AS pending, extract(epoch FROM now() - min(created_at)) AS lag_s
           FROM deliveries WHERE endpoint_id = ANY($1::uuid[]) AND status = 'pending' GROUP BY endpoint_id""", ids)}
    failures = {r["endpoint_id"]: r for r in await db.fetch(
        """SELECT DISTINCT ON (endpoint_id) endpoint_id, error, started_at FROM attempts
           WHERE endpoint_id = ANY($1::uuid[]) AND error IS NOT NULL
           ORDER BY endpoint_id, started_at DESC""", ids)}
    out = {}
    for endpoint_id in ids:
        r, b, f = recent.get(endpoint_id), backlog.get(endpoint_id), failures.get(endpoint_id)
        out[endpoint_id] = Health(
            attempts_last_hour=r["attempts"] if r else 0,
            success_rate=round(r["ok"] / r["attempts"], 4) if r and r["attempts"] else None,
            p95_ms=r["p95_ms"] if r else None,
            backlog=b["pending"] if b else 0,
            lag_s=round(float(b["lag_s"]), 1) if b else None,
            last_failure=f["error"] if f else None,
            last_failure_at=f["started_at"] if f else None,
        )
    return out


async def most_behind(db: Executor, limit: int = 50) -> list[tuple[uuid.UUID, int, float]]:
    """The endpoints with the most pending deliveries: (id, backlog, lag in seconds)."""
    rows = await db.fetch(
        """SELECT endpoint_id, count(*) AS pending, extract(epoch FROM now() - min(created_at)) AS lag_s
           FROM deliveries WHERE status = 'pending' GROUP BY endpoint_id ORDER BY pending DESC LIMIT $1""",
        limit)
    return [(r["endpoint_id"], r["pending"], float(r["lag_s"])) for r in rows]


BUSIEST_WINDOW = "5 minutes"  # what the worker's metrics look back over: bounded work at any rate


async def busiest(db: Executor, limit: int = 50) -> list[tuple[uuid.UUID, float, int]]:
    """The endpoints with the most attempts in the last five minutes: (id, success rate, p95 ms)."""
    rows = await db.fetch(
        f"""SELECT endpoint_id, count(*) FILTER (WHERE response_status BETWEEN 200 AND 299)::float / count(*) AS ok,
                   percentile_disc(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95_ms
            FROM attempts WHERE started_at > now() - interval '{BUSIEST_WINDOW}'
            GROUP BY endpoint_id ORDER BY count(*) DESC LIMIT $1""",
        limit)
    return [(r["endpoint_id"], r["ok"], r["p95_ms"]) for r in rows]
