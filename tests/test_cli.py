"""The `kaihooks` command: set-up commands, their output and their errors, and what holds for every command
(exit statuses, `--json`, `--help` with examples, `--version`, a light start, the README's command list)."""

from __future__ import annotations

import argparse
import ast
import asyncio
import base64
import importlib.metadata
import inspect
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from shared import ids, recovery
from shared.cli import app, build_parser, main
from shared.master_keys import key_id_of
from shared.migrations import migrate
from shared.settings import Settings
from tests.helpers import with_database
from tests.processes import ROOT, process_env


def kaihooks(settings: Settings, *args: str, stdin: str = "", env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args], cwd=ROOT, input=stdin, text=True, capture_output=True,
        env=env or process_env(settings), timeout=60, check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], status: int, *fragments: str) -> None:
    assert result.returncode == status, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kaihooks: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
              ) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every command and command group under ``parser``, with its path (``("deliveries", "list")``)."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append(((*prefix, name), sub))
                found += _commands(sub, (*prefix, name))
    return found


COMMANDS = _commands(build_parser())
LEAVES = [(path, p) for path, p in COMMANDS if p.get_default("handler") is not None]
# what the examples' shell variables stand for
SHELL_VARIABLES = {'"$BIZ"': "biz_01m8ent7q3fsb9zt4eec16dwaz", '"$OTHER"': "biz_01m8ent7q3fsb9zt4eec16dwba"}
HEAVY = {"asyncio", "asyncpg", "aiohttp", "pydantic", "pydantic_settings", "cryptography", "argon2", "redis", "arq",
         "prometheus_client", "api", "dispatcher"}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {o for a in parser._actions for o in a.option_strings if o.startswith("--")} - {"--help", "--json"}


# ---- set-up commands ----------------------------------------------------------------------------

def test_secret_key_prints_32_random_bytes(settings: Settings) -> None:
    first = kaihooks(settings, "secret-key")
    second = kaihooks(settings, "secret-key")
    assert first.returncode == 0
    assert len(base64.b64decode(first.stdout.strip(), validate=True)) == 32
    assert first.stdout != second.stdout
    as_json = json.loads(kaihooks(settings, "secret-key", "--json").stdout)
    assert len(base64.b64decode(as_json["secret_key"], validate=True)) == 32


def test_migrate_is_safe_to_run_again(settings: Settings) -> None:
    result = kaihooks(settings, "migrate")
    assert result.returncode == 0, result.stderr
    assert "applied 0 migration(s)" in result.stdout
    assert json.loads(kaihooks(settings, "migrate", "--json").stdout) == {"applied": []}


async def test_business_and_user_create(settings: Settings, db: asyncpg.Connection) -> None:
    made = kaihooks(settings, "business", "create", "Lakeside Dental")
    assert made.returncode == 0, made.stderr
    business_id = made.stdout.strip().splitlines()[-1]
    assert ids.decode("biz", business_id) is not None
    second = json.loads(kaihooks(settings, "business", "create", "Second Branch", "--json").stdout)
    assert second["name"] == "Second Branch" and ids.decode("biz", second["id"]) is not None
    assert await db.fetchval("SELECT name FROM businesses WHERE id = $1", ids.decode("biz", second["id"])) \
        == "Second Branch"

    user = kaihooks(settings, "user", "create", "Dana@Example.test", "--business", business_id,
                    "--role", "owner", "--password-stdin", stdin="first password\n")
    assert user.returncode == 0, user.stderr
    row = await db.fetchrow("SELECT id, email, password_hash FROM users WHERE email = 'dana@example.test'")
    assert row is not None and row["password_hash"].startswith("$argon2id$")
    assert "first password" not in row["password_hash"]
    assert user.stdout.strip().splitlines()[-1] == ids.encode("usr", row["id"])

    # Again for an existing email: adds the membership and sets the new password.
    again = kaihooks(settings, "user", "create", "dana@example.test", "--business", second["id"],
                     "--role", "member", "--password-stdin", "--json", stdin="second password\n")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == {"id": ids.encode("usr", row["id"]), "email": "dana@example.test",
                                        "sessions_ended": 0}
    roles = {r["business_id"]: r["role"] for r in await db.fetch(
        "SELECT business_id, role FROM memberships WHERE user_id = $1", row["id"])}
    assert roles == {ids.decode("biz", business_id): "owner", ids.decode("biz", second["id"]): "member"}
    new_hash = await db.fetchval("SELECT password_hash FROM users WHERE id = $1", row["id"])
    assert new_hash != row["password_hash"]


