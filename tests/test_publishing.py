"""POST /internal/v1/events: validation, all-or-nothing batches, idempotency, durability without Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
import redis.asyncio
from aiohttp.test_utils import TestServer

from api.app import create_app
from shared import ids
from shared.repos.handoff import DUE_CHANNEL, wake_channel
from shared.settings import Settings
from tests.helpers import INTERNAL_TOKEN, Api, Tenant, until


def call(call_id: str = "call_1", **over: Any) -> dict[str, Any]:
    data = {"id": call_id, "direction": "inbound", "from": "+15550001111", "to": "+15550002222",
            "status": "ringing", "started_at": "2026-11-27T09:00:00Z"}
    data.update(over)
    return data


def event(business_id: str, type_: str = "call.started", data: dict[str, Any] | None = None,
          **over: Any) -> dict[str, Any]:
    body = {"business_id": business_id, "type": type_, "data": data if data is not None else call()}
    body.update(over)
    return body


async def publish(api: Api, body: Any) -> Any:
    return await api.post("/internal/v1/events", json=body, key=INTERNAL_TOKEN)


async def count(db: asyncpg.Connection, table: str = "events") -> int:
    return int(await db.fetchval(f"SELECT count(*) FROM {table}"))


async def test_single_event_is_accepted_and_readable(tenant: Tenant, api: Api) -> None:
    r = await publish(api, event(tenant.business_id, occurred_at="2026-11-27T09:00:01Z",
                                 data=call(custom_field={"nested": [1, 2]})))
    assert r.status == 202, r.body
    [accepted] = r.body["events"]
    assert accepted["id"].startswith("evt_") and accepted["duplicate"] is False
    assert accepted["idempotency_key"] is None
    key = (await tenant.create_key(scopes=["events:read", "calls:read"]))["key"]
    got = await api.get(f"{tenant.path}/events/{accepted['id']}", key=key)
    assert got.status == 200
    assert got.body["type"] == "call.started"
    assert got.body["timestamp"] == "2026-11-27T09:00:01Z"
    assert got.body["business_id"] == tenant.business_id
    assert got.body["data"]["custom_field"] == {"nested": [1, 2]}  # unnamed fields kept as published
    assert got.body["data"]["from"] == "+15550001111"
    listed = await api.get(f"{tenant.path}/events", key=key)
    assert [e["id"] for e in listed.body["data"]] == [accepted["id"]]
    the_call = await api.get(f"{tenant.path}/calls/call_1", key=key)
    assert the_call.status == 200 and the_call.body["custom_field"] == {"nested": [1, 2]}


async def test_batch_is_stored_whole_in_order(tenant: Tenant, api: Api, db: asyncpg.Connection) -> None:
    before = await count(db)
    body = {"events": [event(tenant.business_id, data=call(f"c{i}")) for i in range(50)]}
    r = await publish(api, body)
    assert r.status == 202
    assert len(r.body["events"]) == 50 and len({e["id"] for e in r.body["events"]}) == 50
    assert await count(db) == before + 50


async def test_batch_with_one_bad_event_stores_nothing(tenant: Tenant, api: Api, db: asyncpg.Connection) -> None:
    before = (await count(db), await count(db, "calls"))
    events = [event(tenant.business_id, data=call(f"ok{i}")) for i in range(5)]
    events.insert(3, event(tenant.business_id, data=call("bad", status="on_hold")))
    r = await publish(api, {"events": events})
    assert r.status == 422
    assert r.problem["code"] == "validation_error"
    assert ["body", "events", 3, "data", "status"] in [e["loc"] for e in r.problem["errors"]]
    assert (await count(db), await count(db, "calls")) == before


@pytest.mark.parametrize("mutate, loc", [
    (lambda e: e.update(type="call.exploded"), ["body", "type"]),
    (lambda e: e["data"].pop("direction"), ["body", "data", "direction"]),
    (lambda e: e["data"].update(started_at="yesterday"), ["body", "data", "started_at"]),
    (lambda e: e["data"].update(started_at="2026-11-27T09:00:00"), ["body", "data", "started_at"]),
    (lambda e: e.update(business_id="biz_nope"), ["body", "business_id"]),
    (lambda e: e.update(business_id="biz_0000000000000000000000000a"), ["body", "business_id"]),
    (lambda e: e.update(occurred_at="not a time"), ["body", "occurred_at"]),
    (lambda e: e.update(idempotency_key=""), ["body", "idempotency_key"]),
    (lambda e: e.update(data=[1, 2]), ["body", "data"]),
    (lambda e: e.update(surprise=True), ["body", "surprise"]),
    (lambda e: e.update(type="webhook.test"), ["body", "type"]),
    (lambda e: e.update(type="agent.created", data={"id": "a1"}), ["body", "data", "name"]),
], ids=["unknown-type", "missing-field", "bad-time", "naive-time", "malformed-business", "unknown-business",
        "bad-occurred-at", "empty-idempotency-key", "data-not-object", "extra-field", "test-type",
        "agent-without-name"])
async def test_invalid_events_are_422_with_the_failing_loc(tenant: Tenant, api: Api, db: asyncpg.Connection,
                                                           mutate: Any, loc: list[Any]) -> None:
    body = event(tenant.business_id)
    mutate(body)
    before = await count(db)
    r = await publish(api, body)
    assert r.status == 422, r.body
    assert loc in [e["loc"] for e in r.problem["errors"]], r.problem["errors"]
    assert await count(db) == before


async def test_batch_limits(tenant: Tenant, api: Api) -> None:
    r = await publish(api, {"events": [event(tenant.business_id, data=call(f"c{i}")) for i in range(501)]})
    assert r.status == 422
    assert ["body", "events"] in [e["loc"] for e in r.problem["errors"]]
    r = await publish(api, {"events": []})
    assert r.status == 422


async def test_data_over_256_kib_is_refused(tenant: Tenant, api: Api, db: asyncpg.Connection) -> None:
    before = await count(db)
    big = event(tenant.business_id, data=call(transcript="x" * (256 * 1024)))
    r = await publish(api, {"events": [event(tenant.business_id), big]})
    assert r.status == 413
    assert r.problem["code"] == "payload_too_large"
    assert "events[1].data" in r.problem["detail"]
    assert await count(db) == before
    ok = event(tenant.business_id, data=call(transcript="x" * (200 * 1024)))
    assert (await publish(api, ok)).status == 202


async def test_idempotency_within_and_across_batches(tenant: Tenant, api: Api, db: asyncpg.Connection) -> None:
    before = await count(db)
    first = await publish(api, {"events": [
        event(tenant.business_id, data=call("a"), idempotency_key="k1"),
        event(tenant.business_id, data=call("b"), idempotency_key="k2"),
        event(tenant.business_id, data=call("a2"), idempotency_key="k1"),  # repeat inside the batch
    ]})
    assert first.status == 202
    a, b, a_again = first.body["events"]
    assert (a["duplicate"], b["duplicate"], a_again["duplicate"]) == (False, False, True)
    assert a_again["id"] == a["id"] and a_again["idempotency_key"] == "k1"
    assert await count(db) == before + 2
    second = await publish(api, {"events": [
        event(tenant.business_id, data=call("b"), idempotency_key="k2"),
        event(tenant.business_id, data=call("c"), idempotency_key="k3"),
    ]})
    b_again, c = second.body["events"]
    assert b_again == {"id": b["id"], "idempotency_key": "k2", "duplicate": True}
    assert c["duplicate"] is False
    assert await count(db) == before + 3
    # The repeat stored nothing: not even the projection of its different data.
    assert await db.fetchval("SELECT count(*) FROM calls WHERE id = 'a2'") == 0


async def test_idempotency_keys_are_per_business(tenant: Tenant, api: Api, server: TestServer,
                                                 database_url: str) -> None:
    from tests.helpers import create_business

    other = await create_business(str(server.make_url("")), "Other")
    r1 = await publish(api, event(tenant.business_id, idempotency_key="same"))
    r2 = await publish(api, event(other, idempotency_key="same"))
    assert r1.body["events"][0]["duplicate"] is False and r2.body["events"][0]["duplicate"] is False
    assert r1.body["events"][0]["id"] != r2.body["events"][0]["id"]


async def test_publishing_needs_an_internal_token(tenant: Tenant, api: Api) -> None:
    key = (await tenant.create_key())["key"]
    assert (await api.post("/internal/v1/events", json=event(tenant.business_id), key=key)).status == 401
    assert (await api.post("/internal/v1/events", json=event(tenant.business_id))).status == 401


async def test_redis_down_still_accepts_and_fans_out(tenant: Tenant, api: Api, settings: Settings,
                                                    db: asyncpg.Connection) -> None:
    """Accepting needs only Postgres: with Redis unreachable the events and their deliveries are stored."""
    key = (await tenant.create_key(scopes=["webhooks:write"]))["key"]
    ep = await api.post(f"{tenant.path}/webhook-endpoints", key=key, json={"url": "https://a.example.com/"})
    assert ep.status == 201
    broken = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    server = TestServer(create_app(broken), host="127.0.0.1")
    await server.start_server()
    try:
        async with Api(str(server.make_url(""))) as api:
            r = await publish(api, {"events": [event(tenant.business_id, data=call(f"r{i}")) for i in range(3)]})
    finally:
        await server.close()
    assert r.status == 202
    event_ids = [ids.decode("evt", e["id"]) for e in r.body["events"]]
    stored = await db.fetch("SELECT id, fanned_out_at FROM events WHERE id = ANY($1::uuid[])", event_ids)
    assert len(stored) == 3
    assert all(row["fanned_out_at"] is not None for row in stored)
    assert await db.fetchval("SELECT count(*) FROM deliveries WHERE event_id = ANY($1::uuid[]) AND status = "
                             "'pending' AND next_attempt_at <= now()", event_ids) == 3


async def test_accepting_creates_the_deliveries_and_wakes_the_workers(tenant: Tenant, api: Api, database_url: str,
                                                                      settings: Settings) -> None:
    """Fan-out happens in the accepting transaction: one due delivery per matching enabled endpoint, and a
    wake-up on the workers' Redis channel once it has committed (none when there is nothing to deliver). The
    accepting transaction sends no Postgres NOTIFY (it would serialise publishers' commits)."""
    key = (await tenant.create_key(scopes=["webhooks:write"]))["key"]
    base = f"{tenant.path}/webhook-endpoints"
    every = (await api.post(base, key=key, json={"url": "https://every.example.com/"})).body
    started = (await api.post(base, key=key, json={"url": "https://s.example.com/",
                                                   "event_types": ["call.started"]})).body
    completed = (await api.post(base, key=key, json={"url": "https://c.example.com/",
                                                     "event_types": ["call.completed"]})).body
    off = (await api.post(base, key=key, json={"url": "https://off.example.com/"})).body
    assert (await api.patch(f"{base}/{off['id']}", key=key, json={"enabled": False})).status == 200

    listener = await asyncpg.connect(database_url)
    notified: list[str] = []
    # Endpoint changes are notified on Postgres (made above; one may be read only after the clear() below).
    await listener.add_listener(DUE_CHANNEL, lambda _c, _pid, channel, payload: payload or notified.append(channel))
    client = redis.asyncio.Redis.from_url(settings.redis_url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(wake_channel(settings.queue_name))
    woken: list[bytes] = []

    async def hear() -> None:
        async for message in pubsub.listen():
            woken.append(message["data"])

    hearing = asyncio.create_task(hear())
    try:
        r = await publish(api, {"events": [event(tenant.business_id, data=call(f"n{i}")) for i in range(2)]})
        assert r.status == 202
        await until(lambda: len(woken) >= 1, 5, "the workers were woken")
        event_ids = [ids.decode("evt", e["id"]) for e in r.body["events"]]
        rows = await listener.fetch("SELECT event_id, endpoint_id, status, lease_owner FROM deliveries "
                                    "WHERE event_id = ANY($1::uuid[])", event_ids)
        got = {(row["event_id"], ids.encode("ep", row["endpoint_id"])) for row in rows}
        assert got == {(e, ep) for e in event_ids for ep in (every["id"], started["id"])}
        assert all(row["status"] == "pending" and row["lease_owner"] is None for row in rows)
        assert completed["id"] not in {ep for _, ep in got} and off["id"] not in {ep for _, ep in got}

        # An event no enabled endpoint wants: stored, nothing to deliver, nobody woken.
        assert (await api.patch(f"{base}/{every['id']}", key=key, json={"enabled": False})).status == 200
        woken.clear()
        r = await publish(api, event(tenant.business_id, "lead.created", data={"id": "lead_1", "name": "Ann"}))
        assert r.status == 202
        probe = await listener.fetchval("SELECT count(*) FROM deliveries WHERE event_id = $1",
                                        ids.decode("evt", r.body["events"][0]["id"]))
        assert probe == 0
        assert (await publish(api, event(tenant.business_id, data=call("n-last")))).status == 202
        await until(lambda: len(woken) >= 1, 5, "the next batch with deliveries woke the workers")
        assert woken == [b""]  # one wake-up per committed batch with deliveries, and none for the lead
        await listener.execute("SELECT 1")  # a round trip: any notification sent before it has been read
        assert notified == []  # no NOTIFY from the accepting transactions
    finally:
        hearing.cancel()
        await asyncio.gather(hearing, return_exceptions=True)
        await pubsub.aclose()
        await client.aclose()
        await listener.close()


@pytest.mark.parametrize("raw, status, code", [
    (b"{not json", 400, "bad_request"),
    (b'{"business_id": "x", "type": ', 400, "bad_request"),
    (b"", 400, "bad_request"),
    (b"null", 422, "validation_error"),
    (b"42", 422, "validation_error"),
    (b'"text"', 422, "validation_error"),
])
async def test_malformed_bodies(api: Api, db: asyncpg.Connection, raw: bytes, status: int, code: str) -> None:
    before = await count(db)
    r = await api.post("/internal/v1/events", data=raw, key=INTERNAL_TOKEN,
                       headers={"Content-Type": "application/json"})
    assert r.status == status
    assert r.problem["code"] == code
    assert await count(db) == before


async def test_a_publish_racing_an_endpoint_delete_is_accepted(tenant: Tenant, api: Api, database_url: str,
                                                               db: asyncpg.Connection) -> None:
    """The endpoint is deleted while the publish's fan-out holds a delivery row for it: the publisher still gets
    202 (the statement is run again without that endpoint), never a 4xx for a valid batch."""
    key = (await tenant.create_key(scopes=["webhooks:write"]))["key"]
    base = f"{tenant.path}/webhook-endpoints"
    doomed, kept = [(await api.post(base, key=key, json={"url": f"https://hooks.example.com/{name}"})).body["id"]
                    for name in ("doomed", "kept")]
    deleter = await asyncpg.connect(database_url)
    try:
        deleting = deleter.transaction()
        await deleting.start()
        await deleter.execute("DELETE FROM endpoints WHERE id = $1", ids.decode("ep", doomed))
        publishing = asyncio.create_task(publish(api, event(tenant.business_id, data=call("race-1"))))

        async def blocked_on_the_delete() -> bool:
            return bool(await db.fetchval(
                """SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
                   AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO events%'"""))

        await until(blocked_on_the_delete, 10, "the publish waits for the deleted endpoint's row")
        await deleting.commit()
        r = await publishing
    finally:
        await deleter.close()
    assert r.status == 202, (r.status, r.body)
    event_id = ids.decode("evt", r.body["events"][0]["id"])
    to = await db.fetch("SELECT endpoint_id FROM deliveries WHERE event_id = $1", event_id)
    assert [ids.encode("ep", row["endpoint_id"]) for row in to] == [kept]


async def test_publishes_and_endpoint_deletes_at_once_never_refuse_a_valid_batch(tenant: Tenant, api: Api) -> None:
    key = (await tenant.create_key(scopes=["webhooks:write"]))["key"]
    base = f"{tenant.path}/webhook-endpoints"
    endpoints = [(await api.post(base, key=key, json={"url": f"https://hooks.example.com/{i}"})).body["id"]
                 for i in range(20)]

    async def publisher(n: int) -> list[int]:
        statuses = []
        for i in range(15):
            batch = [event(tenant.business_id, data=call(f"p{n}-{i}-{j}")) for j in range(5)]
            r = await publish(api, {"events": batch})
            statuses.append(r.status)
            if r.status == 503:
                assert r.headers.get("Retry-After"), r.headers
        return statuses

    async def deleter() -> None:
        for endpoint in endpoints:
            assert (await api.delete(f"{base}/{endpoint}", key=key)).status == 204

    results = await asyncio.gather(*[publisher(n) for n in range(4)], deleter())
    statuses = [s for batch in results[:4] for s in batch]  # type: ignore[union-attr]
    assert all(s in (202, 503) for s in statuses), statuses
