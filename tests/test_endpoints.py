"""Endpoint management: create, read, change, delete, secrets, and who may do what."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from shared import ids
from tests.helpers import Api, Tenant


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"allow_private_targets": False}


async def _key(tenant: Tenant, *scopes: str) -> str:
    return (await tenant.create_key(scopes=list(scopes) or ["webhooks:read", "webhooks:write"]))["key"]  # type: ignore[no-any-return]


async def test_create_read_update_delete(tenant: Tenant, api: Api, db: asyncpg.Connection) -> None:
    key = await _key(tenant)
    base = f"{tenant.path}/webhook-endpoints"
    r = await api.post(base, key=key, json={"url": "https://hooks.example.com/a", "description": "CRM",
                                            "event_types": ["call.completed", "lead.created"]})
    assert r.status == 201
    ep = r.body
    assert ep["id"].startswith("ep_") and ep["enabled"] is True and ep["disabled_reason"] is None
    assert ep["event_types"] == ["call.completed", "lead.created"] and ep["description"] == "CRM"
    row = await db.fetchrow("SELECT ciphertext, key_id FROM endpoint_secrets WHERE endpoint_id = $1",
                            ids.decode("ep", ep["id"]))
    assert ep["secret"].encode() not in row["ciphertext"] and len(row["key_id"]) == 16  # sealed at rest
    got = await api.get(f"{base}/{ep['id']}", key=key)
    assert got.status == 200 and "secret" not in got.body
    assert [e["id"] for e in (await api.get(base, key=key)).body["data"]] == [ep["id"]]
    r = await api.patch(f"{base}/{ep['id']}", key=key, json={"event_types": None, "description": "all"})
    assert r.status == 200 and r.body["event_types"] is None and r.body["description"] == "all"
    assert r.body["updated_at"] >= ep["updated_at"]
    r = await api.patch(f"{base}/{ep['id']}", key=key, json={"enabled": False})
    assert r.body["enabled"] is False and r.body["disabled_reason"] == "disabled by a user"
    assert (await api.post(f"{base}/{ep['id']}/test", key=key)).status == 409
    assert (await api.delete(f"{base}/{ep['id']}", key=key)).status == 204
    assert (await api.get(f"{base}/{ep['id']}", key=key)).status == 404
    actions = [r["action"] for r in await db.fetch("SELECT action FROM audit_log WHERE target_id = $1 ORDER BY id",
                                                   ep["id"])]
    assert actions == ["endpoint.created", "endpoint.updated", "endpoint.updated", "endpoint.deleted"]


@pytest.mark.parametrize("body, loc", [
    ({"url": "http://hooks.example.com/"}, ["body", "url"]),
    ({"url": "https://127.0.0.1/"}, ["body", "url"]),
    ({"url": "not a url"}, ["body", "url"]),
    ({"url": "https://hooks.example.com/", "event_types": []}, ["body", "event_types"]),
    ({"url": "https://hooks.example.com/", "event_types": ["call.exploded"]}, ["body", "event_types", 0]),
    ({"url": "https://hooks.example.com/", "event_types": ["webhook.test"]}, ["body", "event_types", 0]),
    ({"url": "https://hooks.example.com/", "colour": "red"}, ["body", "colour"]),
    ({}, ["body", "url"]),
])
async def test_bad_endpoints_are_422_and_store_nothing(tenant: Tenant, api: Api, db: asyncpg.Connection,
                                                       body: dict[str, Any], loc: list[Any]) -> None:
    key = await _key(tenant)
    before = await db.fetchval("SELECT count(*) FROM endpoints")
    r = await api.post(f"{tenant.path}/webhook-endpoints", key=key, json=body)
    assert r.status == 422, r.body
    assert loc in [e["loc"] for e in r.problem["errors"]]
    assert await db.fetchval("SELECT count(*) FROM endpoints") == before


async def test_patch_validates_like_create(tenant: Tenant, api: Api) -> None:
    key = await _key(tenant)
    ep = (await api.post(f"{tenant.path}/webhook-endpoints", key=key, json={"url": "https://a.example.com/"})).body
    one = f"{tenant.path}/webhook-endpoints/{ep['id']}"
    for body in [{"url": "https://10.0.0.1/"}, {"url": None}, {"enabled": None}, {"enabled": "yes"}, {"x": 1}]:
        r = await api.patch(one, key=key, json=body)
        assert r.status == 422, (body, r.body)
    assert (await api.get(one, key=key)).body["url"] == "https://a.example.com/"


async def test_rotation_grace_is_bounded(tenant: Tenant, api: Api, db: asyncpg.Connection) -> None:
    key = await _key(tenant)
    ep = (await api.post(f"{tenant.path}/webhook-endpoints", key=key, json={"url": "https://a.example.com/"})).body
    one = f"{tenant.path}/webhook-endpoints/{ep['id']}"
    for grace in (-1, 7 * 86400 + 1, "soon"):
        assert (await api.post(f"{one}/secret/rotate", key=key, json={"grace_seconds": grace})).status == 422
    r = await api.post(f"{one}/secret/rotate", key=key)  # no body: the default grace of 24 h
    assert r.status == 200 and r.body["secret"].startswith("whsec_") and r.body["secret"] != ep["secret"]
    row = await db.fetchrow(
        "SELECT expires_at - created_at AS grace FROM endpoint_secrets WHERE endpoint_id = $1 AND expires_at "
        "IS NOT NULL", ids.decode("ep", ep["id"]))
    assert 86000 < row["grace"].total_seconds() < 86500
    assert (await api.get(f"{one}/secret", key=key)).body["secret"] == r.body["secret"]


async def test_scopes_and_roles(tenant: Tenant, api: Api) -> None:
    reader = await _key(tenant, "webhooks:read")
    writer = await _key(tenant)
    base = f"{tenant.path}/webhook-endpoints"
    r = await api.post(base, key=reader, json={"url": "https://a.example.com/"})
    assert r.status == 403 and r.problem["code"] == "insufficient_scope"
    ep = (await api.post(base, key=writer, json={"url": "https://a.example.com/"})).body
    assert (await api.get(f"{base}/{ep['id']}", key=reader)).status == 200
    assert (await api.get(f"{base}/{ep['id']}/secret", key=reader)).status == 403  # revealing is a write
    member = await tenant.add_user("member")
    assert (await member.get(base)).status == 200
    assert (await member.get(f"{base}/{ep['id']}/secret")).status == 403
    assert (await member.patch(f"{base}/{ep['id']}", json={"description": "x"})).status == 403
    assert (await tenant.owner.patch(f"{base}/{ep['id']}", json={"description": "x"})).status == 200


# ---- limits on what a business can grow (docs/security.md) ------------------------------------------

ALL_TYPES = ["agent.created", "agent.updated", "agent.deleted", "call.started", "call.updated", "call.completed",
             "lead.created", "lead.updated"]


async def test_event_types_are_known_unique_and_at_most_the_catalogue(tenant: Tenant, api: Api,
                                                                      db: asyncpg.Connection) -> None:
    key = await _key(tenant)
    base = f"{tenant.path}/webhook-endpoints"
    before = await db.fetchval("SELECT count(*) FROM endpoints")
    r = await api.post(base, key=key, json={"url": "https://a.example.com/",
                                            "event_types": ["call.completed"] * 10_000})
    assert r.status == 422 and r.problem["errors"][0]["loc"][:2] == ["body", "event_types"], r.body
    assert "8" in r.problem["errors"][0]["msg"], r.problem  # the limit is named
    r = await api.post(base, key=key, json={"url": "https://a.example.com/",
                                            "event_types": ["call.completed", "lead.created", "call.completed"]})
    assert r.status == 422, r.body
    assert r.problem["errors"] == [{"loc": ["body", "event_types"], "msg": "call.completed is listed twice"}]
    r = await api.post(base, key=key, json={"url": "https://a.example.com/", "event_types": [*ALL_TYPES, "call.x"]})
    assert r.status == 422, r.body
    assert await db.fetchval("SELECT count(*) FROM endpoints") == before
    r = await api.post(base, key=key, json={"url": "https://a.example.com/", "event_types": ALL_TYPES})
    assert r.status == 201 and r.body["event_types"] == ALL_TYPES
    one = f"{base}/{r.body['id']}"
    for body in [{"event_types": ["lead.created"] * 9}, {"event_types": ["lead.created", "lead.created"]}]:
        r = await api.patch(one, key=key, json=body)
        assert r.status == 422, (body, r.body)
    assert (await api.get(one, key=key)).body["event_types"] == ALL_TYPES


@pytest.mark.parametrize("settings_overrides", [{"allow_private_targets": False, "max_endpoints_per_business": 3}])
async def test_endpoints_per_business_are_limited(tenant: Tenant, api: Api, db: asyncpg.Connection) -> None:
    key = await _key(tenant)
    base = f"{tenant.path}/webhook-endpoints"
    for i in range(3):
        assert (await api.post(base, key=key, json={"url": f"https://a.example.com/{i}"})).status == 201
    r = await api.post(base, key=key, json={"url": "https://a.example.com/3"})
    assert r.status == 409 and r.problem["code"] == "conflict", r.body
    assert "3" in r.problem["detail"] and r.problem["limit"] == {"name": "endpoints_per_business", "max": 3}
    business_id = ids.decode("biz", tenant.business_id)
    assert await db.fetchval("SELECT count(*) FROM endpoints WHERE business_id = $1", business_id) == 3
    # Deleting one makes room again.
    first = (await api.get(base, key=key)).body["data"][0]["id"]
    assert (await api.delete(f"{base}/{first}", key=key)).status == 204
    assert (await api.post(base, key=key, json={"url": "https://a.example.com/again"})).status == 201


@pytest.mark.parametrize("settings_overrides", [{"allow_private_targets": False, "max_endpoints_per_business": 5}])
async def test_concurrent_creates_at_the_limit_do_not_both_succeed(tenant: Tenant, api: Api,
                                                                   db: asyncpg.Connection) -> None:
    key = await _key(tenant)
    base = f"{tenant.path}/webhook-endpoints"
    for i in range(4):
        assert (await api.post(base, key=key, json={"url": f"https://a.example.com/{i}"})).status == 201
    answers = await asyncio.gather(*[api.post(base, key=key, json={"url": f"https://b.example.com/{i}"})
                                     for i in range(12)])
    assert sorted(r.status for r in answers) == [201] + [409] * 11, [(r.status, r.body) for r in answers]
    business_id = ids.decode("biz", tenant.business_id)
    assert await db.fetchval("SELECT count(*) FROM endpoints WHERE business_id = $1", business_id) == 5


async def _live_secrets(db: asyncpg.Connection, endpoint_id: str) -> int:
    return int(await db.fetchval(
        "SELECT count(*) FROM endpoint_secrets WHERE endpoint_id = $1 AND (expires_at IS NULL OR expires_at > now())",
        ids.decode("ep", endpoint_id)))


async def test_at_most_three_secrets_sign_at_once(tenant: Tenant, api: Api, db: asyncpg.Connection) -> None:
    key = await _key(tenant)
    ep = (await api.post(f"{tenant.path}/webhook-endpoints", key=key, json={"url": "https://a.example.com/"})).body
    one = f"{tenant.path}/webhook-endpoints/{ep['id']}"
    for _ in range(2):  # the first secret and two rotations inside the grace period: three sign
        assert (await api.post(f"{one}/secret/rotate", key=key, json={"grace_seconds": 3600})).status == 200
    assert await _live_secrets(db, ep["id"]) == 3
    current = (await api.get(f"{one}/secret", key=key)).body["secret"]
    r = await api.post(f"{one}/secret/rotate", key=key, json={"grace_seconds": 3600})
    assert r.status == 409 and r.problem["code"] == "conflict", r.body
    assert r.problem["limit"] == {"name": "live_secrets_per_endpoint", "max": 3}
    assert "grace_seconds" in r.problem["detail"]  # says how to get on
    assert await _live_secrets(db, ep["id"]) == 3
    assert (await api.get(f"{one}/secret", key=key)).body["secret"] == current  # nothing changed
    # Retiring the current secret at once keeps three signing: allowed.
    r = await api.post(f"{one}/secret/rotate", key=key, json={"grace_seconds": 0})
    assert r.status == 200, r.body
    assert await _live_secrets(db, ep["id"]) == 3
    assert (await api.get(f"{one}/secret", key=key)).body["secret"] == r.body["secret"]
