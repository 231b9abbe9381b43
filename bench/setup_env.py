"""Postgres, Redis and a fresh, migrated, seeded database for one benchmark run.

Postgres and Redis are the local servers on 127.0.0.1:5432 / 6379 if they answer,
else embedded ones started exactly as ``scripts/devenv.py`` does (its functions are
reused, not copied). DATABASE_URL / REDIS_URL are ignored on purpose: a benchmark
talks to 127.0.0.1 only. Everything made here is undone through the ``ExitStack``:
the database ``kaihooks_bench_<random>`` is dropped and Redis db 3 is flushed.
Children get a fresh secret key and a random internal token (``KAIHOOKS_INTERNAL_TOKENS``,
for the publishing routes); neither is written to the results. The run's queue name
(``KAIHOOKS_QUEUE_NAME``, also the workers' wake-up channel) is the database's name.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import subprocess
import sys
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import redis

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import devenv  # noqa: E402  (scripts/devenv.py, imported read-only)

REDIS_DB = 3
# Settings every benchmarked process gets: the per-key rate limit must never throttle the load.
BENCH_SETTINGS = {
    "KAIHOOKS_RATE_LIMIT_PER_S": "1000000",
    "KAIHOOKS_RATE_LIMIT_BURST": "1000000",
    "KAIHOOKS_LISTEN_HOST": "127.0.0.1",
}


@dataclass
class Context:
    """What a scenario gets: child-process environment, seeded credentials, options, cleanup stack."""

    stack: ExitStack
    env: dict[str, str]
    database_url: str
    redis_url: str
    business_id: str
    api_key: str
    internal_token: str  # KAIHOOKS_INTERNAL_TOKENS of every child: for /internal/v1 (publishing)
    tmp_dir: Path  # child logs and scratch files; removed after a successful run
    results_dir: Path = ROOT / "bench" / "results"
    quick: bool = False
    long: bool = False  # P8 over quality.md's full 10 minutes
    profile: str = ""  # "", "python" or "native" (py-spy with C/Cython frames)
    concurrency: int | None = None
    stamp: str = ""
    notes: list[str] = field(default_factory=list)
    # What one scenario leaves for later ones in the same run (P1's rate for P2-P4, the delivery
    # scenarios' businesses and endpoints, the receiver's port, the limit's best concurrency).
    shared: dict[str, Any] = field(default_factory=dict)


def _say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


async def _create_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def _flush_redis(url: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


async def _seed(env: dict[str, str]) -> tuple[str, str]:
    """One business and one API key (default scopes), made with the project's own code."""
    from shared.api_key_service import create_key
    from shared.db import create_pool
    from shared.repos import businesses
    from shared.settings import Settings

    settings = Settings(  # type: ignore[call-arg]
        DATABASE_URL=env["DATABASE_URL"], REDIS_URL=env["REDIS_URL"], secret_key=env["KAIHOOKS_SECRET_KEY"]
    )
    db = await create_pool(settings, min_size=1, max_size=2)
    try:
        business = await businesses.create(db, "Bench Plumbing Co.")
        created = await create_key(db, settings, business_id=business.id, name="Bench key", scopes=None,
                                   expires_at=None, actor_user_id=None, ip=None)
    finally:
        await db.close()
    return business.public_id, created.secret


def prepare(stack: ExitStack, tmp_dir: Path) -> Context:
    """Find or start the servers, make a fresh database, migrate it, seed it; register the undo steps."""
    for name in ("DATABASE_URL", "REDIS_URL"):
        os.environ.pop(name, None)
    server_url, _ = devenv.postgres_server(stack)
    redis_url = devenv.redis_server(stack, REDIS_DB)

    database = f"kaihooks_bench_{secrets.token_hex(6)}"
    asyncio.run(_create_database(server_url, database))
    stack.callback(lambda: asyncio.run(_drop_database(server_url, database)))
    _flush_redis(redis_url)
    stack.callback(_flush_redis, redis_url)
    stack.callback(_say, f"dropping database {database}, flushing Redis db {REDIS_DB}")

    # Children see no KAIHOOKS_* from the caller's shell: only what is set here counts.
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAIHOOKS_")}
    env.update(BENCH_SETTINGS)
    env.update({
        "DATABASE_URL": devenv.with_database(server_url, database),
        "REDIS_URL": redis_url,
        "KAIHOOKS_SECRET_KEY": base64.b64encode(os.urandom(32)).decode(),
        "KAIHOOKS_INTERNAL_TOKENS": secrets.token_urlsafe(32),
        # The run's own crons queue and wake-up channel: Redis pub/sub ignores database numbers, and other
        # runs may share this Redis.
        "KAIHOOKS_QUEUE_NAME": f"{database}:queue",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(ROOT),
    })
    migrated = subprocess.run(  # noqa: S603 - fixed argv, our own venv's CLI
        [str(BIN / "kaihooks"), "migrate"], env=env, cwd=ROOT, capture_output=True, text=True, check=False
    )
    if migrated.returncode != 0:
        raise SystemExit(f"bench: `kaihooks migrate` failed: {migrated.stderr.strip()}")
    business_id, api_key = asyncio.run(_seed(env))
    _say(f"database {database} migrated and seeded (business {business_id}); Redis {redis_url}")
    return Context(stack=stack, env=env, database_url=env["DATABASE_URL"], redis_url=redis_url,
                   business_id=business_id, api_key=api_key, internal_token=env["KAIHOOKS_INTERNAL_TOKENS"],
                   tmp_dir=tmp_dir)
