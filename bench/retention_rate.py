"""How fast retention deletes history, at a chosen scale (a probe for P11; not part of ``make bench``).

    .venv/bin/python bench/retention_rate.py --rows 1000000

Makes a fresh database (``setup_env.prepare``: local or embedded Postgres), fills it with ``--rows`` events
(about 1 KiB of call data each, over 200 businesses with one endpoint each), one succeeded delivery and one
attempt per event, all older than ``KAIHOOKS_RETENTION_DAYS`` (the shape P1 leaves behind), then runs the
retention cron's own statements (``shared.repos.retention``: attempts, then deliveries, then events, in
batches of ``dispatcher.jobs.RETENTION_BATCH``) until everything old is gone, with no time budget, and says
how many rows per second each step deleted. An hour of P1 at 2 x its rate on this box is about 17-25 million
of each; compare what one hourly run (``RETENTION_BUDGET_S``, 20 s) deletes with what an hour adds.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import setup_env

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dispatcher.jobs import RETENTION_BATCH, RETENTION_BUDGET_S
from shared.repos import retention

BUSINESSES = 200
FILL_CHUNK = 50_000


async def fill(url: str, rows: int, age_days: int) -> float:
    """Events, succeeded deliveries and attempts, ``age_days`` old; returns the seconds it took."""
    started = time.monotonic()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("""
            INSERT INTO businesses (id, name) SELECT kaihooks_uuid7(), 'Retention ' || n FROM generate_series(1, $1) n
            """, BUSINESSES)
        await conn.execute("""
            INSERT INTO endpoints (id, business_id, url)
            SELECT kaihooks_uuid7(), id, 'https://hooks.example.com/' || id FROM businesses
            """)
        data = orjson.dumps({"id": "call_x", "summary": "x" * 900, "direction": "inbound"}).decode()
        at = datetime.now(UTC) - timedelta(days=age_days)
        for first in range(0, rows, FILL_CHUNK):
            n = min(FILL_CHUNK, rows - first)
            await conn.execute("""
                WITH b AS (SELECT b.id AS business_id, e.id AS endpoint_id, row_number() OVER () - 1 AS k
                           FROM businesses b JOIN endpoints e ON e.business_id = b.id),
                ev AS (
                    INSERT INTO events (id, business_id, type, data, occurred_at, created_at, fanned_out_at)
                    SELECT kaihooks_uuid7(), b.business_id, 'call.completed', $2::jsonb, $3, $3, $3
                    FROM generate_series(0, $1 - 1) g JOIN b ON b.k = g % $4
                    RETURNING id, business_id),
                dl AS (
                    INSERT INTO deliveries (event_id, endpoint_id, business_id, event_type, status, attempt_count,
                                            created_at, updated_at, last_response_status)
                    SELECT ev.id, e.id, ev.business_id, 'call.completed', 'succeeded', 1, $3, $3, 200
                    FROM ev JOIN endpoints e ON e.business_id = ev.business_id
                    RETURNING id, endpoint_id)
                INSERT INTO attempts (delivery_id, endpoint_id, number, started_at, duration_ms, response_status,
                                      trigger, url)
                SELECT dl.id, dl.endpoint_id, 1, $3, 3, 200, 'scheduled', 'https://hooks.example.com/x' FROM dl
                """, n, data, at, BUSINESSES)
        await conn.execute("VACUUM ANALYZE events")
        await conn.execute("VACUUM ANALYZE deliveries")
        await conn.execute("VACUUM ANALYZE attempts")
    finally:
        await conn.close()
    return time.monotonic() - started


async def drain(url: str, cutoff: datetime) -> dict[str, Any]:
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    steps: dict[str, Any] = {}
    try:
        async def events(db: Any, cutoff: datetime, batch: int) -> int:
            return (await retention.delete_events(db, cutoff, batch)).count

        for kind, step in (("attempts", retention.delete_attempts), ("deliveries", retention.delete_deliveries),
                           ("events", events)):
            started, deleted, batches, in_budget = time.monotonic(), 0, 0, None
            while (n := await step(pool, cutoff, RETENTION_BATCH)) > 0:
                deleted += n
                batches += 1
                if in_budget is None and time.monotonic() - started >= RETENTION_BUDGET_S:
                    in_budget = deleted
            took = time.monotonic() - started
            steps[kind] = {"deleted": deleted, "batches": batches, "seconds": round(took, 1),
                           "rows_per_s": round(deleted / took) if took else None,
                           "deleted_in_first_budget": in_budget if in_budget is not None else deleted}
    finally:
        await pool.close()
    return steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000, help="events (and deliveries, attempts) to make")
    args = parser.parse_args()
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        ctx = setup_env.prepare(stack, Path(tmp))
        url = ctx.env["DATABASE_URL"]
        filled_s = asyncio.run(fill(url, args.rows, 40))
        steps = asyncio.run(drain(url, datetime.now(UTC) - timedelta(days=30)))
    print(orjson.dumps({"rows": args.rows, "fill_s": round(filled_s, 1), "batch": RETENTION_BATCH,
                        "budget_s": RETENTION_BUDGET_S, "steps": steps}, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
