"""`kaihooks migrate` and `kaihooks business create`: setting a deployment up."""

from __future__ import annotations

import argparse

from shared.cli.base import CliError, Context, UsageError
from shared.cli.terminal import print_json
from shared.migrations import migrate as apply_migrations
from shared.repos import businesses

NAME_LENGTH = (1, 200)  # as BusinessIn over HTTP (POST /internal/businesses)


async def migrate(ctx: Context, args: argparse.Namespace) -> None:
    db = await ctx.db()
    async with db.acquire() as conn:
        try:
            applied = await apply_migrations(conn)
        except RuntimeError as exc:  # no migrations shipped: say so, never "applied 0"
            raise CliError(str(exc)) from None
    if args.json:
        print_json({"applied": applied})
        return
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))


async def business_create(ctx: Context, args: argparse.Namespace) -> None:
    name = args.name.strip()
    low, high = NAME_LENGTH
    if not low <= len(name) <= high:
        raise UsageError(f"business name must be {low} to {high} characters")
    business = await businesses.create(await ctx.db(), name)
    if args.json:
        print_json({"id": business.public_id, "name": business.name})
        return
    print(business.public_id)
