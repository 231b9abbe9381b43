"""Sign-in, sessions, CSRF, throttling, roles and /v1/me with a session."""

from __future__ import annotations

import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from tests.helpers import INTERNAL_TOKEN, Api, Tenant, make_tenant


@pytest.fixture(autouse=True)
def _clear_login_throttle(clear_login_throttle: None) -> None:
    """Every test here signs in from 127.0.0.1; start and end each with no failures counted."""


async def test_login_sets_a_hardened_cookie_and_returns_csrf(tenant: Tenant, api: Api) -> None:
    r = await api.login(tenant.owner_email, tenant.password)
    assert r.status == 200
    assert set(r.body) == {"user", "memberships", "csrf_token"}
    assert r.body["user"]["email"] == tenant.owner_email
    assert r.body["memberships"] == [{"business": {"id": tenant.business_id, "name": "Acme Plumbing"},
                                      "role": "owner"}]
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    # KAIHOOKS_DEV=1 in these tests: no Secure flag so plain http works locally.
    assert "Secure" not in cookie


@pytest.mark.parametrize("settings_overrides", [{"dev": False}])
async def test_cookie_is_secure_outside_dev(tenant: Tenant, api: Api) -> None:
    r = await api.login(tenant.owner_email, tenant.password)
    assert r.status == 200
    assert "Secure" in r.headers["Set-Cookie"]


async def test_wrong_password_and_unknown_email_look_the_same(tenant: Tenant, api: Api) -> None:
    wrong = await api.login(tenant.owner_email, "not the password")
    unknown = await api.login("nobody@example.test", "not the password")
    assert wrong.status == unknown.status == 401
    assert wrong.body == unknown.body
    assert "Set-Cookie" not in wrong.headers


async def test_me_with_a_session(tenant: Tenant) -> None:
    r = await tenant.owner.get("/v1/me")
    assert r.status == 200
    assert r.body["type"] == "user"
    assert r.body["user"]["email"] == tenant.owner_email
    assert r.body["memberships"][0]["role"] == "owner"
    # A page loaded after sign-in gets the session's CSRF token here; it is the one sign-in returned.
    assert r.body["csrf_token"] == tenant.owner.csrf


async def test_logout_needs_csrf_then_ends_the_session(tenant: Tenant) -> None:
    r = await tenant.owner.post("/v1/auth/logout", csrf=False)
    assert r.status == 403 and r.problem["code"] == "forbidden"
    r = await tenant.owner.post("/v1/auth/logout")
    assert r.status == 204
    assert (await tenant.owner.get("/v1/me")).status == 401


async def test_unsafe_methods_need_the_csrf_header(tenant: Tenant, db: asyncpg.Connection) -> None:
    before = await db.fetchval("SELECT count(*) FROM api_keys")
    r = await tenant.owner.post(f"{tenant.path}/api-keys", json={"name": "x"}, csrf=False)
    assert r.status == 403 and r.problem["code"] == "forbidden"
    r = await tenant.owner.post(f"{tenant.path}/api-keys", json={"name": "x"}, csrf=False,
                                headers={"X-CSRF-Token": "wrong"})
    assert r.status == 403
    assert await db.fetchval("SELECT count(*) FROM api_keys") == before
    made = await tenant.create_key()
    r = await tenant.owner.delete(f"{tenant.path}/api-keys/{made['id']}", csrf=False)
    assert r.status == 403


async def test_expired_session_is_refused(tenant: Tenant, db: asyncpg.Connection) -> None:
    await db.execute("UPDATE sessions SET expires_at = now() - interval '1 second'")
    r = await tenant.owner.get("/v1/me")
    assert r.status == 401 and r.problem["code"] == "unauthorized"


@pytest.mark.parametrize("settings_overrides", [{"login_max_failures": 10}])
async def test_login_is_throttled_per_email(tenant: Tenant, api: Api) -> None:
    for _ in range(10):
        assert (await api.login(tenant.owner_email, "wrong password")).status == 401
    r = await api.login(tenant.owner_email, tenant.password)
    assert r.status == 429
    assert r.problem["code"] == "rate_limited"
    assert 1 <= int(r.headers["Retry-After"]) <= 15 * 60


@pytest.mark.parametrize("settings_overrides", [{"login_max_failures_per_ip": 10}])
async def test_login_is_throttled_per_ip(tenant: Tenant, api: Api) -> None:
    for i in range(10):
        assert (await api.login(f"guess{i}@example.test", "wrong password")).status == 401
    r = await api.login(tenant.owner_email, tenant.password)
    assert r.status == 429


async def test_success_resets_the_email_counter(tenant: Tenant, api: Api) -> None:
    for _ in range(5):
        await api.login(tenant.owner_email, "wrong password")
    assert (await api.login(tenant.owner_email, tenant.password)).status == 200


