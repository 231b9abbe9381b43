"""`kaihooks user set-password` and `kaihooks sessions list|revoke`: a user's password and sessions."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import asyncpg

from shared import account_service, passwords
from shared.oncall_cli import UsageError, cli_actor, print_json, table, timestamp
from shared.repos import sessions as session_repo
from shared.settings import Settings
from shared.terminal import safe


def read_password(args: argparse.Namespace) -> str:
    """The password on standard input (never an argument: it would be in the shell's history and `ps`)."""
    if not args.password_stdin:
        raise UsageError("give the password on standard input with --password-stdin")
    password = sys.stdin.readline().rstrip("\r\n")
    if (why := passwords.check_policy(password)) is not None:
        raise UsageError(f"password {why}")
    return password


async def user_set_password(db: asyncpg.Pool, settings: Settings, args: argparse.Namespace) -> None:
    password = read_password(args)
    async with db.acquire() as conn:
        ended = await account_service.set_password(conn, args.email, password, cli_actor())
    print(f"password set for {safe(args.email)}; {ended} session(s) ended")


async def sessions_list(db: asyncpg.Pool, settings: Settings, args: argparse.Namespace) -> None:
    user, live = await account_service.sessions(db, args.email)
    data = [{"id": s.id, "created_at": s.created_at, "expires_at": s.expires_at, "ip": s.ip} for s in live]
    if args.json:
        print_json(data)
        return
    if not data:
        print(f"no live sessions for {safe(user.email)}")
        return
    print(table(["id", "created", "expires", "ip"],
                [[s.id, timestamp(s.created_at), timestamp(s.expires_at), s.ip or "-"] for s in live]))


async def sessions_revoke(db: asyncpg.Pool, settings: Settings, args: argparse.Namespace) -> None:
    if args.session_id is not None and session_repo.id_prefix(args.session_id) is None:
        raise UsageError(f"not a session id: {args.session_id!r} (see `kaihooks sessions list EMAIL`)")
    ended = await account_service.revoke_sessions(db, args.email, args.session_id, cli_actor())
    print(f"revoked {ended} session(s) of {safe(args.email)}")


def register(sub: Any, user: Any) -> None:
    """Add `user set-password` (to the `user` subparsers) and `sessions …` to the `kaihooks` parser."""
    p = user.add_parser("set-password", help="set a user's password; ends all their sessions")
    p.add_argument("email")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.set_defaults(handler=user_set_password)

    sessions = sub.add_parser("sessions", help="a user's dashboard sessions").add_subparsers(
        dest="action", required=True)
    p = sessions.add_parser("list", help="a user's live sessions, newest first")
    p.add_argument("email")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=sessions_list)
    p = sessions.add_parser("revoke", help="end one session of a user, or all of them")
    p.add_argument("email")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("session_id", nargs="?", metavar="SESSION_ID", help="a ses_… id from `sessions list`")
    which.add_argument("--all", action="store_true", help="every session of the user")
    p.set_defaults(handler=sessions_revoke)
