"""Webhook delivery end to end: real API, real worker (engine and crons), real receivers on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import time
from typing import Any

import asyncpg
import pytest

from shared import ids
from shared.settings import Settings
from tests.helpers import Api, Tenant, ago
from tests.receiver import running_receiver
from tests.test_publishing import call, event, publish
from tests.worker import running_worker
from tests.world import FAST, World, _sleep, fast_settings


@pytest.fixture
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    return fast_settings(request)


def verify_standard_webhook(secret: str, headers: dict[str, str], body: bytes) -> list[str]:
    """Written from the Standard Webhooks spec, independently of the project's signer: the list of
    signatures in the header that match this secret."""
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return [s for s in headers["webhook-signature"].split(" ") if s == f"v1,{expected}"]


async def test_an_event_reaches_its_endpoint_signed(world: World) -> None:
    ep = await world.endpoint("/ok")
    assert ep["secret"].startswith("whsec_") and len(base64.b64decode(ep["secret"][6:])) == 32
    event_id = await world.publish(data=call("c-signed", extra_field="kept"))
    [got] = await world.receiver.wait_for(1, "/ok")
    h = {k.lower(): v for k, v in got.headers.items()}
    assert h["content-type"] == "application/json"
    assert h["user-agent"].startswith("KaiCalls-Webhooks/")
    assert h["webhook-id"] == event_id
    assert abs(int(h["webhook-timestamp"]) - time.time()) < 10
    assert len(verify_standard_webhook(ep["secret"], h, got.body)) == 1
    payload = json.loads(got.body)
    assert payload["id"] == event_id and payload["type"] == "call.started"
    assert payload["business_id"] == world.tenant.business_id
    assert payload["data"]["id"] == "c-signed" and payload["data"]["extra_field"] == "kept"
    assert payload["timestamp"].endswith("Z")
    [d] = await world.settled(ep["id"])
    assert d["status"] == "succeeded" and d["attempt_count"] == 1 and d["last_response_status"] == 200
    detail = await world.delivery(d["id"])
    assert detail["attempts"][0]["trigger"] == "scheduled"
    assert detail["attempts"][0]["response_status"] == 200


async def test_event_types_filter_endpoints(world: World) -> None:
    calls = await world.endpoint("/status/200", event_types=["call.completed"])
    everything = await world.endpoint("/ok")
    await world.publish("call.started")
    await world.publish("call.completed", call(status="completed"))
    await world.receiver.wait_for(2, "/ok")
    await world.receiver.wait_for(1, "/status/200")
    await world.settled(everything["id"], 2)
    assert [d["event_type"] for d in await world.deliveries(calls["id"])] == ["call.completed"]


async def test_500_then_success_is_retried_on_the_schedule(world: World) -> None:
    ep = await world.endpoint("/flaky/2")
    await world.publish()
    got = await world.receiver.wait_for(3, "/flaky/2")
    assert len({g.headers["webhook-id"] for g in got}) == 1  # same webhook-id on every retry
    gaps = [b.at - a.at for a, b in itertools.pairwise(got)]
    assert all(0.2 <= g for g in gaps), gaps  # 0.3 s ± 20 % jitter
    [d] = await world.settled(ep["id"])
    assert d["status"] == "succeeded" and d["attempt_count"] == 3
    attempts = (await world.delivery(d["id"]))["attempts"]
    assert [a["response_status"] for a in attempts] == [500, 500, 200]
    assert attempts[0]["error"] == "http_status" and attempts[0]["error_message"].startswith("HTTP 500")


async def test_always_500_ends_failed_when_the_schedule_is_spent(world: World) -> None:
    ep = await world.endpoint("/status/500")
    await world.publish()
    [d] = await world.settled(ep["id"])
    assert d["status"] == "failed" and d["attempt_count"] == 4  # 3 delays = 4 attempts
    assert d["next_attempt_at"] is None and d["last_response_status"] == 500


async def test_410_disables_the_endpoint(world: World) -> None:
    ep = await world.endpoint("/status/410")
    await world.publish()
    [d] = await world.settled(ep["id"])
    assert d["status"] == "failed" and d["attempt_count"] == 1
    deadline = time.monotonic() + 5
    while True:
        r = await world.api.get(f"{world.tenant.path}/webhook-endpoints/{ep['id']}", key=world.key)
        if not r.body["enabled"] or time.monotonic() > deadline:
            break
        await _sleep(0.05)
    assert r.body["enabled"] is False and "410" in r.body["disabled_reason"]
    assert (await world.api.post(f"{world.tenant.path}/webhook-endpoints/{ep['id']}/test",
                                 key=world.key)).status == 409


async def test_redirects_are_failures_and_not_followed(world: World) -> None:
    ep = await world.endpoint("/redirect")
    await world.publish()
    [d] = await world.settled(ep["id"])
    attempts = (await world.delivery(d["id"]))["attempts"]
    assert all(a["response_status"] == 301 and a["error"] == "redirect" for a in attempts)
    assert "redirect refused" in attempts[0]["error_message"]
    assert world.receiver.at("/hook") == []


@pytest.mark.engine_settings(retry_schedule=(0.3, 0.3, 5.0))  # room for the 2 s before the deadline
async def test_429_retry_after_is_honoured(world: World) -> None:
    ep = await world.endpoint("/retry-after/429/2")
    await world.publish()
    got = await world.receiver.wait_for(2, "/retry-after/429/2", timeout_s=10)
    assert got[1].at - got[0].at >= 1.9  # the header's 2 s, not the schedule's 0.3 s
    detail = await world.delivery((await world.deliveries(ep["id"]))[0]["id"])
    assert detail["attempts"][0]["response_status"] == 429


async def test_hang_past_the_timeout_is_a_timeout(world: World) -> None:
    ep = await world.endpoint("/hang")
    await world.publish()
    [d] = await world.settled(ep["id"], timeout_s=20)
    attempts = (await world.delivery(d["id"]))["attempts"]
    assert attempts[0]["response_status"] is None and attempts[0]["error"] == "timeout"
    assert attempts[0]["error_message"] == "timed out after 1 s"
    assert 900 <= attempts[0]["duration_ms"] <= 3000


async def test_reset_and_trickle_fail_with_reasons(world: World) -> None:
    reset = await world.endpoint("/reset")
    trickle = await world.endpoint("/trickle")
    await world.publish()
    [r] = await world.settled(reset["id"], timeout_s=20)
    [t] = await world.settled(trickle["id"], timeout_s=20)
    r_attempts = (await world.delivery(r["id"]))["attempts"]
    t_attempts = (await world.delivery(t["id"]))["attempts"]
    assert r_attempts[0]["error"] == "connection_reset" and r_attempts[0]["response_status"] is None
    assert t_attempts[0]["error"] == "timeout"  # connect to last byte within the timeout


async def test_connection_refused_is_named(world: World, settings: Settings) -> None:
    from tests.processes import free_port

    r = await world.api.post(f"{world.tenant.path}/webhook-endpoints", key=world.key,
                             json={"url": f"http://127.0.0.1:{free_port()}/nobody"})
    ep = r.body
    await world.publish()
    [d] = await world.settled(ep["id"])
    attempt = (await world.delivery(d["id"]))["attempts"][0]
    assert attempt["error"] == "connection_refused"
    assert attempt["error_message"].startswith("connection refused by 127.0.0.1:")


async def test_response_excerpt_is_2_kib_without_nuls(world: World) -> None:
    ep = await world.endpoint("/big")
    await world.publish()
    [d] = await world.settled(ep["id"])
    body = (await world.delivery(d["id"]))["attempts"][0]["response_body"]
    assert len(body) <= 2048 and "\x00" not in body and body.startswith("eee")


async def test_test_route_sends_only_to_that_endpoint_and_is_not_an_event(world: World) -> None:
    one = await world.endpoint("/ok")
    await world.endpoint("/status/200")
    r = await world.api.post(f"{world.tenant.path}/webhook-endpoints/{one['id']}/test", key=world.key)
    assert r.status == 202
    [got] = await world.receiver.wait_for(1, "/ok")
    assert json.loads(got.body)["type"] == "webhook.test"
    assert world.receiver.at("/status/200") == []
    detail = await world.delivery_settled(r.body["delivery_id"])
    assert detail["status"] == "succeeded" and detail["attempts"][0]["trigger"] == "test"
    events = await world.api.get(f"{world.tenant.path}/events", key=world.key)
    assert all(e["type"] != "webhook.test" for e in events.body["data"])


async def test_rotation_signs_with_both_then_only_the_new(world: World) -> None:
    ep = await world.endpoint("/ok")
    old = ep["secret"]
    base = f"{world.tenant.path}/webhook-endpoints/{ep['id']}"
    r = await world.api.post(f"{base}/secret/rotate", key=world.key, json={"grace_seconds": 2})
    assert r.status == 200
    new = r.body["secret"]
    assert new != old and (await world.api.get(f"{base}/secret", key=world.key)).body["secret"] == new
    await world.publish()
    [during] = await world.receiver.wait_for(1, "/ok")
    h = {k.lower(): v for k, v in during.headers.items()}
    assert len(h["webhook-signature"].split(" ")) == 2
    assert verify_standard_webhook(old, h, during.body) and verify_standard_webhook(new, h, during.body)
    await _sleep(2.2)
    await world.publish()
    got = await world.receiver.wait_for(2, "/ok")
    h = {k.lower(): v for k, v in got[1].headers.items()}
    assert len(h["webhook-signature"].split(" ")) == 1
    assert verify_standard_webhook(new, h, got[1].body) and not verify_standard_webhook(old, h, got[1].body)


async def test_retry_resends_a_failed_delivery_to_the_changed_url(world: World) -> None:
    ep = await world.endpoint("/status/500")
    await world.publish()
    [d] = await world.settled(ep["id"])
    assert d["status"] == "failed"
    base = f"{world.tenant.path}/webhook-endpoints/{ep['id']}"
    assert (await world.api.patch(base, key=world.key, json={"url": world.receiver.url("/ok")})).status == 200
    r = await world.api.post(f"{world.tenant.path}/deliveries/{d['id']}/retry", key=world.key)
    assert r.status == 202
    await world.receiver.wait_for(1, "/ok")
    detail = await world.delivery_settled(d["id"])
    assert detail["status"] == "succeeded"
    assert detail["attempts"][-1]["trigger"] == "retry" and detail["attempts"][-1]["url"].endswith("/ok")


async def test_each_event_is_delivered_once_per_endpoint(world: World) -> None:
    ep = await world.endpoint("/ok")
    r = await publish(world.api, {"events": [event(world.tenant.business_id, data=call(f"m{i}")) for i in range(40)]})
    assert r.status == 202
    got = await world.receiver.wait_for(40, "/ok")
    await world.settled(ep["id"], 40)
    ids_seen = [g.headers["webhook-id"] for g in got]
    assert sorted(ids_seen) == sorted(e["id"] for e in r.body["events"])


async def test_recover_dry_run_counts_and_sends_nothing(world: World, db: asyncpg.Connection) -> None:
    ep = await world.endpoint("/status/500")
    await world.publish()
    await world.publish("agent.created", {"id": "a1", "name": "Desk"})
    await world.settled(ep["id"], 2)
    before = len(world.receiver.received)
    base = f"{world.tenant.path}/webhook-endpoints/{ep['id']}"
    r = await world.api.post(f"{base}/recover", key=world.key, json={"since": ago(hours=1), "dry_run": True})
    assert r.status == 200
    assert r.body["count"] == 2 and r.body["by_event_type"] == {"call.started": 1, "agent.created": 1}
    assert r.body["by_last_status"] == {"500": 2}
    await _sleep(0.5)
    assert len(world.receiver.received) == before


async def test_recover_is_paced_tracked_and_resends_only_what_still_failed(world: World,
                                                                          db: asyncpg.Connection) -> None:
    ep = await world.endpoint("/status/500")
    for i in range(6):
        await world.publish(data=call(f"r{i}"))
    done = await world.settled(ep["id"], 6)
    # One of them succeeds meanwhile by a retry to a fixed URL: recover must leave it alone.
    base = f"{world.tenant.path}/webhook-endpoints/{ep['id']}"
    assert (await world.api.patch(base, key=world.key, json={"url": world.receiver.url("/ok")})).status == 200
    assert (await world.api.post(f"{world.tenant.path}/deliveries/{done[0]['id']}/retry", key=world.key)).status == 202
    await world.delivery_settled(done[0]["id"])
    await world.receiver.wait_for(1, "/ok")
    r = await world.api.post(f"{base}/recover", key=world.key, json={"since": ago(hours=1), "rate": 4})
    assert r.status == 202 and r.body["count"] == 5
    job = r.body["job_id"]
    got = await world.receiver.wait_for(6, "/ok", timeout_s=15)
    arrivals = sorted(g.at for g in got[1:])
    # 5 sends at 4 a second: at least 1 s from first to last (0.25 s apart), not all at once.
    assert arrivals[-1] - arrivals[0] >= 0.9, arrivals
    assert len({g.headers["webhook-id"] for g in got}) == 6  # the succeeded one was not sent again
    deadline = time.monotonic() + 10
    while (s := (await world.api.get(f"{world.tenant.path}/recover-jobs/{job}", key=world.key)).body)["status"] \
            != "done":
        assert time.monotonic() < deadline, s
        await _sleep(0.05)
    assert (s["total"], s["attempted"], s["succeeded"], s["waiting"]) == (5, 5, 5, 0)
    audit = await db.fetch("SELECT action, details FROM audit_log WHERE target_id = $1 AND action LIKE "
                           "'endpoint.recover%'", ep["id"])
    assert audit[0]["action"] == "endpoint.recover_started" and json.loads(audit[0]["details"])["count"] == 5


async def test_recover_can_be_cancelled(world: World) -> None:
    ep = await world.endpoint("/status/500")
    r = await publish(world.api, {"events": [event(world.tenant.business_id, data=call(f"x{i}")) for i in range(8)]})
    assert r.status == 202
    await world.settled(ep["id"], 8)
    base = f"{world.tenant.path}/webhook-endpoints/{ep['id']}"
    assert (await world.api.patch(base, key=world.key, json={"url": world.receiver.url("/ok")})).status == 200
    r = await world.api.post(f"{base}/recover", key=world.key, json={"since": ago(hours=1), "rate": 2})
    job = r.body["job_id"]
    await world.receiver.wait_for(1, "/ok")
    c = await world.api.post(f"{world.tenant.path}/recover-jobs/{job}/cancel", key=world.key)
    assert c.status == 200 and c.body["status"] == "cancelled"
    sent_at_cancel = len(world.receiver.at("/ok"))
    await _sleep(1.5)  # at 2 a second, three more would have gone out by now
    assert len(world.receiver.at("/ok")) <= sent_at_cancel + 1  # at most the one already in flight
    assert sent_at_cancel < 8
    left = [d for d in await world.deliveries(ep["id"]) if d["status"] == "failed"]
    assert len(left) >= 8 - sent_at_cancel - 1


async def test_delivery_of_another_endpoint_id_format_is_404(world: World) -> None:
    assert (await world.api.get(f"{world.tenant.path}/deliveries/dlv_nope", key=world.key)).status == 404
    assert (await world.api.get(f"{world.tenant.path}/deliveries/{ids.encode('dlv', ids.new_uuid())}",
                                key=world.key)).status == 404


@pytest.mark.parametrize("settings_overrides", [{**FAST, "disable_after_failing_s": 3600}])
async def test_an_endpoint_failing_for_the_configured_time_is_disabled_and_audited(
    tenant: Tenant, api: Api, settings: Settings, db: asyncpg.Connection
) -> None:
    key = (await tenant.create_key(scopes=["webhooks:read", "webhooks:write"]))["key"]
    async with running_receiver() as receiver:
        failing = (await api.post(f"{tenant.path}/webhook-endpoints", key=key,
                                  json={"url": receiver.url("/status/500")})).body
        recent = (await api.post(f"{tenant.path}/webhook-endpoints", key=key,
                                 json={"url": receiver.url("/status/500")})).body
        # One has failed every attempt for over an hour, the other only for a minute.
        await db.execute("UPDATE endpoints SET failing_since = now() - interval '61 minutes' WHERE id = $1",
                         ids.decode("ep", failing["id"]))
        await db.execute("UPDATE endpoints SET failing_since = now() - interval '1 minute' WHERE id = $1",
                         ids.decode("ep", recent["id"]))
        async with running_worker(settings):  # the check runs at start-up, then every 10 minutes
            deadline = time.monotonic() + 10
            while (r := await api.get(f"{tenant.path}/webhook-endpoints/{failing['id']}", key=key)).body["enabled"]:
                assert time.monotonic() < deadline, "not disabled"
                await _sleep(0.05)
    assert r.body["disabled_reason"] == "every attempt failed for 3600 s"
    assert (await api.get(f"{tenant.path}/webhook-endpoints/{recent['id']}", key=key)).body["enabled"] is True
    audit = await db.fetch("SELECT action, details FROM audit_log WHERE target_id = $1", failing["id"])
    assert [a["action"] for a in audit] == ["endpoint.created", "endpoint.disabled"]
    # Enabling it again clears the reason and the failure streak.
    r = await api.patch(f"{tenant.path}/webhook-endpoints/{failing['id']}", key=key, json={"enabled": True})
    assert r.body["enabled"] is True and r.body["disabled_reason"] is None
    assert await db.fetchval("SELECT failing_since FROM endpoints WHERE id = $1", ids.decode("ep", failing["id"])) \
        is None


async def test_notices_tell_the_business_about_disabling_and_exhausted_retries(world: World) -> None:
    ep = await world.endpoint("/ok")
    await world.publish()
    await world.settled(ep["id"], 1)
    one = f"{world.tenant.path}/webhook-endpoints/{ep['id']}"
    assert (await world.api.get(one, key=world.key)).body["notices"] == []
    assert (await world.api.patch(one, key=world.key, json={"url": world.receiver.url("/status/500")})).status == 200
    await world.publish()
    await world.publish()
    await world.settled(ep["id"], 3)
    notices = (await world.api.get(one, key=world.key)).body["notices"]
    assert [n["kind"] for n in notices] == ["delivery.exhausted"]  # one, however many ran out in the hour
    assert "failed every retry" in notices[0]["message"]
    assert (await world.api.patch(one, key=world.key, json={"url": world.receiver.url("/status/410")})).status == 200
    await world.publish()
    deadline = time.monotonic() + 10
    while not (body := (await world.api.get(one, key=world.key)).body)["notices"][0]["kind"] == "endpoint.disabled":
        assert time.monotonic() < deadline, body
        await _sleep(0.05)
    assert body["enabled"] is False and "410" in body["notices"][0]["message"], str(body)
    listed = (await world.api.get(f"{world.tenant.path}/webhook-endpoints", key=world.key)).body["data"]
    assert [n["kind"] for n in listed[0]["notices"]] == ["endpoint.disabled", "delivery.exhausted"]
