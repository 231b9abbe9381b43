"""Real `web` and `worker` processes for tests that need more than one process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAIHOOKS_")}
    env.update({
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "KAIHOOKS_SECRET_KEY": settings.secret_key,
        "KAIHOOKS_INTERNAL_TOKENS": ",".join(settings.internal_tokens),
        "KAIHOOKS_DEV": "1" if settings.dev else "0",
        "KAIHOOKS_QUEUE_NAME": settings.queue_name,
        "KAIHOOKS_ALLOW_PRIVATE_TARGETS": "1" if settings.allow_private_targets else "0",
    })
    env.update(extra)
    return env


@dataclass
class WebProcess:
    proc: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def wait_until_healthy(url: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(url + "/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not become healthy in {timeout_s} s")
            await asyncio.sleep(0.05)


@contextlib.contextmanager
def web_processes(settings: Settings, count: int, **env: str) -> Iterator[list[WebProcess]]:
    """Start ``count`` API processes (``python -m api``) on free ports; stop them afterwards."""
    started: list[WebProcess] = []
    try:
        for _ in range(count):
            port = free_port()
            proc = subprocess.Popen(
                [sys.executable, "-m", "api"], cwd=ROOT, env=process_env(settings, PORT=str(port), **env),
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )
            started.append(WebProcess(proc, port))
        yield started
    finally:
        for web in started:
            if web.proc.poll() is None:
                web.proc.send_signal(signal.SIGTERM)
        for web in started:
            try:
                web.proc.wait(15)
            except subprocess.TimeoutExpired:
                web.proc.kill()
                web.proc.wait()
            if web.proc.stderr is not None:
                web.proc.stderr.close()
