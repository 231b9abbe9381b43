"""The service as an operator installs it: the built wheel, in a fresh venv outside the checkout, with the locked
runtime dependencies. It migrates an empty database and its ``web`` and ``worker`` deliver a signed webhook."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import uuid
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.helpers import INTERNAL_TOKEN, make_tenant, until, with_database
from tests.processes import free_port, wait_until_healthy
from tests.receiver import running_receiver
from tests.test_publishing import call, event, publish

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("api", "dispatcher", "shared")
SQL = sorted(p.name for p in (ROOT / "sql").glob("*.sql"))


def _run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built from a copy of what the wheel is made of (setuptools writes build/ beside the sources)."""
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("dist")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in (*PACKAGES, "sql"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", out, source, cwd=out)
    (built,) = out.glob("kaihooks-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv outside the checkout holding the wheel and requirements/runtime.txt (the deployment lock)."""
    venv = tmp_path_factory.mktemp("site") / "venv"
    _run(sys.executable, "-m", "venv", venv, cwd=venv.parent)
    pip = (venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-deps")
    _run(*pip, "--require-hashes", "-r", ROOT / "requirements" / "runtime.txt", cwd=venv.parent)
    _run(*pip, wheel, cwd=venv.parent)
    return venv


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment of an installed service: no PYTHONPATH, no KAIHOOKS_* of the test run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAIHOOKS_", "PYTHON")) and k not in (
        "DATABASE_URL", "REDIS_URL")}
    env.update(extra)
    return env


def test_the_wheel_holds_every_module_the_migrations_and_the_dashboard(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(p.relative_to(ROOT)) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    assert modules - names == set(), "modules missing from the wheel (pyproject.toml's packages list?)"
    assert SQL and {f"shared/sql/{name}" for name in SQL} <= names
    assert {"api/dashboard/pages/home.html", "api/dashboard/assets/dashboard.js"} <= names


@pytest.fixture
def empty_database() -> Iterator[str]:
    server = os.environ.get("KAIHOOKS_TEST_PG_SERVER") or "postgresql://postgres@127.0.0.1:5432/postgres"
    name = f"kaihooks_wheel_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(server)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    yield with_database(server, name)
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextlib.contextmanager
def _process(venv: Path, module: str, cwd: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([str(venv / "bin" / "python"), "-m", module], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()


@contextlib.asynccontextmanager
async def _served(venv: Path, cwd: Path, env: dict[str, str]) -> AsyncIterator[str]:
    port = free_port()
    with _process(venv, "api", cwd, {**env, "PORT": str(port)}) as web, _process(venv, "dispatcher", cwd, env):
        url = f"http://127.0.0.1:{port}"
        await wait_until_healthy(url)
        assert web.poll() is None
        yield url


async def test_the_installed_wheel_migrates_an_empty_database_and_delivers(
    installed: Path, empty_database: str, redis_url: str, tmp_path: Path
) -> None:
    kaihooks = installed / "bin" / "kaihooks"
    env = _clean_env(DATABASE_URL=empty_database, REDIS_URL=redis_url,
                     KAIHOOKS_SECRET_KEY=_run(kaihooks, "secret-key", cwd=tmp_path).strip(),
                     KAIHOOKS_INTERNAL_TOKENS=INTERNAL_TOKEN, KAIHOOKS_ALLOW_PRIVATE_TARGETS="1",
                     KAIHOOKS_DEV="1", KAIHOOKS_QUEUE_NAME=f"kaihooks-wheel:{uuid.uuid4().hex[:8]}")
    # The code that runs is the installed copy, not the checkout.
    where = _run(installed / "bin" / "python", "-c", "import shared; print(shared.__file__)", cwd=tmp_path, env=env)
    assert where.startswith(str(installed)), where

    out = _run(kaihooks, "migrate", cwd=tmp_path, env=env)
    assert out.strip() == f"applied {len(SQL)} migration(s): " + ", ".join(SQL)
    assert _run(kaihooks, "migrate", cwd=tmp_path, env=env).strip() == "applied 0 migration(s)"
    conn = await asyncpg.connect(empty_database)
    try:
        assert sorted(await conn.fetchval("SELECT array_agg(name) FROM schema_migrations")) == SQL
    finally:
        await conn.close()

    async with _served(installed, tmp_path, env) as url, make_tenant(url, empty_database) as tenant, \
            running_receiver() as receiver:
        key = (await tenant.create_key(scopes=["webhooks:write"]))["key"]
        r = await tenant.owner.post(f"{tenant.path}/webhook-endpoints", key=key, json={"url": receiver.url("/ok")})
        assert r.status == 201, r.body
        r = await publish(tenant.owner, event(tenant.business_id, data=call("call_wheel_1")))
        assert r.status == 202, r.body
        (got,) = await receiver.wait_for(1, "/ok", timeout_s=20)
        assert got.headers["webhook-signature"].startswith("v1,")
        assert b"call_wheel_1" in got.body
        await until(lambda: len(receiver.received) == 1, 1, "exactly one request")
