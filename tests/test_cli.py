"""The `kaihooks` command: set-up commands, their output and their errors."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from shared import ids
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


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kaihooks: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_secret_key_prints_32_random_bytes(settings: Settings) -> None:
    first = kaihooks(settings, "secret-key")
    second = kaihooks(settings, "secret-key")
    assert first.returncode == 0
    assert len(base64.b64decode(first.stdout.strip(), validate=True)) == 32
    assert first.stdout != second.stdout


def test_migrate_is_safe_to_run_again(settings: Settings) -> None:
    result = kaihooks(settings, "migrate")
    assert result.returncode == 0, result.stderr
    assert "applied 0 migration(s)" in result.stdout


async def test_business_and_user_create(settings: Settings, db: asyncpg.Connection) -> None:
    made = kaihooks(settings, "business", "create", "Lakeside Dental")
    assert made.returncode == 0, made.stderr
    business_id = made.stdout.strip().splitlines()[-1]
    assert ids.decode("biz", business_id) is not None
    second = kaihooks(settings, "business", "create", "Second Branch").stdout.strip().splitlines()[-1]

    user = kaihooks(settings, "user", "create", "Dana@Example.test", "--business", business_id,
                    "--role", "owner", "--password-stdin", stdin="first password\n")
    assert user.returncode == 0, user.stderr
    row = await db.fetchrow("SELECT id, email, password_hash FROM users WHERE email = 'dana@example.test'")
    assert row is not None and row["password_hash"].startswith("$argon2id$")
    assert "first password" not in row["password_hash"]

    # Again for an existing email: adds the membership and sets the new password.
    again = kaihooks(settings, "user", "create", "dana@example.test", "--business", second,
                     "--role", "member", "--password-stdin", stdin="second password\n")
    assert again.returncode == 0, again.stderr
    roles = {r["business_id"]: r["role"] for r in await db.fetch(
        "SELECT business_id, role FROM memberships WHERE user_id = $1", row["id"])}
    assert roles == {ids.decode("biz", business_id): "owner", ids.decode("biz", second): "member"}
    new_hash = await db.fetchval("SELECT password_hash FROM users WHERE id = $1", row["id"])
    assert new_hash != row["password_hash"]


@pytest.mark.parametrize("args, stdin, fragments", [
    (["business", "create", ""], "", ["name"]),
    (["business", "create", "x" * 201], "", ["name"]),
    (["user", "create", "not-an-email", "--business", "biz_0000000000000000000000000a", "--role", "owner",
      "--password-stdin"], "long enough pw\n", ["not an email"]),
    (["user", "create", "a@b.test", "--business", "nope", "--role", "owner", "--password-stdin"],
     "long enough pw\n", ["not a business id"]),
    (["user", "create", "a@b.test", "--business", "biz_0000000000000000000000000a", "--role", "owner",
      "--password-stdin"], "long enough pw\n", ["no such business"]),
    (["user", "create", "a@b.test", "--business", "biz_0000000000000000000000000a", "--role", "king",
      "--password-stdin"], "long enough pw\n", ["role"]),
    (["user", "create", "a@b.test", "--business", "biz_0000000000000000000000000a", "--role", "owner"],
     "", ["--password-stdin"]),
    (["user", "create", "a@b.test", "--business", "biz_0000000000000000000000000a", "--role", "owner",
      "--password-stdin"], "short\n", ["at least 8"]),
    (["frobnicate"], "", ["invalid choice"]),
    ([], "", ["required"]),
], ids=["empty-name", "long-name", "bad-email", "bad-id", "unknown-business", "bad-role", "no-stdin-flag",
        "short-password", "unknown-command", "no-command"])
def test_bad_input_is_one_clear_line(settings: Settings, args: list[str], stdin: str,
                                     fragments: list[str]) -> None:
    assert_one_line_error(kaihooks(settings, *args, stdin=stdin), *fragments)


def test_missing_configuration_is_one_clear_line(settings: Settings) -> None:
    env = process_env(settings)
    del env["DATABASE_URL"]
    env["KAIHOOKS_SECRET_KEY"] = "short"
    result = kaihooks(settings, "migrate", env=env)
    assert_one_line_error(result, "DATABASE_URL is required", "KAIHOOKS_SECRET_KEY")


def test_unreachable_database_is_one_clear_line(settings: Settings) -> None:
    env = process_env(settings, DATABASE_URL="postgresql://postgres@127.0.0.1:1/none")
    assert_one_line_error(kaihooks(settings, "business", "create", "x", env=env), "database")


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
