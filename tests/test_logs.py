"""KAIHOOKS_LOG_LEVEL: checked when a process starts, and applied by both ``python -m api`` and
``python -m dispatcher`` (real processes, their JSON lines read from stderr)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time

import orjson
import pytest

from shared.logs import JsonFormatter, configure_logging
from shared.settings import Settings
from tests.processes import ROOT, free_port, process_env, wait_until_healthy
from tests.test_metrics import _answers


@pytest.mark.parametrize("process", ["api", "dispatcher"])
def test_an_unknown_level_stops_the_process_with_one_line(settings: Settings, process: str) -> None:
    done = subprocess.run([sys.executable, "-m", process], cwd=ROOT, capture_output=True, timeout=30,
                          env=process_env(settings, KAIHOOKS_LOG_LEVEL="loud", PORT=str(free_port())))
    assert done.returncode == 1
    assert done.stderr.decode().strip() == (
        "kaihooks: error: configuration: KAIHOOKS_LOG_LEVEL must be debug, info, warning or error, not 'loud'")


def test_the_level_defaults_to_info_and_reads_any_case(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAIHOOKS_LOG_LEVEL", raising=False)
    required = {"DATABASE_URL": "postgresql://x", "REDIS_URL": "redis://y", "secret_key": settings.secret_key}
    assert Settings(**required).log_level == "info"
    monkeypatch.setenv("KAIHOOKS_LOG_LEVEL", " WARNING ")
    assert Settings(**required).log_level == "warning"


async def _run_until_up(settings: Settings, process: str, level: str | None) -> list[dict[str, object]]:
    """Start the process at ``level`` (None: not set) with JSON logs, wait until it serves, stop it: its log
    lines."""
    port = free_port()
    env = process_env(settings, KAIHOOKS_DEV="0", PORT=str(port), KAIHOOKS_METRICS_PORT=str(port),
                      KAIHOOKS_LISTEN_HOST="127.0.0.1", **({"KAIHOOKS_LOG_LEVEL": level} if level else {}))
    proc = subprocess.Popen([sys.executable, "-m", process], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        if process == "api":
            await wait_until_healthy(f"http://127.0.0.1:{port}")
        else:
            deadline = time.monotonic() + 20
            while not await _answers("127.0.0.1", port):
                assert proc.poll() is None and time.monotonic() < deadline, "the worker did not start"
                await asyncio.sleep(0.1)
    finally:
        proc.terminate()
        _, err = await asyncio.to_thread(proc.communicate, timeout=15)
    assert proc.returncode == 0, err.decode()[-2000:]
    return [orjson.loads(line) for line in err.decode().splitlines() if line.startswith("{")]


@pytest.mark.parametrize("process, started", [("api", "listening"), ("dispatcher", "worker started")])
async def test_both_processes_log_from_the_level_up(settings: Settings, process: str, started: str) -> None:
    default = await _run_until_up(settings, process, None)
    assert any(line["msg"] == started and line["level"] == "info" for line in default), default
    quiet = await _run_until_up(settings, process, "warning")
    assert not [line for line in quiet if line["level"] in ("debug", "info")], quiet


@pytest.mark.parametrize("level", ["debug", "info", "warning", "error"])
def test_configure_logging_sets_the_root_level(level: str) -> None:
    root = logging.getLogger()
    handlers, before = root.handlers[:], root.level
    try:
        configure_logging(dev=False, level=level)
        assert root.level == getattr(logging, level.upper())
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
    finally:
        root.handlers[:] = handlers
        root.setLevel(before)


@pytest.mark.parametrize(("level", "shown"), [(None, False), ("debug", True), ("nonsense", False)])
def test_the_cli_logs_from_warning_up_unless_the_level_says_otherwise(level: str | None, shown: bool) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KAIHOOKS_LOG_LEVEL"}
    if level is not None:
        env["KAIHOOKS_LOG_LEVEL"] = level
    done = subprocess.run([sys.executable, "-m", "shared.cli", "secret-key"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    # asyncio says which selector it uses at debug level, as the command's event loop starts
    assert ("Using selector" in done.stderr) is shown


def test_plain_dev_lines_carry_their_context_and_no_secret() -> None:
    from shared.logs import PlainFormatter

    record = logging.makeLogRecord({"name": "kaihooks.dispatcher", "levelname": "WARNING", "levelno": 30,
                                    "msg": "delivery attempt failed", "delivery_id": "dlv_1", "reason": "timeout",
                                    "key": "kc_live_abcdefghijklmnop"})
    line = PlainFormatter("%(levelname)s %(name)s: %(message)s").format(record)
    assert line == "WARNING kaihooks.dispatcher: delivery attempt failed delivery_id=dlv_1 reason=timeout " \
                   "key=kc_live_[redacted]"
