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

from shared import apikeys, ids, metrics
from shared.settings import Settings
from tests.helpers import INTERNAL_TOKEN, Api, Tenant, until
from tests.processes import ROOT, free_port, process_env
from tests.receiver import running_receiver
from tests.test_publishing import event, publish
from tests.world import World, fast_settings


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


async def _scrape_api(api: Api) -> str:
    r = await api.get("/metrics", key=INTERNAL_TOKEN)
    assert r.status == 200
    return r.raw.decode()


async def test_api_counts_requests_by_route_template_and_status(api: Api, tenant: Tenant) -> None:
    """What the client got, problem responses and 401s included, labelled by the route's template (never
    the raw path: its ids would make a series per business), ``unmatched`` when no route matched."""
    calls = f"{tenant.path}/calls"
    template = "/v1/businesses/{business_id}/calls"
    series = {
        "ok": ("kaihooks_http_requests_total", '{method="GET",route="/healthz",status="200"}'),
        "bad_key": ("kaihooks_http_requests_total", f'{{method="GET",route="{template}",status="401"}}'),
        "unmatched": ("kaihooks_http_requests_total", '{method="GET",route="unmatched",status="404"}'),
        "odd_method": ("kaihooks_http_requests_total", '{method="other",route="unmatched",status="405"}'),
        "problem": ("kaihooks_http_requests_total", '{method="POST",route="/internal/v1/events",status="400"}'),
        "latency": ("kaihooks_http_request_duration_seconds_count", f'{{method="GET",route="{template}"}}'),
    }
    before = await _scrape_api(api)
    assert (await api.get("/healthz")).status == 200
    assert (await api.get(calls, key=apikeys.generate().secret)).status == 401
    assert (await api.get(f"/no/such/{tenant.business_id}?token=secret")).status == 404
    assert (await api.request("PROPFIND", "/healthz")).status == 405
    assert (await api.post("/internal/v1/events", data=b"{not json", key=INTERNAL_TOKEN,
                           headers={"Content-Type": "application/json"})).status == 400
    after = await _scrape_api(api)
    for what, (name, labels) in series.items():
        assert sample(after, name, labels) == sample(before, name, labels) + 1, what
    http_lines = [line for line in after.splitlines() if line.startswith("kaihooks_http_")]
    assert not any(tenant.business_id in line or "PROPFIND" in line for line in http_lines)


def _attempt_rows(world: World, endpoint_id: str) -> Any:
    return world.db.fetchval("SELECT count(*) FROM attempts WHERE endpoint_id = $1", ids.decode("ep", endpoint_id))


def _total(counter: Any) -> float:
    return sum(s.value for m in counter.collect() for s in m.samples if s.name.endswith("_total"))


async def test_attempts_are_requests_sent_and_deferrals_are_counted_apart(world: World) -> None:
    """An endpoint answering 429 with Retry-After holds back the deliveries queued behind the first: they are
    handed back unsent (deferrals), and the attempts counter still equals the requests the endpoint got."""
    attempts_before, deferred_before = _total(metrics.ATTEMPTS), metrics.DEFERRALS.labels("paused")._value.get()
    ep = await world.endpoint("/retry-after/429/1")
    r = await publish(world.api, {"events": [event(world.tenant.business_id) for _ in range(10)]})
    assert r.status == 202
    await world.settled(ep["id"], 10, timeout_s=30)
    sent = await _attempt_rows(world, ep["id"])
    assert sent == len(world.receiver.at("/retry-after/429/1"))
    assert _total(metrics.ATTEMPTS) - attempts_before == sent
    assert metrics.DEFERRALS.labels("paused")._value.get() > deferred_before


@pytest.fixture
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    return fast_settings(request)


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
                # The queue depth comes with the worker's first round of gauges (it is the only worker here).
                if sample(text, "kaihooks_delivery_attempts_total", '{outcome="succeeded"}') >= 3 and \
                        re.search("^kaihooks_queue_depth ", text, re.M):
                    break
                assert time.monotonic() < deadline, text[-2000:]
                await asyncio.sleep(0.1)
            assert sample(text, "kaihooks_attempt_duration_seconds_count", '{result="2xx"}') >= 3
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
            # every claim query is counted, those that found work and those that came back empty
            assert sample(text, "kaihooks_claims_total", '{result="rows"}') >= 1
            assert sample(text, "kaihooks_claims_total", '{result="empty"}') >= 1
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


async def _exports_queue_depth(http: aiohttp.ClientSession, port: int) -> bool | None:
    """Whether the worker on ``port`` exports the queue depth (None: its /metrics did not answer)."""
    try:
        async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
            return re.search("^kaihooks_queue_depth ", await resp.text(), re.M) is not None
    except aiohttp.ClientError:
        return None


def _start_worker(settings: Settings, port: int) -> subprocess.Popen[bytes]:
    env = process_env(settings, KAIHOOKS_METRICS_PORT=str(port), KAIHOOKS_LEASE_S="1.5")  # a round of gauges: 0.5 s
    return subprocess.Popen([sys.executable, "-m", "dispatcher"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.parametrize("stop", ["terminate", "kill"])
async def test_one_worker_exports_the_database_wide_gauges_and_another_takes_over(settings: Settings,
                                                                                  stop: str) -> None:
    """Two workers on one database: exactly one exports the queue depth (a sum over workers counts it once);
    when it stops, or dies, the other takes over. Each exports its own gauges all along."""
    ports = [free_port(), free_port()]
    first = _start_worker(settings, ports[0])
    second: subprocess.Popen[bytes] | None = None
    try:
        async with aiohttp.ClientSession() as http:
            await until(lambda: _exports_queue_depth(http, ports[0]), 20, "the first worker exports the queue depth")
            second = _start_worker(settings, ports[1])
            await until(lambda: _answers("127.0.0.1", ports[1]), 20, "the second worker's /metrics answers")
            # Several rounds of both asking for the lock (0.5 s each): the second never exports it.
            watched = time.monotonic() + 3
            while time.monotonic() < watched:
                assert [await _exports_queue_depth(http, p) for p in ports] == [True, False]
                await asyncio.sleep(0.1)
            async with http.get(f"http://127.0.0.1:{ports[1]}/metrics") as resp:
                assert re.search("^kaihooks_held_deliveries ", await resp.text(), re.M)
            getattr(first, stop)()
            assert await asyncio.to_thread(first.wait, 15) == (0 if stop == "terminate" else -9)
            await until(lambda: _exports_queue_depth(http, ports[1]), 20, "the second worker takes over")
    finally:
        for worker in (first, second):
            if worker is not None and worker.poll() is None:
                worker.terminate()
                assert await asyncio.to_thread(worker.wait, 15) == 0
