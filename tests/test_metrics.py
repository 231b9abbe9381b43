"""Prometheus metrics from the API (/metrics, internal token) and from a worker (its own port)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from typing import Any

import aiohttp
import pytest

from shared import apikeys
from shared.settings import Settings
from tests.helpers import INTERNAL_TOKEN, Api, Tenant
from tests.processes import ROOT, free_port, process_env
from tests.receiver import running_receiver
from tests.test_publishing import event, publish
from tests.world import FAST


def sample(text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


async def test_api_metrics_need_the_internal_token_and_count_key_failures(api: Api) -> None:
    assert (await api.get("/metrics")).status == 401
    before = sample((await api.get("/metrics", key=INTERNAL_TOKEN)).raw.decode(), "kaihooks_key_auth_failures_total")
    for _ in range(3):
        assert (await api.get("/v1/me", key=apikeys.generate().secret)).status == 401
    r = await api.get("/metrics", key=INTERNAL_TOKEN)
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
    assert sample(r.raw.decode(), "kaihooks_key_auth_failures_total") == before + 3


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return dict(FAST)


async def test_worker_serves_delivery_metrics_on_its_port(tenant: Tenant, api: Api, settings: Settings) -> None:
    key = (await tenant.create_key(scopes=["webhooks:write"]))["key"]
    port = free_port()
    env = process_env(settings, KAIHOOKS_METRICS_PORT=str(port), KAIHOOKS_LISTEN_HOST="127.0.0.1",
                      KAIHOOKS_WORKER_POLL_S="0.05", KAIHOOKS_LEASE_S="3", KAIHOOKS_DELIVERY_TIMEOUT="1",
                      KAIHOOKS_ENDPOINT_METRICS_S="0.5")
    worker = subprocess.Popen([sys.executable, "-m", "dispatcher"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with running_receiver() as receiver, aiohttp.ClientSession() as http:
            r = await api.post(f"{tenant.path}/webhook-endpoints", key=key, json={"url": receiver.url("/ok")})
            assert r.status == 201
            r_ok = r.body["id"]
            await publish(api, {"events": [event(tenant.business_id) for _ in range(3)]})
            await receiver.wait_for(3, "/ok", timeout_s=20)
            deadline = time.monotonic() + 20
            while True:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                        text = await resp.text()
                except aiohttp.ClientError:
                    text = ""
                if sample(text, "kaihooks_deliveries_total", '{outcome="succeeded"}') >= 3:
                    break
                assert time.monotonic() < deadline, text[-2000:]
                await asyncio.sleep(0.1)
            assert sample(text, "kaihooks_attempt_duration_seconds_count", '{result="2xx"}') >= 3
            assert "kaihooks_queue_depth" in text
            # An endpoint falling behind shows up with its backlog and lag.
            r = await api.post(f"{tenant.path}/webhook-endpoints", key=key, json={"url": receiver.url("/hang")})
            behind = r.body["id"]
            await publish(api, {"events": [event(tenant.business_id) for _ in range(30)]})
            label = f'{{endpoint_id="{behind}"}}'
            deadline = time.monotonic() + 20
            while True:
                async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                    text = await resp.text()
                if sample(text, "kaihooks_endpoint_backlog", label) >= 1:
                    break
                assert time.monotonic() < deadline, text[-2000:]
                await asyncio.sleep(0.2)
            assert sample(text, "kaihooks_endpoint_lag_seconds", label) >= 0
            assert sample(text, "kaihooks_deliveries_claimed_total") >= 4
            # The hanging endpoint's request is held: the worker's own gauges show it and its age.
            deadline = time.monotonic() + 20
            while True:
                async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                    text = await resp.text()
                if sample(text, "kaihooks_held_deliveries") >= 1 and sample(text, "kaihooks_oldest_held_seconds") > 0:
                    break
                assert time.monotonic() < deadline, text[-2000:]
                await asyncio.sleep(0.2)
            healthy = f'{{endpoint_id="{r_ok}"}}'
            assert sample(text, "kaihooks_endpoint_success_ratio", healthy) == 1.0
            assert 0 <= sample(text, "kaihooks_endpoint_p95_seconds", healthy) < 1
    finally:
        worker.terminate()
        assert await asyncio.to_thread(worker.wait, 15) == 0


async def _answers(host: str, port: int) -> bool:
    try:
        async with aiohttp.ClientSession() as http, http.get(f"http://{host}:{port}/metrics") as resp:
            return resp.status == 200
    except aiohttp.ClientError:
        return False


@pytest.mark.parametrize("metrics_host, reachable_elsewhere", [(None, False), ("0.0.0.0", True)])
async def test_worker_metrics_listen_on_loopback_unless_told(settings: Settings, metrics_host: str | None,
                                                             reachable_elsewhere: bool) -> None:
    """Unauthenticated /metrics is not offered to the network by default (the API's own host setting
    does not apply to it). 127.0.0.2 is loopback too, but reaches only a socket bound to every address."""
    port = free_port()
    extra = {"KAIHOOKS_METRICS_HOST": metrics_host} if metrics_host else {}
    env = process_env(settings, KAIHOOKS_METRICS_PORT=str(port), KAIHOOKS_LISTEN_HOST="0.0.0.0", **extra)
    worker = subprocess.Popen([sys.executable, "-m", "dispatcher"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not await _answers("127.0.0.1", port):
            assert worker.poll() is None and time.monotonic() < deadline, "the worker's /metrics never answered"
            await asyncio.sleep(0.1)
        assert await _answers("127.0.0.2", port) is reachable_elsewhere
    finally:
        worker.terminate()
        assert await asyncio.to_thread(worker.wait, 15) == 0
