"""Key verification beyond the routes: the per-key rate limit, Redis outages and a restarted Redis."""

from __future__ import annotations

import asyncio
import base64
import os
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aredis
from aiohttp.test_utils import TestServer

from api.app import create_app
from api.context import KEYS
from api.keyauth import KeyVerifier, Verified
from shared.errors import RateLimited, Unauthorized
from shared.settings import Settings
from tests.helpers import Api, Tenant


@pytest.mark.parametrize("settings_overrides", [{"rate_limit_per_s": 2, "rate_limit_burst": 5}])
async def test_per_key_rate_limit_answers_429_with_retry_after(tenant: Tenant, api: Api) -> None:
    key = (await tenant.create_key())["key"]
    other = (await tenant.create_key())["key"]
    statuses = [(await api.get("/v1/me", key=key)).status for _ in range(8)]
    assert statuses[:5] == [200] * 5
    assert 429 in statuses[5:]
    r = await api.get("/v1/me", key=key)
    assert r.status == 429
    assert r.problem["code"] == "rate_limited"
    assert int(r.headers["Retry-After"]) >= 1
    # The limit is per key: another key of the same business is unaffected.
    assert (await api.get("/v1/me", key=other)).status == 200


async def test_without_redis_keys_are_checked_against_postgres(
    tenant: Tenant, api: Api, settings: Settings
) -> None:
    """Redis down: valid keys still work (no throttling, no cache), deleted keys still fail."""
    key = await tenant.create_key()
    doomed = await tenant.create_key()
    assert (await tenant.owner.delete(f"{tenant.path}/api-keys/{doomed['id']}")).status == 204
    broken = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    server = TestServer(create_app(broken), host="127.0.0.1")
    await server.start_server()
    try:
        async with Api(str(server.make_url(""))) as client:
            assert (await client.get("/v1/me", key=key["key"])).status == 200
            assert (await client.get("/v1/me", key=key["key"])).status == 200
            assert (await client.get("/v1/me", key=doomed["key"])).status == 401
    finally:
        await server.close()


async def test_delete_is_refused_when_redis_cannot_take_the_revocation(
    tenant: Tenant, settings: Settings, db: asyncpg.Connection
) -> None:
    """Without Redis we cannot reach the other processes' caches: 503, and the key is kept."""
    key = await tenant.create_key()
    broken = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    server = TestServer(create_app(broken), host="127.0.0.1")
    await server.start_server()
    try:
        async with Api(str(server.make_url(""))) as owner:
            assert (await owner.login(tenant.owner_email, tenant.password)).status in (503,)
            # Signing in needs Redis (the throttle); reuse the existing session instead.
            for cookie in tenant.owner.http.cookie_jar:
                owner.http.cookie_jar.update_cookies({cookie.key: cookie.value})
            owner.csrf = tenant.owner.csrf
            r = await owner.delete(f"{tenant.path}/api-keys/{key['id']}")
            assert r.status == 503
            assert r.problem["code"] == "service_unavailable"
    finally:
        await server.close()
    assert await db.fetchval("SELECT count(*) FROM api_keys WHERE display_prefix = $1", key["key"][:12]) == 1


async def test_a_redis_restarted_empty_empties_every_key_cache(
    tenant: Tenant, api: Api, db: asyncpg.Connection, redis_url: str
) -> None:
    """A key deleted while its revocation marker was lost must not live on in a process cache."""
    key = await tenant.create_key()
    client = aredis.Redis.from_url(redis_url)
    await client.flushdb()  # this app process will be the one to create the epoch
    assert (await api.get("/v1/me", key=key["key"])).status == 200  # cached in the app process now
    # Delete the row behind the app's back and lose every marker, as a Redis restart would.
    await db.execute("DELETE FROM api_keys WHERE display_prefix = $1", key["key"][:12])
    await client.flushdb()
    await client.aclose()
    assert (await api.get("/v1/me", key=key["key"])).status == 401


def test_settings_reject_a_short_secret_key() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Settings(DATABASE_URL="postgresql://x", REDIS_URL="redis://x",  # type: ignore[call-arg]
                 secret_key=base64.b64encode(os.urandom(16)).decode())


class _CountedScript:
    """The key check's script, calling through and counting its calls (each is one Redis round trip)."""

    def __init__(self, script: Any) -> None:
        self.script = script
        self.calls: list[int] = []  # the number of requests each call checked

    async def __call__(self, keys: list[str], args: list[Any]) -> Any:
        self.calls.append((len(keys) - 1) // 4)
        return await self.script(keys=keys, args=args)


def _counted(server: TestServer) -> tuple[KeyVerifier, _CountedScript]:
    verifier = server.app[KEYS]
    counted = _CountedScript(verifier._checks._script)
    verifier._checks._script = counted  # type: ignore[assignment]
    return verifier, counted


# 0.001/s: no request's allowance comes back during the test.
@pytest.mark.parametrize("settings_overrides", [{"rate_limit_per_s": 0.001, "rate_limit_burst": 5}])
async def test_concurrent_checks_share_one_round_trip_and_each_counts_against_the_limit(
    tenant: Tenant, server: TestServer
) -> None:
    key = (await tenant.create_key())["key"]
    verifier, counted = _counted(server)
    await verifier.verify(key)  # cached now; one of the five
    results = await asyncio.gather(*(verifier.verify(key) for _ in range(20)), return_exceptions=True)
    assert counted.calls == [1, 20], "the twenty checks went to Redis as one call"
    assert sum(isinstance(r, Verified) for r in results) == 4
    assert all(isinstance(r, RateLimited) for r in results if not isinstance(r, Verified))


async def test_a_deleted_key_is_refused_in_a_batch_beside_a_live_one(tenant: Tenant, server: TestServer) -> None:
    live, doomed = (await tenant.create_key())["key"], await tenant.create_key()
    verifier, counted = _counted(server)
    await asyncio.gather(verifier.verify(live), verifier.verify(doomed["key"]))  # both cached in this process
    assert (await tenant.owner.delete(f"{tenant.path}/api-keys/{doomed['id']}")).status == 204
    results = await asyncio.gather(*(verifier.verify(k) for k in [live, doomed["key"]] * 3), return_exceptions=True)
    assert counted.calls[-1] == 6
    assert [type(r) for r in results] == [Verified, Unauthorized] * 3


async def test_a_key_is_refused_on_another_spelling_of_its_business_id(tenant: Tenant, api: Api) -> None:
    """The key's business is compared by its public id: only the one canonical spelling is that business."""
    key = (await tenant.create_key())["key"]
    assert (await api.get(f"{tenant.path}/calls", key=key)).status == 200
    upper = "biz_" + tenant.business_id.removeprefix("biz_").upper()
    assert upper != tenant.business_id
    for path in [f"/v1/businesses/{upper}/calls", "/v1/businesses/biz_nope/calls"]:
        r = await api.get(path, key=key)
        assert r.status == 401 and r.problem["code"] == "unauthorized", path
