"""A Redis that answers with errors (out of memory, or read-only after a failover) is treated as a Redis
that is down: key-authenticated requests go on against Postgres, sign-in answers 503, and each failure is
counted in ``kaihooks_redis_failures_total`` for alerting. The Redis here is this test's own server."""

from __future__ import annotations

import re
from typing import Any

import pytest
import redis

from tests.helpers import INTERNAL_TOKEN, Api, Tenant
from tests.test_delivery_reliability import PrivateRedis
from tests.test_publishing import event, publish


@pytest.fixture
def settings_overrides(own_redis: PrivateRedis) -> dict[str, Any]:
    return {"REDIS_URL": own_redis.url}


def _break(server: PrivateRedis, fault: str) -> None:
    client = redis.Redis(port=server.port)
    try:
        if fault == "oom":
            client.config_set("maxmemory-policy", "noeviction")
            client.config_set("maxmemory", 1)
        else:  # a replica of a primary that is not there: every write is refused with READONLY
            client.replicaof("127.0.0.1", 1)
    finally:
        client.close()


async def _failures(api: Api, use: str, kind: str = "error") -> float:
    text = (await api.get("/metrics", key=INTERNAL_TOKEN)).raw.decode()
    m = re.search(rf'^kaihooks_redis_failures_total{{kind="{kind}",use="{use}"}} ([0-9.e+]+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


@pytest.mark.parametrize("fault", ["oom", "readonly"])
async def test_redis_answering_errors_is_the_documented_degraded_mode(
    fault: str, tenant: Tenant, api: Api, own_redis: PrivateRedis
) -> None:
    key = (await tenant.create_key(scopes=["events:read"]))["key"]
    doomed = await tenant.create_key()
    assert (await api.get("/v1/me", key=key)).status == 200
    before = await _failures(api, "key_check")
    _break(own_redis, fault)

    # Keys are checked against Postgres, without the rate limit.
    for _ in range(3):
        r = await api.get("/v1/me", key=key)
        assert r.status == 200, r.raw[:300]
    assert (await api.get(f"{tenant.path}/events", key=key)).status == 200
    assert await _failures(api, "key_check") >= before + 3

    # Sign-in cannot count attempts: it is refused as unavailable (never a 500), and counted.
    r = await api.login(tenant.owner_email, tenant.password)
    assert r.status == 503 and r.problem["code"] == "service_unavailable" and r.headers["Retry-After"]
    assert await _failures(api, "sign_in") >= 1

    # A deletion that cannot set the revocation marker is refused, and the key keeps working.
    r = await tenant.owner.delete(f"{tenant.path}/api-keys/{doomed['id']}")
    assert r.status == 503 and r.problem["code"] == "service_unavailable"
    assert (await api.get("/v1/me", key=doomed["key"])).status == 200

    # Publishing needs no Redis: the events are accepted (the cache-version bump is skipped).
    r = await publish(api, event(tenant.business_id))
    assert r.status == 202, r.raw[:300]


async def test_the_key_check_outlives_a_redis_restart_and_lost_scripts(
    tenant: Tenant, api: Api, own_redis: PrivateRedis
) -> None:
    """The key check keeps one connection: a restarted Redis (that connection closed, the check's script
    forgotten) costs no request its Redis check, and nothing is counted as a failure."""
    key = (await tenant.create_key())["key"]
    assert (await api.get("/v1/me", key=key)).status == 200

    async def failures() -> list[float]:
        return [await _failures(api, "key_check", kind) for kind in ("error", "unreachable")]

    before = await failures()
    own_redis.stop()
    own_redis.start_empty()
    for _ in range(3):
        r = await api.get("/v1/me", key=key)
        assert r.status == 200, r.raw[:300]
    client = redis.Redis(port=own_redis.port)
    try:
        # Checked by the new Redis: the key's rate bucket is there.
        assert client.keys("kaihooks:key-rate:*")
        client.script_flush()
        assert (await api.get("/v1/me", key=key)).status == 200
    finally:
        client.close()
    assert await failures() == before
