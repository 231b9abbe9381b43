"""API keys: creation, format, listing, scopes, expiry, deletion and the uniform 401."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from shared import apikeys
from tests.helpers import Api, Tenant


async def test_created_key_has_the_documented_format_and_is_shown_once(tenant: Tenant) -> None:
    created = await tenant.create_key(name="CRM sync")
    key = created["key"]
    assert key.startswith("kc_live_") and len(key) == apikeys.KEY_LEN
    assert apikeys.is_well_formed(key)
    assert created["name"] == "CRM sync"
    assert created["id"].startswith("key_")
    assert created["prefix"].startswith(key[:12]) and created["prefix"].endswith(key[-4:])
    assert created["scopes"] == ["agents:read", "calls:read", "leads:read", "events:read", "webhooks:read"]
    assert created["last_used_at"] is None and created["expires_at"] is None

    listed = await tenant.owner.get(f"{tenant.path}/api-keys")
    assert listed.status == 200
    assert [k["id"] for k in listed.body["data"]] == [created["id"]]
    assert "key" not in listed.body["data"][0]
    assert key not in listed.raw.decode()
    assert key[8:-4] not in listed.raw.decode()


async def test_secret_is_stored_only_as_a_keyed_hash(tenant: Tenant, db: asyncpg.Connection) -> None:
    created = await tenant.create_key()
    key = created["key"]
    row = await db.fetchrow("SELECT * FROM api_keys WHERE display_prefix = $1", key[:12])
    assert row is not None
    for value in row.values():
        assert key not in str(value)
    assert len(row["key_hash"]) == 32 and row["key_hash"] != key.encode()


async def test_key_reads_me(tenant: Tenant, api: Api) -> None:
    created = await tenant.create_key(name="reader", scopes=["calls:read"])
    r = await api.get("/v1/me", key=created["key"])
    assert r.status == 200
    assert r.body == {
        "type": "api_key",
        "business": {"id": tenant.business_id, "name": "Acme Plumbing"},
        "api_key": {"id": created["id"], "name": "reader", "scopes": ["calls:read"]},
    }


@pytest.mark.parametrize("header", [
    None,
    "Bearer",
    "Basic dXNlcjpwYXNz",
    "Bearer kc_live_short",
    "Bearer not-a-key-at-all",
])
async def test_missing_or_malformed_credentials_get_the_uniform_401(api: Api, header: str | None) -> None:
    r = await api.get("/v1/me", headers={"Authorization": header} if header else None)
    assert r.status == 401
    assert r.headers["WWW-Authenticate"] == "Bearer"
    assert r.problem["code"] == "unauthorized"


async def _uniform_401(api: Api, key: str, path: str = "/v1/me") -> dict:
    r = await api.get(path, key=key)
    assert r.status == 401, r.body
    assert r.headers["WWW-Authenticate"] == "Bearer"
    return r.problem


async def test_every_key_failure_has_the_same_body(tenant: Tenant, api: Api, server, database_url: str) -> None:
    from tests.helpers import make_tenant

    good = (await tenant.create_key())["key"]
    bad_checksum = good[:-1] + ("A" if good[-1] != "A" else "B")
    unknown = apikeys.generate().secret
    deleted = await tenant.create_key()
    r = await tenant.owner.delete(f"{tenant.path}/api-keys/{deleted['id']}")
    assert r.status == 204
    async with make_tenant(str(server.make_url("")), database_url) as other:
        foreign = (await other.create_key())["key"]
        bodies = [
            await _uniform_401(api, bad_checksum),
            await _uniform_401(api, unknown),
            await _uniform_401(api, deleted["key"]),
            await _uniform_401(api, foreign, f"/v1/businesses/{tenant.business_id}/api-keys"),
            await _uniform_401(api, "kc_live_" + "0" * 49),
        ]
    assert all(b == bodies[0] for b in bodies)


async def test_bad_checksum_is_refused_without_touching_the_database(redis_url: str) -> None:
    # An app whose Postgres is unreachable: any database work would answer 503.
    from aiohttp.test_utils import TestServer

    from api.app import create_app
    from shared.settings import Settings

    settings = Settings(DATABASE_URL="postgresql://postgres@127.0.0.1:1/none", REDIS_URL=redis_url,
                        secret_key="a" * 43 + "=", db_pool_min_size=0)
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        async with Api(str(server.make_url(""))) as client:
            well_formed = apikeys.generate().secret
            bad_checksum = well_formed[:-6] + ("000000" if not well_formed.endswith("000000") else "000001")
            assert (await client.get("/v1/me", key=bad_checksum)).status == 401
            assert (await client.get("/v1/me", key="kc_live_" + "x" * 49)).status == 401
            assert (await client.get("/v1/me", key=well_formed)).status == 503
    finally:
        await server.close()


async def test_expired_key_is_refused(tenant: Tenant, api: Api) -> None:
    expires_at = datetime.now(UTC) + timedelta(seconds=2)
    created = await tenant.create_key(expires_at=expires_at.isoformat())
    assert created["expires_at"] is not None
    assert (await api.get("/v1/me", key=created["key"])).status == 200  # cached in the process now
    deadline = time.monotonic() + 10
    while (r := await api.get("/v1/me", key=created["key"])).status == 200 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert r.status == 401
    assert datetime.now(UTC) >= expires_at


@pytest.mark.parametrize("body, loc", [
    ({"name": "x", "scopes": []}, ["body", "scopes"]),
    ({"name": "x", "scopes": ["calls:write"]}, ["body", "scopes", 0]),
    ({"name": ""}, ["body", "name"]),
    ({}, ["body", "name"]),
    ({"name": "x", "expires_at": "2001-01-01T00:00:00Z"}, ["body", "expires_at"]),
    ({"name": "x", "expires_at": "2099-01-01T00:00:00"}, ["body", "expires_at"]),
    ({"name": "x", "extra": 1}, ["body", "extra"]),
    ([], ["body"]),
])
async def test_invalid_key_requests_are_422_and_store_nothing(tenant: Tenant, db: asyncpg.Connection,
                                                              body: object, loc: list) -> None:
    before = await db.fetchval("SELECT count(*) FROM api_keys")
    r = await tenant.owner.post(f"{tenant.path}/api-keys", json=body)
    assert r.status == 422, r.body
    assert r.problem["code"] == "validation_error"
    assert loc in [e["loc"] for e in r.problem["errors"]]
    assert await db.fetchval("SELECT count(*) FROM api_keys") == before


async def test_scopes_are_enforced(tenant: Tenant, api: Api) -> None:
    calls_only = (await tenant.create_key(scopes=["calls:read"]))["key"]
    r = await api.get("/v1/me", key=calls_only)
    assert r.status == 200
    # /api-keys never accepts keys, whatever their scopes.
    r = await api.get(f"{tenant.path}/api-keys", key=calls_only)
    assert r.status == 401


async def test_listing_is_newest_first_and_paginates(tenant: Tenant) -> None:
    made = [(await tenant.create_key(name=f"k{i}"))["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        path = f"{tenant.path}/api-keys?limit=2" + (f"&cursor={cursor}" if cursor else "")
        r = await tenant.owner.get(path)
        assert r.status == 200
        assert len(r.body["data"]) <= 2
        seen += [k["id"] for k in r.body["data"]]
        cursor = r.body["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(made))


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=abc", "cursor=%%%", "cursor=bm9wZQ"])
async def test_bad_limit_or_cursor_is_422(tenant: Tenant, query: str) -> None:
    r = await tenant.owner.get(f"{tenant.path}/api-keys?{query}")
    assert r.status == 422
    assert r.problem["code"] == "validation_error"


async def test_delete_audits_and_stops_the_key_at_once(tenant: Tenant, api: Api, db: asyncpg.Connection) -> None:
    created = await tenant.create_key(name="to delete")
    assert (await api.get("/v1/me", key=created["key"])).status == 200  # now cached in the process
    r = await tenant.owner.delete(f"{tenant.path}/api-keys/{created['id']}")
    assert r.status == 204
    await _uniform_401(api, created["key"])
    rows = await db.fetch(
        "SELECT action, actor_user_id, ip, business_id, created_at FROM audit_log WHERE target_id = $1 ORDER BY id",
        created["id"])
    assert [r["action"] for r in rows] == ["api_key.created", "api_key.deleted"]
    for row in rows:
        assert row["actor_user_id"] is not None
        assert row["ip"] == "127.0.0.1"
        assert row["business_id"] is not None and row["created_at"] is not None
    again = await tenant.owner.delete(f"{tenant.path}/api-keys/{created['id']}")
    assert again.status == 404


async def test_members_cannot_create_or_delete_keys(tenant: Tenant) -> None:
    member = await tenant.add_user("member")
    admin = await tenant.add_user("admin")
    r = await member.post(f"{tenant.path}/api-keys", json={"name": "nope"})
    assert r.status == 403 and r.problem["code"] == "forbidden"
    made = await tenant.create_key()
    r = await member.delete(f"{tenant.path}/api-keys/{made['id']}")
    assert r.status == 403
    assert (await member.get(f"{tenant.path}/api-keys")).status == 200
    r = await admin.post(f"{tenant.path}/api-keys", json={"name": "admin's"})
    assert r.status == 201
    assert (await admin.delete(f"{tenant.path}/api-keys/{made['id']}")).status == 204


async def test_last_used_at_is_stamped_in_batches(tenant: Tenant, api: Api, server,
                                                  db: asyncpg.Connection) -> None:
    from api.context import KEYS

    created = await tenant.create_key()
    for _ in range(30):
        assert (await api.get("/v1/me", key=created["key"])).status == 200
    # Nothing is written per request: the stamp waits for the batched flush.
    assert await db.fetchval("SELECT last_used_at FROM api_keys WHERE display_prefix = $1",
                             created["key"][:12]) is None
    await server.app[KEYS].flush_last_used()
    first = await db.fetchval("SELECT last_used_at FROM api_keys WHERE display_prefix = $1", created["key"][:12])
    assert first is not None
    for _ in range(10):
        assert (await api.get("/v1/me", key=created["key"])).status == 200
    await server.app[KEYS].flush_last_used()
    # Within the touch interval later requests do not move the stamp.
    assert await db.fetchval("SELECT last_used_at FROM api_keys WHERE display_prefix = $1",
                             created["key"][:12]) == first
    listed = await tenant.owner.get(f"{tenant.path}/api-keys")
    assert listed.body["data"][0]["last_used_at"] is not None


async def test_browser_origin_is_refused_without_revealing_validity(tenant: Tenant, api: Api) -> None:
    good = (await tenant.create_key())["key"]
    origin = {"Origin": "https://evil.example"}
    with_good = await api.get("/v1/me", key=good, headers=origin)
    with_bad = await api.get("/v1/me", key=apikeys.generate().secret, headers=origin)
    assert with_good.status == with_bad.status == 403
    assert with_good.body == with_bad.body
    assert "server-side" in with_good.problem["detail"]
    for name in with_good.headers:
        assert not name.lower().startswith("access-control-")


async def test_preflight_gets_no_cors_headers(api: Api) -> None:
    r = await api.request("OPTIONS", "/v1/me", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "GET"})
    assert r.status == 405
    assert not any(n.lower().startswith("access-control-") for n in r.headers)


async def test_key_secret_never_reaches_the_logs(tenant: Tenant, api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    created = await tenant.create_key()
    await api.get("/v1/me", key=created["key"])
    await api.get("/v1/me", key=created["key"][:-1] + "x")
    await tenant.owner.delete(f"{tenant.path}/api-keys/{created['id']}")
    assert created["key"] not in caplog.text
    assert created["key"][8:-6] not in caplog.text
