"""The ``kaihooks`` command line: the parser, and running the one command it names.

Building the parser imports nothing but the standard library (``kaihooks --help`` starts in tens of
milliseconds); each command names its handler as ``"module:function"`` in this package, imported only when
that command runs, so a command loads the driver, settings and services it uses and no others.

Exit status: 0 when the command did its work; 1 when it could not (a service's error, the database
unreachable, the configuration refused); 2 for a usage mistake (an unknown command or option, a malformed
id, time, email or password, a value a service refuses as input). Either failure is one line on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from shared.cli import args as types

if TYPE_CHECKING:
    from shared.cli.base import Handler

EXIT_ERROR, EXIT_USAGE = 1, 2
# `endpoints recover --rate` when not given: the service's default (tests/test_cli.py holds the help to it).
RECOVER_RATE_HELP = "at most N a second (default 10)"


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples as written; command names up to 14 characters beside their help."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30)

    def add_argument(self, action: argparse.Action) -> None:
        super().add_argument(action)
        # argparse measures subcommand names without the indent they are printed with: they would wrap
        if action.help is not argparse.SUPPRESS:
            for subaction in self._iter_indented_subactions(action):
                width = len(self._format_action_invocation(subaction)) + self._current_indent
                self._action_max_length = max(self._action_max_length, width)


class _Parser(argparse.ArgumentParser):
    """Bad usage is one line on stderr and exit status 2 (subcommand parsers inherit this class)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise SystemExit(_fail(f"{message} (see `{self.prog} --help`)", EXIT_USAGE))


