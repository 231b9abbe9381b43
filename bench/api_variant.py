"""The API (``python -m api``) with its wake-up of the workers changed: bench-only variants, never deployed,
that put a number on what a wake-up costs the publishing path (P9).

    python bench/api_variant.py --wake none      # no wake-up at all
    python bench/api_variant.py --wake notify    # the former wake-up: NOTIFY in the accepting transaction

Everything else is the shipped code, unchanged: the accepting statement inserts the events, their
deliveries and the projections in one transaction, and the data versions are bumped in Redis after it.
``none`` leaves out the ``PUBLISH`` on the wake channel (sent in the same Redis pipeline as the bumps);
``notify`` leaves it out too and puts back what the accepting statement did before the wake-up moved to
Redis: ``pg_notify`` on the due channel when it made deliveries, which Postgres sends at commit
(``notifying_statement``).
"""

from __future__ import annotations

import argparse
import uuid

from redis.asyncio import Redis

# The end of the accepting statement as shipped, and as it was with the wake-up in it.
SHIPPED_END = "SELECT id, (SELECT count(*) FROM fanned) AS deliveries FROM ins"
NOTIFYING_END = ("SELECT id, (SELECT count(*) FROM fanned) AS deliveries, "
                 "(SELECT count(*) FROM (SELECT pg_notify('{channel}', '') FROM fanned LIMIT 1) n) AS woke FROM ins")


def notifying_statement() -> str:
    """The shipped accepting statement with the former ``pg_notify`` put back."""
    from shared.repos import handoff, ingest

    if SHIPPED_END not in ingest._SQL:
        raise SystemExit("api_variant: the accepting statement changed; update bench/api_variant.py")
    return ingest._SQL.replace(SHIPPED_END, NOTIFYING_END.format(channel=handoff.DUE_CHANNEL))


def _no_redis_wake() -> None:
    from shared import publishing

    after_commit = publishing._after_commit

    async def without_wake(redis: Redis, business_ids: set[uuid.UUID], wake_channel: str | None) -> None:
        await after_commit(redis, business_ids, None)

    publishing._after_commit = without_wake


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wake", choices=("none", "notify"), required=True, help="the wake-up to use instead")
    args = parser.parse_args()
    _no_redis_wake()
    if args.wake == "notify":
        from shared.repos import ingest

        ingest._SQL = notifying_statement()
    from api.__main__ import main as serve

    serve()


if __name__ == "__main__":
    main()
