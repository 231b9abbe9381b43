"""The product's processes under the drill: API processes (``python -m api``) and workers
(``python -m dispatcher``), each in a slot that survives its process being killed and started again
(a worker slot keeps its ``KAIHOOKS_METRICS_PORT``), plus the resident set size (RSS) of every process,
sampled from /proc."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bench.procs import Child, free_port, start, stop  # noqa: E402  (generic child-process helpers)


def rss_mb(pid: int, module: str) -> float | None:
    """The resident set size in MiB of ``python -m <module>`` running as ``pid`` (None once it is gone, or
    while it is still the drill's own forked image, before its exec)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            if f"\0-m\0{module}".encode() not in cmdline.read():
                return None
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


@dataclass
class Life:
    """One process of a slot: its pid, when it started and was killed, and its RSS samples."""

    pid: int
    started: float
    killed: float | None = None
    samples: list[tuple[float, float]] = field(default_factory=list)  # (wall time, MiB)


@dataclass
class Slot:
    name: str  # api-0, worker-1, ...
    kind: str  # "api" | "worker"
    argv: list[str]
    env: dict[str, str]
    port: int | None = None  # API processes
    metrics_port: int | None = None  # workers: KAIHOOKS_METRICS_PORT (the same across restarts)
    child: Child | None = None
    lives: list[Life] = field(default_factory=list)
    _log_offset: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.child is not None and self.child.popen.poll() is None


class Fleet:
    """Starts, kills and restarts the API and worker processes; every one is stopped with the drill."""

    def __init__(self, stack: ExitStack, env: dict[str, str], log_dir: Path, apis: int, workers: int) -> None:
        self.stack = stack
        self.log_dir = log_dir
        self.slots: list[Slot] = []
        for i in range(apis):
            port = free_port()
            self.slots.append(Slot(f"api-{i}", "api", [sys.executable, "-m", "api"],
                                   {**env, "PORT": str(port)}, port=port))
        for i in range(workers):
            metrics_port = free_port()
            self.slots.append(Slot(f"worker-{i}", "worker", [sys.executable, "-m", "dispatcher"],
                                   {**env, "KAIHOOKS_METRICS_PORT": str(metrics_port)}, metrics_port=metrics_port))

    def of(self, kind: str) -> list[Slot]:
        return [s for s in self.slots if s.kind == kind]

    def slot(self, name: str) -> Slot:
        return next(s for s in self.slots if s.name == name)

    def start(self, slot: Slot) -> None:
        n = len(slot.lives)
        slot.child = start(self.stack, f"{slot.name}.{n}", slot.argv, slot.env, ROOT, self.log_dir)
        slot.lives.append(Life(slot.child.pid, time.time()))

    async def wait_ready(self, slot: Slot, timeout_s: float = 60.0) -> float:
        """Poll until the process serves (/healthz for an API, its "worker started" line for a worker);
        the seconds it took. Fails at once if the process exits."""
        began = time.monotonic()
        deadline = began + timeout_s
        assert slot.child is not None
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while True:
                if slot.child.popen.poll() is not None:
                    raise SystemExit(f"chaos: {slot.name} exited with {slot.child.popen.returncode}:\n"
                                     f"{slot.child.log_tail()}")
                if slot.kind == "api":
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                        async with http.get(slot.url + "/healthz") as r:
                            if r.status == 200:
                                return time.monotonic() - began
                elif any(line.get("msg") == "worker started" for line in log_lines(slot.child.log_path)):
                    return time.monotonic() - began
                if time.monotonic() > deadline:
                    raise SystemExit(f"chaos: {slot.name} not ready after {timeout_s:.0f} s:\n"
                                     f"{slot.child.log_tail()}")
                await asyncio.sleep(0.1)

    def sigkill(self, slot: Slot) -> float:
        """SIGKILL the slot's process (and anything it started); the kill time."""
        assert slot.child is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(slot.child.pid, signal.SIGKILL)
        slot.child.popen.wait(10)
        at = time.time()
        slot.lives[-1].killed = at
        return at

    def stop_all(self, grace_s: float = 12.0) -> None:
        """SIGTERM every process at once (a worker takes up to ~8 s to hand back its work), wait for them
        together, SIGKILL (the process group) whatever is still running after ``grace_s``."""
        live = [slot for slot in self.slots if slot.child is not None and slot.child.popen.poll() is None]
        for slot in live:
            assert slot.child is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(slot.child.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for slot in live:
            assert slot.child is not None
            try:
                slot.child.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                stop(slot.child, grace_s=0.1)  # SIGTERM again, then SIGKILL to the group
        for slot in self.slots:
            if slot.lives and slot.lives[-1].killed is None:
                slot.lives[-1].killed = time.time()

    def sample_rss(self) -> None:
        now = time.time()
        for slot in self.slots:
            if slot.alive and slot.lives:
                mb = rss_mb(slot.lives[-1].pid, slot.argv[-1])
                if mb is not None:
                    slot.lives[-1].samples.append((now, mb))

    def log_paths(self) -> list[Path]:
        return sorted(self.log_dir.glob("api-*.log")) + sorted(self.log_dir.glob("worker-*.log"))


def log_lines(path: Path) -> list[dict[str, object]]:
    """The JSON log lines of a process (other lines, such as a traceback printed at exit, are skipped)."""
    lines: list[dict[str, object]] = []
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return lines
    for raw in text.splitlines():
        if raw.startswith("{"):
            with contextlib.suppress(ValueError):
                lines.append(json.loads(raw))
    return lines
