"""The ``kaihooks`` command: set-up and on-call operations, straight on Postgres and Redis."""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import NoReturn

from shared import account_cli, account_service, db, ids, oncall_cli, secrets_cli
from shared.db import connect
from shared.errors import KaihooksError
from shared.migrations import migrate
from shared.repos import businesses
from shared.settings import Settings, load_settings
from shared.terminal import safe


class CliError(Exception):
    """A message for stderr and exit status 2."""


Command = Callable[[argparse.Namespace], Awaitable[None]]


def _settings() -> Settings:
    return load_settings()


async def cmd_migrate(args: argparse.Namespace) -> None:
    conn = await connect(_settings())
    try:
        applied = await migrate(conn)
    except RuntimeError as exc:  # no migrations shipped: say so, never "applied 0"
        raise CliError(str(exc)) from None
    finally:
        await conn.close()
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))


async def cmd_secret_key(args: argparse.Namespace) -> None:
    print(base64.b64encode(os.urandom(32)).decode())


async def cmd_business_create(args: argparse.Namespace) -> None:
    name = args.name.strip()
    if not 1 <= len(name) <= 200:
        raise CliError("business name must be 1 to 200 characters")
    conn = await connect(_settings())
    try:
        business = await businesses.create(conn, name)
    finally:
        await conn.close()
    print(business.public_id)


async def cmd_user_create(args: argparse.Namespace) -> None:
    email = args.email.strip()
    if "@" not in email or len(email) > 320 or email.startswith("@") or email.endswith("@"):
        raise CliError(f"not an email address: {email!r}")
    password = account_cli.read_password(args)
    business_ids = []
    for text in args.business:
        value = ids.decode("biz", text)
        if value is None:
            raise CliError(f"not a business id: {text!r}")
        business_ids.append(value)
    conn = await connect(_settings())
    try:
        for text, value in zip(args.business, business_ids, strict=True):
            if await businesses.get(conn, value) is None:
                raise CliError(f"no such business: {text}")
        user, ended = await account_service.create_or_update_user(conn, email, password, business_ids, args.role,
                                                                  oncall_cli.cli_actor())
    finally:
        await conn.close()
    if ended:
        print(f"the password changed: {ended} session(s) ended")
    print(user.public_id)


class _Parser(argparse.ArgumentParser):
    """Bad usage is one line on stderr and exit status 2 (subcommand parsers inherit this class)."""

    def error(self, message: str) -> NoReturn:
        _fail(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kaihooks", description="kaihooks: API keys and webhooks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("migrate", help="apply the SQL migrations").set_defaults(run=cmd_migrate)
    sub.add_parser("secret-key", help="print a fresh KAIHOOKS_SECRET_KEY").set_defaults(run=cmd_secret_key)

    business = sub.add_parser("business", help="businesses").add_subparsers(dest="action", required=True)
    create = business.add_parser("create", help="create a business; prints its id")
    create.add_argument("name")
    create.set_defaults(run=cmd_business_create)

    user = sub.add_parser("user", help="dashboard users").add_subparsers(dest="action", required=True)
    ucreate = user.add_parser("create", help="create a user or add memberships; sets the password")
    ucreate.add_argument("email")
    ucreate.add_argument("--business", action="append", required=True, metavar="ID",
                         help="a business id (repeat for several)")
    ucreate.add_argument("--role", choices=["owner", "admin", "member"], required=True)
    ucreate.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    ucreate.set_defaults(run=cmd_user_create)

    account_cli.register(sub, user)
    oncall_cli.register(sub)
    secrets_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    args = build_parser().parse_args(argv)
    try:
        if hasattr(args, "handler"):
            asyncio.run(oncall_cli.run(_settings(), args.handler, args))
        else:
            asyncio.run(args.run(args))
    except (CliError, oncall_cli.UsageError) as exc:
        _fail(str(exc))
    except KaihooksError as exc:
        _fail(exc.detail)
    except db.ERRORS as exc:
        _fail(f"database unavailable or refused the operation: {exc}")
    return 0


def _fail(message: str) -> NoReturn:
    # Messages may quote input and what Postgres said about it: escaped like every other foreign text.
    print(f"kaihooks: error: {safe(message)}", file=sys.stderr)
    raise SystemExit(2)


if __name__ == "__main__":
    raise SystemExit(main())