def test_secrets_status_as_json(settings: Settings) -> None:
    result = kaihooks(settings, "secrets", "status", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["current_key_id"] == key_id_of(settings.secret_key_bytes) and status["old_key_ids"] == []
    for row in status["webhook_secrets"] + status["api_keys"]:
        assert set(row) == {"key_id", "key", "scheme", "count"} and row["count"] > 0
    text = kaihooks(settings, "secrets", "status").stdout
    assert text.startswith("webhook secrets that still sign")


# ---- errors: one line, and the exit status tells an error (1) from a usage mistake (2) -------------

@pytest.mark.parametrize("args, stdin, status, fragments", [
    (["business", "create", ""], "", 2, ["name"]),
    (["business", "create", "x" * 201], "", 2, ["name"]),
    (["user", "create", "not-an-email", "--business", "biz_0000000000000000000000000a", "--role", "owner",
      "--password-stdin"], "long enough pw\n", 2, ["not an email"]),
    (["user", "create", "a@b.test", "--business", "nope", "--role", "owner", "--password-stdin"],
     "long enough pw\n", 2, ["not a business id"]),
    (["user", "create", "a@b.test", "--business", "biz_0000000000000000000000000a", "--role", "owner",
      "--password-stdin"], "long enough pw\n", 1, ["no such business"]),
    (["user", "create", "a@b.test", "--business", "biz_0000000000000000000000000a", "--role", "king",
      "--password-stdin"], "long enough pw\n", 2, ["role"]),
    (["user", "create", "a@b.test", "--business", "biz_0000000000000000000000000a", "--role", "owner"],
     "", 2, ["--password-stdin"]),
    (["user", "create", "a@b.test", "--business", "biz_0000000000000000000000000a", "--role", "owner",
      "--password-stdin"], "short\n", 2, ["at least 8"]),
    (["migrate", "--frobnicate"], "", 2, ["unrecognized arguments"]),
    (["frobnicate"], "", 2, ["invalid choice"]),
    ([], "", 2, ["required"]),
], ids=["empty-name", "long-name", "bad-email", "bad-id", "unknown-business", "bad-role", "no-stdin-flag",
        "short-password", "unknown-option", "unknown-command", "no-command"])
def test_bad_input_is_one_clear_line(settings: Settings, args: list[str], stdin: str, status: int,
                                     fragments: list[str]) -> None:
    assert_one_line_error(kaihooks(settings, *args, stdin=stdin), status, *fragments)


def test_missing_configuration_is_one_clear_line(settings: Settings) -> None:
    env = process_env(settings)
    del env["DATABASE_URL"]
    env["KAIHOOKS_SECRET_KEY"] = "short"
    result = kaihooks(settings, "migrate", env=env)
    assert_one_line_error(result, 1, "DATABASE_URL is required", "KAIHOOKS_SECRET_KEY")


def test_unreachable_database_is_one_clear_line(settings: Settings) -> None:
    env = process_env(settings, DATABASE_URL="postgresql://postgres@127.0.0.1:1/none")
    assert_one_line_error(kaihooks(settings, "business", "create", "x", env=env), 1, "database")


# ---- every command ------------------------------------------------------------------------------

def test_version_is_the_installed_package_version(settings: Settings) -> None:
    result = kaihooks(settings, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"kaihooks {importlib.metadata.version('kaihooks')}\n"


def test_there_are_commands_to_check() -> None:
    assert len(LEAVES) >= 15 and ("deliveries", "list") in [path for path, _ in LEAVES]


@pytest.mark.parametrize("path", [(), *(path for path, _ in COMMANDS)], ids=lambda p: " ".join(p) or "kaihooks")
def test_every_help_exits_0_with_examples_that_parse(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*path, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {' '.join(('kaihooks', *path))}")
    examples = out.split("\nExamples:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert examples
    for example in examples:
        # the command line of the example: from `kaihooks` to a pipe, redirection or the end of `$(…)`
        line = re.split(r"[|<)]", example.split("kaihooks ", 1)[1])[0]
        for variable, value in SHELL_VARIABLES.items():
            line = line.replace(variable, value)
        parsed = build_parser().parse_args(shlex.split(line))
        assert parsed.handler if path else parsed.command, example
        assert " ".join(("kaihooks", *path)) in example


@pytest.mark.parametrize("path", [path for path, _ in LEAVES], ids=" ".join)
def test_every_command_takes_json_and_has_a_handler(path: tuple[str, ...]) -> None:
    parser = dict(LEAVES)[path]
    assert "--json" in {o for a in parser._actions for o in a.option_strings}
    assert inspect.iscoroutinefunction(app.handler(parser.get_default("handler")))


def test_recover_rate_help_names_the_service_default() -> None:
    assert app.RECOVER_RATE_HELP.endswith(f"(default {recovery.DEFAULT_RATE_PER_S:g})")


def _modules_after(code: str, settings: Settings) -> set[str]:
    """The top-level packages (and ``shared.*`` modules) loaded by ``code`` in a fresh interpreter."""
    probe = code + "\nimport sys\nprint(' '.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, text=True, capture_output=True,
                            env=process_env(settings), timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    loaded = result.stdout.splitlines()[-1].split()
    return {m.split(".")[0] for m in loaded} | {m for m in loaded if m.startswith("shared.")}


def test_help_and_version_load_no_heavy_module(settings: Settings) -> None:
    """`kaihooks --help` (and every command's) builds the parser from the standard library alone."""
    paths = [[], *([*path] for path, _ in COMMANDS)]
    loaded = _modules_after(
        "from shared.cli import main\n"
        f"for path in {paths!r} + [['--version']]:\n"
        "    try:\n"
        "        main(path + ['--help'] if path != ['--version'] else path)\n"
        "    except SystemExit:\n"
        "        pass", settings)
    assert not loaded & HEAVY, loaded & HEAVY
    assert {m for m in loaded if m.startswith("shared.")} <= {"shared.cli", "shared.cli.app", "shared.cli.args",
                                                             "shared.cli.terminal"}


def test_deliveries_list_loads_only_what_it_uses(settings: Settings) -> None:
    """The on-call engineer's first command: no cipher, password hasher, HTTP client, Redis or metrics."""
    loaded = _modules_after("from shared.cli import main\nassert main(['deliveries', 'list', '--json']) == 0",
                            settings)
    assert "asyncpg" in loaded
    assert not loaded & {"cryptography", "argon2", "aiohttp", "redis", "arq", "prometheus_client", "api",
                         "dispatcher"}, loaded


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_the_cli_is_fenced() -> None:
    """Presentation at the edge: nothing outside shared/cli imports it, and it imports neither the API nor
    the dispatcher (it calls the services they call)."""
    cli_dir = ROOT / "shared" / "cli"
    outside = [p for top in ("api", "dispatcher", "shared", "scripts", "bench", "chaos")
               for p in (ROOT / top).rglob("*.py") if cli_dir not in p.parents]
    assert len(outside) > 50
    for path in outside:
        assert not {n for n in _imports(path) if n == "shared.cli" or n.startswith("shared.cli.")}, path
    for path in cli_dir.glob("*.py"):
        assert not {n for n in _imports(path) if n.split(".")[0] in {"api", "dispatcher"}}, path


def _readme_commands() -> dict[tuple[str, ...], str]:
    """The README's command list: each row's command path and its text."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"^\| `kaihooks ([^`]+)` \|", line)
        if m:
            words = m.group(1).split()
            path = tuple(w for w in words[:2] if re.fullmatch(r"[a-z][a-z-]*", w))
            rows[path] = m.group(1)
    return rows


def test_the_readme_command_list_matches_the_parser() -> None:
    listed = _readme_commands()
    assert set(listed) == {path for path, _ in LEAVES}
    for path, parser in LEAVES:
        assert _options(parser) == set(re.findall(r"--[a-z][a-z-]*", listed[path])), path


# ---- migrations ---------------------------------------------------------------------------------

async def test_concurrent_migrations_apply_each_file_once(database_url: str) -> None:
    """Two `migrate` runs on an empty database at once: both succeed, each file applied once."""
    server = with_database(database_url, "postgres")
    name = "kaihooks_migrate_race"
    admin = await asyncpg.connect(server)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = with_database(database_url, name)
        settings = Settings(DATABASE_URL=url, REDIS_URL="redis://unused",  # type: ignore[call-arg]
                            secret_key=base64.b64encode(b"x" * 32).decode())
        runs = await asyncio.gather(*[asyncio.to_thread(kaihooks, settings, "migrate") for _ in range(3)])
        assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
        applied = sorted(int(r.stdout.split()[1]) for r in runs)
        conn = await asyncpg.connect(url)
        total = await conn.fetchval("SELECT count(*) FROM schema_migrations")
        await conn.close()
        assert applied == [0, 0, total] and total >= 1
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_migrate_without_any_migration_files_fails_loudly(tmp_path: Path, database_url: str) -> None:
    """An install that lost sql/ must not report success on an empty schema."""
    conn = await asyncpg.connect(database_url)
    try:
        with pytest.raises(RuntimeError, match="no migrations found"):
            await migrate(conn, tmp_path)
    finally:
        await conn.close()