@pytest.mark.parametrize("body", [{}, {"email": "a@b.c"}, {"email": 1, "password": "x"}, "string"])
async def test_bad_login_bodies_are_422(api: Api, body: object) -> None:
    r = await api.post("/v1/auth/login", json=body)
    assert r.status == 422
    assert r.problem["errors"]


async def test_api_keys_never_work_on_auth_routes(tenant: Tenant, api: Api) -> None:
    key = (await tenant.create_key())["key"]
    r = await api.post("/v1/auth/login", json={"email": tenant.owner_email, "password": tenant.password}, key=key)
    assert r.status == 401
    r = await api.post("/v1/auth/logout", key=key)
    assert r.status == 401


async def test_sessions_never_work_on_internal_routes(tenant: Tenant) -> None:
    r = await tenant.owner.post("/internal/v1/businesses", json={"name": "x"})
    assert r.status == 401


async def test_non_member_gets_404_for_another_business(server: TestServer, database_url: str,
                                                        tenant: Tenant) -> None:
    async with make_tenant(str(server.make_url("")), database_url) as other:
        r = await other.owner.get(f"{tenant.path}/api-keys")
        assert r.status == 404 and r.problem["code"] == "not_found"
        r = await other.owner.post(f"{tenant.path}/api-keys", json={"name": "x"})
        assert r.status == 404
        r = await other.owner.get("/v1/businesses/biz_notanid/api-keys")
        assert r.status == 404


async def test_internal_business_creation_needs_a_configured_token(api: Api) -> None:
    assert (await api.post("/internal/v1/businesses", json={"name": "x"})).status == 401
    assert (await api.post("/internal/v1/businesses", json={"name": "x"}, key="wrong")).status == 401
    r = await api.post("/internal/v1/businesses", json={"name": "Bob's Garage"}, key="test-internal-token-2")
    assert r.status == 201
    assert r.body["id"].startswith("biz_") and r.body["name"] == "Bob's Garage"
    r = await api.post("/internal/v1/businesses", json={"name": ""}, key=INTERNAL_TOKEN)
    assert r.status == 422


@pytest.mark.parametrize("settings_overrides", [{"internal_tokens": ()}])
async def test_no_internal_tokens_refuses_everything(api: Api) -> None:
    r = await api.post("/internal/v1/businesses", json={"name": "x"}, key=INTERNAL_TOKEN)
    assert r.status == 401
    r = await api.post("/internal/v1/businesses", json={"name": "x"}, key="")
    assert r.status == 401


async def test_a_missing_or_dead_credential_asks_for_bearer(tenant: Tenant, api: Api,
                                                          db: asyncpg.Connection) -> None:
    """The contract's word on every 401, whichever credential the route also takes."""
    for path in ("/v1/me", f"{tenant.path}/api-keys", f"{tenant.path}/webhook-endpoints", "/v1/auth/logout"):
        r = await (api.post(path) if path.endswith("logout") else api.get(path))
        assert r.status == 401 and r.headers["WWW-Authenticate"] == "Bearer", (path, r.headers)
    wrong = await api.login(tenant.owner_email, "not the password")
    assert wrong.status == 401 and wrong.headers["WWW-Authenticate"] == "Bearer"
    await db.execute("UPDATE sessions SET expires_at = now() - interval '1 second'")
    r = await tenant.owner.get("/v1/me")
    assert r.status == 401 and r.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("settings_overrides", [{"session_rate_limit_per_s": 2, "session_rate_limit_burst": 5}])
async def test_sessions_are_rate_limited_per_session(tenant: Tenant, server: TestServer) -> None:
    statuses = [(await tenant.owner.get("/v1/me")).status for _ in range(8)]
    assert statuses[:5] == [200] * 5 and 429 in statuses[5:], statuses
    r = await tenant.owner.get(f"{tenant.path}/api-keys")
    assert r.status == 429 and r.problem["code"] == "rate_limited" and int(r.headers["Retry-After"]) >= 1
    # The limit is per session: the same user signed in elsewhere is unaffected.
    async with Api(str(server.make_url(""))) as elsewhere:
        assert (await elsewhere.login(tenant.owner_email, tenant.password)).status == 200
        assert (await elsewhere.get("/v1/me")).status == 200


@pytest.mark.parametrize("settings_overrides", [{"sessions_max_per_user": 2}])
async def test_a_new_sign_in_ends_the_oldest_session_past_the_cap(tenant: Tenant, server: TestServer) -> None:
    async with Api(str(server.make_url(""))) as second, Api(str(server.make_url(""))) as third:
        assert (await second.login(tenant.owner_email, tenant.password)).status == 200
        assert (await tenant.owner.get("/v1/me")).status == 200
        assert (await third.login(tenant.owner_email, tenant.password)).status == 200
        assert (await tenant.owner.get("/v1/me")).status == 401  # the oldest of three
        assert (await second.get("/v1/me")).status == 200
        assert (await third.get("/v1/me")).status == 200
