"""The on-call commands, end to end: a real worker, real receivers, the real `kaihooks` process."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from typing import Any

import asyncpg
import pytest

from shared import ids
from shared.settings import Settings
from tests.processes import ROOT, process_env
from tests.receiver import HOSTILE
from tests.test_publishing import call
from tests.world import FAST, World


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return dict(FAST)


async def kaihooks(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "shared.cli", *args], cwd=ROOT, text=True, capture_output=True,
        env=process_env(settings), timeout=60, check=False)


async def _failed_deliveries(world: World, count: int, path: str = "/status/500"
                             ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    ep = await world.endpoint(path)
    for i in range(count):
        await world.publish(data=call(f"oc{i}"))
    return ep, await world.settled(ep["id"], count)


async def test_list_show_and_retry(world: World, settings: Settings) -> None:
    ep, failed = await _failed_deliveries(world, 2)
    r = await kaihooks(settings, "deliveries", "list", "--status", "failed", "--endpoint", ep["id"])
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:4] == ["ID", "STATUS", "ENDPOINT", "EVENT"]
    assert {line.split()[0] for line in lines[1:]} == {d["id"] for d in failed}
    r = await kaihooks(settings, "deliveries", "list", "--endpoint", ep["id"], "--json")
    assert {d["id"] for d in json.loads(r.stdout)} == {d["id"] for d in failed}

    r = await kaihooks(settings, "deliveries", "show", failed[0]["id"])
    assert r.returncode == 0, r.stderr
    assert "HTTP 500" in r.stdout and "webhook-signature: v1,[redacted]" in r.stdout
    assert "whsec_" not in r.stdout

    fixed = f"{world.tenant.path}/webhook-endpoints/{ep['id']}"
    assert (await world.api.patch(fixed, key=world.key, json={"url": world.receiver.url("/ok")})).status == 200
    r = await kaihooks(settings, "deliveries", "retry", failed[0]["id"], failed[1]["id"])
    assert r.returncode == 0, r.stderr
    await world.receiver.wait_for(2, "/ok")
    assert (await world.delivery_settled(failed[0]["id"]))["status"] == "succeeded"


async def test_endpoints_list_shows_health_and_enable_reenables(world: World, settings: Settings,
                                                                db: asyncpg.Connection) -> None:
    ep, _ = await _failed_deliveries(world, 2)
    r = await kaihooks(settings, "endpoints", "list", "--business", world.tenant.business_id, "--json")
    assert r.returncode == 0, r.stderr
    [row] = json.loads(r.stdout)
    assert row["health"]["success_rate"] == 0.0 and row["health"]["attempts_last_hour"] == 8
    assert row["health"]["last_failure"].startswith("HTTP 500")
    table = (await kaihooks(settings, "endpoints", "list", "--business", world.tenant.business_id)).stdout
    assert "0.0%" in table and ep["id"] in table
    await world.api.patch(f"{world.tenant.path}/webhook-endpoints/{ep['id']}", key=world.key,
                          json={"enabled": False})
    r = await kaihooks(settings, "endpoints", "enable", ep["id"])
    assert r.returncode == 0 and "enabled" in r.stdout
    got = await world.api.get(f"{world.tenant.path}/webhook-endpoints/{ep['id']}", key=world.key)
    assert got.body["enabled"] is True and got.body["health"]["backlog"] == 0


async def test_recover_dry_run_then_paced_run(world: World, settings: Settings) -> None:
    ep, _ = await _failed_deliveries(world, 5)
    before = len(world.receiver.received)
    r = await kaihooks(settings, "endpoints", "recover", ep["id"], "--since", "1h", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "would send 5 delivery(ies)" in r.stdout and "call.started" in r.stdout
    await asyncio.sleep(0.3)
    assert len(world.receiver.received) == before  # a dry run sends nothing
    fixed = f"{world.tenant.path}/webhook-endpoints/{ep['id']}"
    assert (await world.api.patch(fixed, key=world.key, json={"url": world.receiver.url("/ok")})).status == 200
    r = await kaihooks(settings, "endpoints", "recover", ep["id"], "--since", "1h", "--rate", "5")
    assert r.returncode == 0, r.stderr
    assert "done: 5 succeeded" in r.stdout
    got = world.receiver.at("/ok")
    assert len(got) == 5
    assert got[-1].at - got[0].at >= 0.7  # five sends at five a second


@pytest.mark.parametrize("args, fragment", [
    (["deliveries", "show", "dlv_nope"], "not a delivery id"),
    (["deliveries", "show", "dlv_" + "0" * 26], "no such delivery"),
    (["deliveries", "list", "--since", "yesterday"], "not a time"),
    (["endpoints", "recover", "ep_" + "0" * 26, "--since", "2h"], "No such endpoint"),
    (["endpoints", "recover", "ep_x", "--since", "2h"], "not an endpoint id"),
    (["endpoints", "enable", "ep_" + "0" * 26], "no such endpoint"),
])
async def test_bad_input_is_one_line(settings: Settings, args: list[str], fragment: str) -> None:
    r = await kaihooks(settings, *args)
    assert r.returncode != 0
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert fragment in r.stderr


_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


async def test_text_a_receiver_controls_is_printed_with_control_characters_escaped(
    world: World, settings: Settings, db: asyncpg.Connection
) -> None:
    """A receiver's answer, and text stored before validation tightened or named by a receiver's TLS
    certificate (URLs, error messages, reasons), never reaches the terminal as escape sequences."""
    ep, [failed] = await _failed_deliveries(world, 1, "/hostile")
    endpoint_id = ids.decode("ep", ep["id"])
    await db.execute("UPDATE endpoints SET url = url || $1, enabled = false, disabled_reason = $1 WHERE id = $2",
                     HOSTILE, endpoint_id)
    await db.execute("UPDATE deliveries SET last_error = $1 WHERE endpoint_id = $2", HOSTILE, endpoint_id)
    await db.execute("UPDATE attempts SET url = url || $1, error = $1 WHERE delivery_id = $2",
                     HOSTILE, ids.decode("dlv", failed["id"]))
    runs = [
        await kaihooks(settings, "deliveries", "show", failed["id"]),
        await kaihooks(settings, "deliveries", "show", failed["id"], "--json"),
        await kaihooks(settings, "deliveries", "list", "--endpoint", ep["id"]),
        await kaihooks(settings, "deliveries", "list", "--endpoint", ep["id"], "--json"),
        await kaihooks(settings, "endpoints", "list", "--business", world.tenant.business_id),
        await kaihooks(settings, "endpoints", "list", "--business", world.tenant.business_id, "--json"),
        await kaihooks(settings, "endpoints", "enable", ep["id"]),
        await kaihooks(settings, "endpoints", "recover", ep["id"], "--since", "1h", "--dry-run"),
        await kaihooks(settings, "deliveries", "list", "--since", "1h\x1b[2J"),
    ]
    for r in runs:
        assert not _CONTROL.search(r.stdout + r.stderr), (r.args, r.stdout + r.stderr)
    show = runs[0].stdout
    assert "\\x1b]0;pwned\\x07" in show and "\\u202e" in show and "\\x9b31m" in show
    # JSON output stays JSON, with the same text once decoded.
    data = json.loads(runs[1].stdout)
    assert data["attempts"][0]["response_body"] == HOSTILE and data["attempts"][0]["error_message"] == HOSTILE
