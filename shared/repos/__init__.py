"""Storage: one module per aggregate; every SQL statement of the project lives here."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from shared.pagination import Position

# Functions take whichever runs the query: the pool, or a connection inside a transaction.
Executor = asyncpg.Pool | asyncpg.Connection


def newest_first(select: str, filters: Sequence[tuple[str, object]], limit: int, after: Position | None,
                 uuid_ids: bool = True) -> tuple[str, list[object]]:
    """A keyset page query: ``select`` (``SELECT … FROM t``), ``filters`` as (``"column = {}"``, value)
    or (``"raw condition"``, None), rows strictly older than ``after``, newest first, one extra row
    (so ``paginate`` knows whether a next page exists). Returns the SQL and its arguments."""
    args: list[object] = [limit + 1]
    conditions = []
    for expression, value in filters:
        if value is None and "{}" not in expression:
            conditions.append(expression)
            continue
        args.append(value)
        conditions.append(expression.format(f"${len(args)}"))
    if after is not None:
        args += [after.created_at, after.as_uuid() if uuid_ids else after.id]
        conditions.append(f"(created_at, id) < (${len(args) - 1}, ${len(args)})")
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    return f"{select}{where} ORDER BY created_at DESC, id DESC LIMIT $1", args
