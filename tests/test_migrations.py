"""Migrations only expand the schema, so the previous release's processes keep working while the release step
(`kaihooks migrate`) has run and they have not yet been replaced (docs/operations.md)."""

from __future__ import annotations

import re
from importlib.resources.abc import Traversable

import pytest

from shared.migrations import SQL_DIR, migration_files

# What would break a process of the previous release still running: it reads or writes what was removed,
# renamed or retyped, or inserts rows without a value a new NOT NULL column requires.
CONTRACTING = [
    (re.compile(r"\bDROP\s+(TABLE|COLUMN|TYPE|VIEW|FUNCTION)\b", re.I), "drops something"),
    (re.compile(r"\bRENAME\b", re.I), "renames something"),
    (re.compile(r"\bALTER\s+COLUMN\s+\w+\s+(SET\s+DATA\s+)?TYPE\b", re.I), "changes a column's type"),
    (re.compile(r"\bSET\s+NOT\s+NULL\b", re.I), "makes a column NOT NULL"),
    (re.compile(r"\bADD\s+COLUMN\b(?![^;]*\bDEFAULT\b)[^;]*\bNOT\s+NULL\b", re.I),
     "adds a NOT NULL column without a DEFAULT"),
]
# A release that must contract (after a release that stopped using the thing) says so on the statement's line.
ALLOWED = "-- contract:"


def contracting_statements(sql: str) -> list[str]:
    found = []
    for line in sql.splitlines():
        code = line.split("--", 1)[0]
        if ALLOWED in line:
            continue
        found.extend(f"{why}: {line.strip()}" for pattern, why in CONTRACTING if pattern.search(code))
    return found


@pytest.mark.parametrize("path", migration_files(SQL_DIR), ids=lambda p: p.name)
def test_a_migration_only_expands_the_schema(path: Traversable) -> None:
    assert contracting_statements(path.read_text()) == []


@pytest.mark.parametrize("sql", [
    "ALTER TABLE deliveries DROP COLUMN deadline_at;",
    "ALTER TABLE endpoints RENAME COLUMN url TO target;",
    "ALTER TABLE endpoints ALTER COLUMN url TYPE varchar(100);",
    "ALTER TABLE endpoints ALTER COLUMN description SET NOT NULL;",
    "ALTER TABLE endpoints ADD COLUMN weight integer NOT NULL;",
    "DROP TABLE notices;",
])
def test_the_check_catches_what_would_break_the_previous_release(sql: str) -> None:
    assert contracting_statements(sql)
    assert contracting_statements(sql.rstrip(";") + f"; {ALLOWED} nothing has read it since 0012") == []


def test_the_check_lets_additive_changes_through() -> None:
    assert contracting_statements("ALTER TABLE endpoints ADD COLUMN failure_streak integer NOT NULL DEFAULT 0;\n"
                                  "ALTER TABLE deliveries ADD COLUMN deadline_at timestamptz;\n"
                                  "CREATE INDEX deliveries_due ON deliveries (next_attempt_at);") == []