class _Version(argparse.Action):
    """``--version``: the installed package's version, looked up only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"kaihooks {version()}")
        parser.exit()


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("kaihooks")
    except PackageNotFoundError:  # run from a source tree that was never installed
        from shared import __version__

        return __version__


def _examples(*lines: str) -> str:
    return "Examples:\n" + "\n".join(f"  {line}" for line in lines)


def _group(sub: Any, name: str, help: str, *examples: str) -> Any:
    """A command with subcommands (``kaihooks deliveries …``)."""
    parser = sub.add_parser(name, help=help, description=f"kaihooks {name}: {help}.", epilog=_examples(*examples))
    return parser.add_subparsers(dest="action", required=True, metavar="ACTION")


def _command(sub: Any, name: str, help: str, handler: str, *examples: str, more: str = "") -> _Parser:
    """A command that runs a handler; every one can print JSON instead of text."""
    description = help[0].upper() + help[1:] + "." + (f"\n\n{more}" if more else "")
    parser: _Parser = sub.add_parser(name, help=help, description=description, epilog=_examples(*examples))
    parser.add_argument("--json", action="store_true", help="print JSON instead of text (for scripts)")
    parser.set_defaults(handler=handler)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="kaihooks",
        description="kaihooks: API keys and signed webhooks for KaiCalls businesses. Set-up and on-call\n"
                    "commands, straight on Postgres (DATABASE_URL and the KAIHOOKS_* settings of the service).",
        epilog=_examples(
            "kaihooks migrate",
            'BIZ=$(kaihooks business create "Acme Plumbing")',
            "kaihooks deliveries list --status failed --since 2h",
            "kaihooks endpoints recover ep_01m8ent7q3fsb9zt4eec16dwaz --since 1h --dry-run",
            "kaihooks deliveries list --json | jq -r '.[].id'",
        ) + "\n\nEvery command takes --json. Exit status: 0 done, 1 an error, 2 a usage mistake.\n"
            "`kaihooks COMMAND --help` shows a command's options and examples.",
    )
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    business_id = types.public_id("biz", "a business id")
    endpoint_id = types.public_id("ep", "an endpoint id")
    delivery_id = types.public_id("dlv", "a delivery id")

    # ---- set-up --------------------------------------------------------------------------------------
    _command(sub, "migrate", "apply the SQL migrations", "provision:migrate",
             "kaihooks migrate",
             more="Safe to run again, and from two processes at once (an advisory lock).")
    _command(sub, "secret-key", "print a fresh KAIHOOKS_SECRET_KEY", "keys:secret_key",
             "export KAIHOOKS_SECRET_KEY=$(kaihooks secret-key)",
             "export KAIHOOKS_INTERNAL_TOKENS=$(kaihooks secret-key)")

    business = _group(sub, "business", "businesses",
                      'kaihooks business create "Acme Plumbing"')
    p = _command(business, "create", "create a business; prints its id", "provision:business_create",
                 'BIZ=$(kaihooks business create "Acme Plumbing")',
                 'kaihooks business create "Acme Plumbing" --json')
    p.add_argument("name", metavar="NAME", help="1 to 200 characters")

    user = _group(sub, "user", "dashboard users",
                  "echo 'a long password' | kaihooks user create owner@acme.test --business \"$BIZ\" --role owner "
                  "--password-stdin",
                  "kaihooks user set-password owner@acme.test --password-stdin < new-password.txt")
    p = _command(user, "create", "create a user or add memberships; sets the password", "account:user_create",
                 "echo 'a long password' | kaihooks user create owner@acme.test --business \"$BIZ\" --role owner "
                 "--password-stdin",
                 "kaihooks user create ops@acme.test --business \"$BIZ\" --business \"$OTHER\" --role admin "
                 "--password-stdin < password.txt",
                 more="For an existing email it adds the memberships and sets the password; a password that "
                      "changed ends the\nuser's sessions.")
    p.add_argument("email", metavar="EMAIL")
    p.add_argument("--business", action="append", required=True, metavar="ID", type=business_id,
                   help="a business id (repeat for several)")
    p.add_argument("--role", choices=["owner", "admin", "member"], required=True)
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p = _command(user, "set-password", "set a user's password; ends all their sessions", "account:user_set_password",
                 "kaihooks user set-password owner@acme.test --password-stdin < new-password.txt")
    p.add_argument("email", metavar="EMAIL")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")

    sessions = _group(sub, "sessions", "a user's dashboard sessions",
                      "kaihooks sessions list owner@acme.test",
                      "kaihooks sessions revoke owner@acme.test --all")
    p = _command(sessions, "list", "a user's live sessions, newest first", "account:sessions_list",
                 "kaihooks sessions list owner@acme.test",
                 "kaihooks sessions list owner@acme.test --json")
    p.add_argument("email", metavar="EMAIL")
    p = _command(sessions, "revoke", "end one session of a user, or all of them", "account:sessions_revoke",
                 "kaihooks sessions revoke owner@acme.test ses_01m8ent7x6ex6as0an1vy12zbk",
                 "kaihooks sessions revoke owner@acme.test --all")
    p.add_argument("email", metavar="EMAIL")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("session_id", nargs="?", metavar="SESSION_ID", help="a ses_… id from `sessions list`")
    which.add_argument("--all", action="store_true", help="every session of the user")

    # ---- on-call -------------------------------------------------------------------------------------
    deliveries = _group(sub, "deliveries", "find, inspect and re-send deliveries",
                        "kaihooks deliveries list --status failed --since 2h",
                        "kaihooks deliveries show dlv_01m8ent7x6ex6as0an1vy12zbk",
                        "kaihooks deliveries retry dlv_01m8ent7x6ex6as0an1vy12zbk")
    p = _command(deliveries, "list", "recent deliveries (last 24 h, 50 rows unless told)", "deliveries:list_deliveries",
                 "kaihooks deliveries list --status failed --since 2h",
                 "kaihooks deliveries list --endpoint ep_01m8ent7q3fsb9zt4eec16dwaz --since 2026-11-27T09:00:00Z",
                 "kaihooks deliveries list --status failed --json | jq -r '.[].id'")
    p.add_argument("--business", metavar="ID", type=business_id)
    p.add_argument("--endpoint", metavar="ID", type=endpoint_id)
    p.add_argument("--status", choices=["pending", "succeeded", "failed"])
    p.add_argument("--since", default="24h", metavar="T", type=types.moment,
                   help=f"changed since T: {types.TIME_HELP}; default 24h")
    p.add_argument("--limit", type=types.count(1, 10_000), default=50, metavar="N", help="at most N rows (50)")
    p = _command(deliveries, "show", "one delivery with its attempts", "deliveries:show_delivery",
                 "kaihooks deliveries show dlv_01m8ent7x6ex6as0an1vy12zbk",
                 "kaihooks deliveries show dlv_01m8ent7x6ex6as0an1vy12zbk --json")
    p.add_argument("id", metavar="ID", type=delivery_id)
    p = _command(deliveries, "retry", "re-send deliveries now", "deliveries:retry_deliveries",
                 "kaihooks deliveries retry dlv_01m8ent7x6ex6as0an1vy12zbk",
                 "kaihooks deliveries list --status failed --json | jq -r '.[].id' | xargs kaihooks deliveries retry",
                 more="As `POST …/deliveries/{id}/retry`: refused for an endpoint that is disabled.")
    p.add_argument("ids", nargs="+", metavar="ID", type=delivery_id)

    endpoints = _group(sub, "endpoints", "endpoint health, re-enabling and recovery",
                       "kaihooks endpoints list",
                       "kaihooks endpoints enable ep_01m8ent7q3fsb9zt4eec16dwaz",
                       "kaihooks endpoints recover ep_01m8ent7q3fsb9zt4eec16dwaz --since 1h --dry-run")
    p = _command(endpoints, "list", "endpoints with their health over the last hour", "endpoints:list_endpoints",
                 "kaihooks endpoints list",
                 "kaihooks endpoints list --business biz_01m8ent7q3fsb9zt4eec16dwaz --json")
    p.add_argument("--business", metavar="ID", type=business_id)
    p.add_argument("--limit", type=types.count(1, 10_000), default=100, metavar="N", help="at most N rows (100)")
    p = _command(endpoints, "enable", "re-enable an endpoint disabled for failing", "endpoints:enable_endpoint",
                 "kaihooks endpoints enable ep_01m8ent7q3fsb9zt4eec16dwaz",
                 more="As `PATCH …/webhook-endpoints/{id}` with enabled: true (the same audit entry).")
    p.add_argument("id", metavar="ID", type=endpoint_id)
    p = _command(endpoints, "recover", "re-send failed deliveries of a window, paced", "endpoints:recover_endpoint",
                 "kaihooks endpoints recover ep_01m8ent7q3fsb9zt4eec16dwaz --since 1h --dry-run",
                 "kaihooks endpoints recover ep_01m8ent7q3fsb9zt4eec16dwaz --since 1h --rate 2",
                 "kaihooks endpoints recover ep_01m8ent7q3fsb9zt4eec16dwaz --since 2026-11-27T09:00:00Z "
                 "--until 2026-11-27T11:00:00Z --detach --json",
                 more="Shows a progress bar until the run ends; Ctrl-C cancels it (what was not yet sent goes back "
                      "to failed).")
    p.add_argument("id", metavar="ID", type=endpoint_id)
    p.add_argument("--since", required=True, metavar="T", type=types.moment, help=types.TIME_HELP)
    p.add_argument("--until", metavar="T", type=types.moment, help="the end of the window (default now)")
    p.add_argument("--dry-run", action="store_true", help="count what would be sent; change nothing")
    p.add_argument("--rate", type=types.rate, metavar="N", help=RECOVER_RATE_HELP)
    p.add_argument("--include-missed", action="store_true", help="also send events it never got")
    p.add_argument("--detach", action="store_true", help="start it and return (no progress bar)")

    secrets = _group(sub, "secrets", "webhook secrets and API keys after a master key rotation",
                     "kaihooks secrets status",
                     "KAIHOOKS_OLD_SECRET_KEYS=$OLD kaihooks secrets reseal")
    _command(secrets, "status", "what is stored under which master key", "keys:secrets_status",
             "kaihooks secrets status",
             "kaihooks secrets status --json")
    _command(secrets, "reseal", "re-seal webhook secrets under KAIHOOKS_SECRET_KEY", "keys:secrets_reseal",
             "KAIHOOKS_OLD_SECRET_KEYS=$OLD kaihooks secrets reseal",
             more="Safe to run again, and beside the running service.")
    return parser


def handler(name: str) -> Handler:
    """The function a parser default names (``"deliveries:list_deliveries"``), its module imported now."""
    module, _, function = name.partition(":")
    found: Handler = getattr(importlib.import_module(f"shared.cli.{module}"), function)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    import asyncio
    import logging

    from shared.cli import base
    from shared.errors import KaihooksError, ValidationFailed

    # Commands print their results; their logs start at warning unless KAIHOOKS_LOG_LEVEL says otherwise (an
    # unknown level is refused with the rest of the configuration by the commands that read it).
    level = os.environ.get("KAIHOOKS_LOG_LEVEL", "warning").strip().upper()
    logging.basicConfig(level=level if level in ("DEBUG", "INFO", "WARNING", "ERROR") else "WARNING",
                        stream=sys.stderr)
    try:
        asyncio.run(base.run(handler(args.handler), args))
    except (base.UsageError, ValidationFailed) as exc:  # a service refusing a value given: the usage is wrong
        return _fail(str(exc), EXIT_USAGE)
    except base.CliError as exc:
        return _fail(str(exc), EXIT_ERROR)
    except KaihooksError as exc:
        return _fail(exc.detail, EXIT_ERROR)
    except SystemExit as exc:  # the configuration refused (shared.settings.load_settings): already one line
        if isinstance(exc.code, str):
            return _fail(exc.code.removeprefix("kaihooks: error: "), EXIT_ERROR)
        raise
    except KeyboardInterrupt:
        return 130
    return 0


def _fail(message: str, status: int) -> int:
    from shared.cli.terminal import safe

    # Messages may quote input and what Postgres said about it: escaped like every other foreign text.
    print(f"kaihooks: error: {safe(message)}", file=sys.stderr)
    return status
