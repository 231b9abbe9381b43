"""`kaihooks user create|set-password` and `kaihooks sessions list|revoke`: dashboard users, their
passwords and their sessions (``shared.account_service``)."""

from __future__ import annotations

import argparse
import sys

from shared import account_service, ids, passwords
from shared.cli.base import Context, UsageError, cli_actor
from shared.cli.terminal import print_json, safe, table, timestamp
from shared.errors import NotFound
from shared.repos import businesses
from shared.repos import sessions as session_repo


def read_password(args: argparse.Namespace) -> str:
    """The password on standard input (never an argument: it would be in the shell's history and `ps`)."""
    if not args.password_stdin:
        raise UsageError("give the password on standard input with --password-stdin")
    password = sys.stdin.readline().rstrip("\r\n")
    if (why := passwords.check_policy(password)) is not None:
        raise UsageError(f"password {why}")
    return password


def _email(text: str) -> str:
    email = text.strip()
    if "@" not in email or len(email) > 320 or email.startswith("@") or email.endswith("@"):
        raise UsageError(f"not an email address: {text!r}")
    return email


async def user_create(ctx: Context, args: argparse.Namespace) -> None:
    email = _email(args.email)
    password = read_password(args)
    db = await ctx.db()
    for business_id in args.business:
        if await businesses.get(db, business_id) is None:
            raise NotFound(f"no such business: {ids.encode('biz', business_id)}")
    async with db.acquire() as conn:
        user, ended = await account_service.create_or_update_user(conn, email, password, args.business, args.role,
                                                                  cli_actor())
    if args.json:
        print_json({"id": user.public_id, "email": user.email, "sessions_ended": ended})
        return
    if ended:
        print(f"the password changed: {ended} session(s) ended")
    print(user.public_id)


async def user_set_password(ctx: Context, args: argparse.Namespace) -> None:
    password = read_password(args)
    async with (await ctx.db()).acquire() as conn:
        ended = await account_service.set_password(conn, args.email, password, cli_actor())
    if args.json:
        print_json({"email": args.email, "sessions_ended": ended})
        return
    print(f"password set for {safe(args.email)}; {ended} session(s) ended")


async def sessions_list(ctx: Context, args: argparse.Namespace) -> None:
    user, live = await account_service.sessions(await ctx.db(), args.email)
    data = [{"id": s.id, "created_at": s.created_at, "expires_at": s.expires_at, "ip": s.ip} for s in live]
    if args.json:
        print_json(data)
        return
    if not data:
        print(f"no live sessions for {safe(user.email)}")
        return
    print(table(["id", "created", "expires", "ip"],
                [[s.id, timestamp(s.created_at), timestamp(s.expires_at), s.ip or "-"] for s in live]))


async def sessions_revoke(ctx: Context, args: argparse.Namespace) -> None:
    if args.session_id is not None and session_repo.id_prefix(args.session_id) is None:
        raise UsageError(f"not a session id: {args.session_id!r} (see `kaihooks sessions list EMAIL`)")
    ended = await account_service.revoke_sessions(await ctx.db(), args.email, args.session_id, cli_actor())
    if args.json:
        print_json({"email": args.email, "sessions_ended": ended})
        return
    print(f"revoked {ended} session(s) of {safe(args.email)}")
