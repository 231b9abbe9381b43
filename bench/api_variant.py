"""The API (``python -m api``) with its wake-up of the workers taken out: a bench-only variant, never
deployed, that puts a number on what the wake-up costs the publishing path (P9).

    python bench/api_variant.py --no-wake

Everything else is the shipped code, unchanged: the accepting statement still inserts the events, their
deliveries and the projections in one transaction; only the ``pg_notify`` it sends when it made deliveries
is replaced by a constant, so Postgres neither queues a notification nor takes the notify lock at commit.
"""

from __future__ import annotations

import argparse


def _no_wake() -> None:
    from shared.repos import handoff, ingest

    notify = f"pg_notify('{handoff.DUE_CHANNEL}', '')"
    if notify not in ingest._SQL:
        raise SystemExit(f"api_variant: the accepting statement no longer sends {notify}: update bench/api_variant.py")
    ingest._SQL = ingest._SQL.replace(notify, "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-wake", action="store_true", required=True, help="take the wake-up out")
    parser.parse_args()
    _no_wake()
    from api.__main__ import main as serve

    serve()


if __name__ == "__main__":
    main()
