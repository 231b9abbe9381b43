"""Child processes (servers under test, baselines, py-spy) and their CPU accounting.

Every child runs in its own session and is registered on the run's ``ExitStack``, so
it is stopped (SIGTERM to its process group, then SIGKILL) however the run ends; on
Linux it also gets SIGTERM if the runner itself dies.
"""

from __future__ import annotations

import ctypes
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import psutil

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(stack: ExitStack, name: str, argv: list[str], env: dict[str, str], cwd: Path, log_dir: Path) -> Child:
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(  # noqa: S603 - argv built by the bench itself
            argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=_die_with_parent,
        )
    child = Child(name, popen, log_path)
    stack.callback(stop, child)
    return child


def stop(child: Child, grace_s: float = 5.0) -> None:
    if child.popen.poll() is not None:
        return
    try:
        os.killpg(child.pid, signal.SIGTERM)
        child.popen.wait(grace_s)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        child.popen.wait(grace_s)


def wait_http(child: Child, port: int, path: str, headers: dict[str, str] | None = None,
              timeout_s: float = 30.0) -> bytes:
    """Poll until ``GET path`` answers 200; return its body. Fails fast if the child exits."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if child.popen.poll() is not None:
            raise SystemExit(f"bench: {child.name} exited with {child.popen.returncode}:\n{child.log_tail()}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", path, headers=headers or {})
            response = conn.getresponse()
            body = response.read()
            if response.status == 200:
                return body
            last = f"HTTP {response.status}: {body[:300]!r}"
        except OSError as exc:
            last = repr(exc)
        finally:
            conn.close()
        time.sleep(0.1)
    raise SystemExit(f"bench: {child.name} not ready on :{port}{path} after {timeout_s:.0f}s ({last}):\n"
                     f"{child.log_tail()}")


_listeners: dict[int, int] = {}
# A Postgres client backend's title: "postgres: 15/main: <user> <database> <host>(<port>) <state>"
_BACKEND = re.compile(r" \S+ (\S+) (?:\d{1,3}(?:\.\d{1,3}){3}|\[?[0-9a-f:]+\]?|\[local\])(?:\(\d+\))? ")


def listening_group(port: int, database: str | None = None) -> list[int]:
    """The process listening on 127.0.0.1:``port`` and its children now (a Postgres server's backends,
    including connections opened a moment ago); [] if unseen. The listener is looked up once per port.

    With ``database``, client backends connected to any other database (other tenants' test
    runs on a shared server) are left out; the server's own processes stay in.
    """
    try:
        if port not in _listeners:
            for conn in psutil.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                    _listeners[port] = conn.pid
                    break
            else:
                return []
        proc = psutil.Process(_listeners[port])
        children = proc.children(recursive=True)
    except psutil.Error:
        _listeners.pop(port, None)
        return []
    pids = [proc.pid]
    for child in children:
        if database is not None:
            try:
                title = " ".join(child.cmdline())
            except psutil.Error:
                continue
            match = _BACKEND.search(title)
            if match and match.group(1) != database:
                continue
        pids.append(child.pid)
    return pids


class CpuMeter:
    """CPU used by groups of processes (percent of one core) and by the whole box (percent of all cores)."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self._groups = groups
        self._procs = {}
        for pid in {pid for pids in groups.values() for pid in pids}:
            try:
                self._procs[pid] = psutil.Process(pid)
            except psutil.Error:
                continue
        self._start: tuple[float, dict[int | str, float]] | None = None

    def _snapshot(self) -> tuple[float, dict[int | str, float]]:
        per: dict[int | str, float] = {}
        for pid, proc in self._procs.items():
            try:
                t = proc.cpu_times()
            except psutil.Error:
                continue
            per[pid] = t.user + t.system
        box = psutil.cpu_times()
        per["box"] = sum(getattr(box, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq"))
        per["steal"] = getattr(box, "steal", 0.0)  # taken by other tenants of the host
        return time.perf_counter(), per

    def start(self) -> None:
        self._start = self._snapshot()

    def stop(self) -> dict[str, float]:
        """CPU seconds used since ``start``: per group, ``box`` (all cores), ``steal``; and ``wall_s``."""
        assert self._start is not None
        t1, per1 = self._snapshot()
        t0, per0 = self._start
        used = {name: sum(per1[p] - per0[p] for p in pids if p in per0 and p in per1)
                for name, pids in self._groups.items()}
        used["box"] = per1["box"] - per0["box"]
        used["steal"] = per1["steal"] - per0["steal"]
        used["wall_s"] = t1 - t0
        return used
