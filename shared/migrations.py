"""Apply the numbered ``sql/*.sql`` files in order, once each, under an advisory lock.

The files live in the checkout's top-level ``sql/`` and ship in the wheel as the package data of ``shared.sql``
(``pyproject.toml`` maps that package to ``sql/``), so an installed ``kaihooks migrate`` finds them with
``importlib.resources`` wherever the install is."""

from __future__ import annotations

import importlib.resources
import re
from importlib.resources.abc import Traversable
from pathlib import Path

import asyncpg


def _shipped_sql() -> Traversable:
    try:
        return importlib.resources.files("shared.sql")  # a wheel or an editable install
    except ModuleNotFoundError:  # run from a checkout on sys.path without an install: its sql/ directory
        return Path(__file__).resolve().parent.parent / "sql"


SQL_DIR = _shipped_sql()
# Any fixed 64-bit number: two `kaihooks migrate` runs serialise on it.
_LOCK_ID = 0x6B61_6968_6F6F_6B73 & 0x7FFF_FFFF_FFFF_FFFF
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def migration_files(sql_dir: Traversable = SQL_DIR) -> list[Traversable]:
    files = sorted((p for p in sql_dir.iterdir() if _NAME.match(p.name)), key=lambda p: p.name)
    numbers = [p.name[:4] for p in files]
    if len(set(numbers)) != len(numbers):
        raise RuntimeError(f"two migrations share a number in {sql_dir}")
    return files


async def migrate(conn: asyncpg.Connection, sql_dir: Traversable = SQL_DIR) -> list[str]:
    """Apply what is missing; return the names applied. Safe to run concurrently. Raises ``RuntimeError``
    if ``sql_dir`` holds no migration at all (an install without them must not report success)."""
    if not migration_files(sql_dir):
        raise RuntimeError(f"no migrations found in {sql_dir}: this install does not ship sql/")
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   name text PRIMARY KEY,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for path in migration_files(sql_dir):
            if path.name in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", path.name)
            applied_now.append(path.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    return applied_now
