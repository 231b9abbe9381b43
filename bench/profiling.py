"""Sample a server process with py-spy while load runs, and say where its CPU time goes.

py-spy is a developer tool, not a project dependency: ``.venv/bin/pip install py-spy``.
The collapsed stacks it writes (``--format raw``) load into speedscope or flamegraph.pl;
``summarise`` turns them into the top functions by self and inclusive share, and the
self share by package.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import procs

ROOT = Path(__file__).resolve().parent.parent
TOP = 15


def py_spy() -> str | None:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return shutil.which("py-spy", path=path)


def start(stack: ExitStack, pid: int, out: Path, duration_s: float, log_dir: Path, env: dict[str, str],
          rate: int = 200, native: bool = False) -> procs.Child:
    exe = py_spy()
    if exe is None:
        raise SystemExit("bench: --profile needs py-spy: .venv/bin/pip install py-spy")
    argv = [exe, "record", "--pid", str(pid), "--duration", str(max(1, round(duration_s))), "--rate", str(rate),
            "--format", "raw", "--function", "--output", str(out)]
    if native:
        argv.append("--native")
    return procs.start(stack, "py-spy", argv, env, ROOT, log_dir)


def _package(frame: str) -> str:
    """``fn (redis/asyncio/client.py:12)`` -> ``redis``; ``fn (api/keyauth.py:79)`` -> ``api``."""
    path = frame.rpartition(" (")[2].rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", str(ROOT) + "/", "/lib/python3.11/"):  # full paths, if py-spy gives them
        path = path.split(marker, 1)[-1]
    head, sep, _ = path.partition("/")
    return head if sep else head.removesuffix(".py") or frame


def _short(frame: str) -> str:
    name, _, where = frame.rpartition(" (")
    path = where.rstrip(")")
    for marker in ("site-packages/", str(ROOT) + "/", "/lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


def summarise(collapsed: Path) -> dict[str, object]:
    """Top functions by self and inclusive share of the samples, and self share per package."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    package: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[_short(frames[-1])] += count
        package[_package(frames[-1])] += count
        for frame in set(frames):
            inclusive[_short(frame)] += count

    def shares(counter: Counter[str], n: int = TOP) -> list[tuple[str, float]]:
        return [(name, round(100 * c / total, 1)) for name, c in counter.most_common(n)] if total else []

    return {"samples": total, "self": shares(own), "inclusive": shares(inclusive, TOP + 10),
            "self_by_package": shares(package)}


def markdown(summary: dict[str, object]) -> str:
    lines = [f"py-spy samples: {summary['samples']}", "", "| self % | function |", "|---:|---|"]
    lines += [f"| {pct} | `{name}` |" for name, pct in summary["self"]]  # type: ignore[attr-defined]
    lines += ["", "| inclusive % | function |", "|---:|---|"]
    lines += [f"| {pct} | `{name}` |" for name, pct in summary["inclusive"]]  # type: ignore[attr-defined]
    lines += ["", "| self % | package |", "|---:|---|"]
    lines += [f"| {pct} | {name} |" for name, pct in summary["self_by_package"]]  # type: ignore[attr-defined]
    return "\n".join(lines)
