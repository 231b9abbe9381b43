"""The on-call commands, end to end: a real worker, real receivers, the real `kaihooks` process."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from typing import Any

import asyncpg
import pytest

from shared import ids
from shared.repos.handoff import DUE_CHANNEL, ENDPOINT_CHANGED
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


def cli_actor_pattern(actor: str) -> str:
    """The operator a CLI audit entry names: ``cli:<user>@<host>``."""
    assert re.fullmatch(r"cli:[^@\s]+@\S+", actor), actor
    return actor


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
    # The headers shown are the ones the receiver got (the signature redacted), attempt by attempt.
    shown = json.loads((await kaihooks(settings, "deliveries", "show", failed[0]["id"], "--json")).stdout)
    sent = shown["attempts"][0]["headers_sent"]
    [got, *_] = [x for x in world.receiver.received if x.headers.get("webhook-id") == shown["event_id"]]
    got_headers = {k.lower(): v for k, v in got.headers.items()}
    assert sent.pop("webhook-signature") == "v1,[redacted]" and got_headers["webhook-signature"].startswith("v1,")
    assert sent == {k: got_headers[k] for k in sent}
    assert set(sent) == {"content-type", "user-agent", "webhook-id", "webhook-timestamp"}

    fixed = f"{world.tenant.path}/webhook-endpoints/{ep['id']}"
    assert (await world.api.patch(fixed, key=world.key, json={"url": world.receiver.url("/ok")})).status == 200
    r = await kaihooks(settings, "deliveries", "retry", failed[0]["id"], failed[1]["id"], "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"queued": [failed[0]["id"], failed[1]["id"]], "refused": []}
    await world.receiver.wait_for(2, "/ok")
    assert (await world.delivery_settled(failed[0]["id"]))["status"] == "succeeded"


async def test_endpoints_list_shows_health_and_enable_reenables(world: World, settings: Settings,
                                                                db: asyncpg.Connection) -> None:
    ep, failed = await _failed_deliveries(world, 2)
    r = await kaihooks(settings, "endpoints", "list", "--business", world.tenant.business_id, "--json")
    assert r.returncode == 0, r.stderr
    [row] = json.loads(r.stdout)
    assert row["health"]["success_rate"] == 0.0 and row["health"]["attempts_last_hour"] == 8
    assert row["health"]["last_failure"].startswith("HTTP 500")
    table = (await kaihooks(settings, "endpoints", "list", "--business", world.tenant.business_id)).stdout
    assert "0.0%" in table and ep["id"] in table
    one = f"{world.tenant.path}/webhook-endpoints/{ep['id']}"
    await world.api.patch(one, key=world.key, json={"enabled": False})
    r = await kaihooks(settings, "deliveries", "retry", failed[0]["id"])
    assert r.returncode == 1 and "disabled" in r.stderr, r  # as the API's retry: 409
    notices: list[str] = []
    await db.add_listener(DUE_CHANNEL, lambda *a: notices.append(a[3]))
    r = await kaihooks(settings, "endpoints", "enable", ep["id"], "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"id": ep["id"], "enabled": True, "was_enabled": False,
                                    "was_disabled_reason": "disabled by a user"}
    got = await world.api.get(one, key=world.key)
    assert got.body["enabled"] is True and got.body["health"]["backlog"] == 0
    # The same change as `PATCH {"enabled": true}`: the same audit entry (naming the operator) and the same
    # notice telling the workers to read the endpoint again.
    await world.api.patch(one, key=world.key, json={"enabled": False})
    assert (await world.api.patch(one, key=world.key, json={"enabled": True})).status == 200
    cli_row, api_row = await db.fetch(
        """SELECT action, details::text AS details, actor_key_id FROM audit_log WHERE target_id = $1
           AND (details->>'enabled')::boolean ORDER BY created_at, id""", ep["id"])
    assert cli_row["action"] == api_row["action"] == "endpoint.updated"
    cli_details, api_details = json.loads(cli_row["details"]), json.loads(api_row["details"])
    assert api_details == {"enabled": True}
    assert cli_details == {**api_details, "actor": cli_actor_pattern(cli_details["actor"])}
    assert cli_row["actor_key_id"] is None and api_row["actor_key_id"] is not None
    changed = f"{ENDPOINT_CHANGED}{ids.decode('ep', ep['id'])}"
    deadline = time.monotonic() + 5
    while notices.count(changed) < 3 and time.monotonic() < deadline:  # enable, disable, enable
        await asyncio.sleep(0.02)
    assert notices.count(changed) == 3, notices


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
    r = await kaihooks(settings, "endpoints", "recover", ep["id"], "--since", "1h", "--dry-run", "--json")
    assert json.loads(r.stdout)["count"] == 0  # all succeeded now


async def test_recover_detached_as_json(world: World, settings: Settings) -> None:
    ep, _ = await _failed_deliveries(world, 3)
    fixed = f"{world.tenant.path}/webhook-endpoints/{ep['id']}"
    assert (await world.api.patch(fixed, key=world.key, json={"url": world.receiver.url("/ok")})).status == 200
    r = await kaihooks(settings, "endpoints", "recover", ep["id"], "--since", "1h", "--detach", "--json")
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)
    assert job["endpoint_id"] == ep["id"] and job["total"] == 3 and job["rate_per_s"] == 10
    assert job["status"] in {"running", "done"} and job["job_id"].startswith("rcv_")
    await world.receiver.wait_for(3, "/ok")


@pytest.mark.parametrize("args, status, fragment", [
    (["deliveries", "show", "dlv_nope"], 2, "not a delivery id"),
    (["deliveries", "show", "dlv_" + "0" * 26], 1, "no such delivery"),
    (["deliveries", "retry", "dlv_" + "0" * 26], 1, "no such delivery"),
    (["deliveries", "list", "--since", "yesterday"], 2, "not a time"),
    (["deliveries", "list", "--since", "2026-11-27T09:00:00"], 2, "time zone"),
    (["deliveries", "list", "--limit", "0"], 2, "--limit"),
    (["deliveries", "list", "--status", "lost"], 2, "invalid choice"),
    (["endpoints", "recover", "ep_" + "0" * 26, "--since", "2h"], 1, "No such endpoint"),
    (["endpoints", "recover", "ep_x", "--since", "2h"], 2, "not an endpoint id"),
    (["endpoints", "recover", "ep_" + "0" * 26], 2, "--since"),
    (["endpoints", "recover", "ep_" + "0" * 26, "--since", "2h", "--rate", "0"], 2, "above 0"),
    (["endpoints", "enable", "ep_" + "0" * 26], 1, "no such endpoint"),
])
async def test_bad_input_is_one_line(settings: Settings, args: list[str], status: int, fragment: str) -> None:
    r = await kaihooks(settings, *args)
    assert r.returncode == status, (r.returncode, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert fragment in r.stderr


async def test_a_value_the_service_refuses_is_a_usage_mistake(world: World, settings: Settings) -> None:
    ep = await world.endpoint()
    r = await kaihooks(settings, "endpoints", "recover", ep["id"], "--since", "1h", "--rate", "5000")
    assert r.returncode == 2 and "at most 1000" in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr


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
