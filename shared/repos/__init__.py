"""Storage: one module per aggregate; every SQL statement of the project lives here."""

from __future__ import annotations

import asyncpg

# Functions take whichever runs the query: the pool, or a connection inside a transaction.
Executor = asyncpg.Pool | asyncpg.Connection
