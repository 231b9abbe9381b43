"""KAIHOOKS_SECRET_KEY keys nothing itself: webhook secrets and API-key hashes use keys derived from it with
HKDF, one per purpose, and a sealed secret opens only for its own endpoint. What was stored before keeps
working (old API-key hashes are replaced at the key's next use), and so does what was stored under a master
key that has since been rotated, while it is in KAIHOOKS_OLD_SECRET_KEYS."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestServer
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from api.app import create_app
from dispatcher.message import SecretKeys
from shared import ids
from shared.db import create_pool
from shared.key_rotation import reseal
from shared.master_keys import API_KEY_HASHES, WEBHOOK_SECRETS, key_id_of
from shared.secrets_box import Sealed, SecretBox
from shared.settings import Settings
from tests.helpers import Api, Tenant
from tests.processes import ROOT, process_env
from tests.test_delivery import verify_standard_webhook
from tests.world import FAST, World

LEGACY_AAD = b"kaihooks/webhook-secret/v1"  # what every secret was sealed with before


def hkdf(master: bytes, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(master)


def hmac_sha256(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


async def _endpoint(api: Api, tenant: Tenant, key: str, url: str = "https://hooks.example.com/k") -> dict[str, Any]:
    r = await api.post(f"{tenant.path}/webhook-endpoints", key=key, json={"url": url})
    assert r.status == 201, r.body
    return r.body  # type: ignore[no-any-return]


async def _sealed_row(db: asyncpg.Connection, endpoint_id: str) -> asyncpg.Record:
    return await db.fetchrow("SELECT id, key_id, nonce, ciphertext, scheme FROM endpoint_secrets "
                             "WHERE endpoint_id = $1 AND expires_at IS NULL", ids.decode("ep", endpoint_id))


@pytest.fixture
async def key(tenant: Tenant) -> str:
    return str((await tenant.create_key(scopes=["webhooks:read", "webhooks:write"]))["key"])


async def test_webhook_secrets_are_sealed_under_a_derived_key_bound_to_their_endpoint(
        tenant: Tenant, api: Api, db: asyncpg.Connection, settings: Settings, key: str) -> None:
    a, b = await _endpoint(api, tenant, key), await _endpoint(api, tenant, key)
    row = await _sealed_row(db, a["id"])
    master = settings.secret_key_bytes
    with pytest.raises(InvalidTag):  # the master key itself seals nothing any more
        AESGCM(master).decrypt(row["nonce"], row["ciphertext"], LEGACY_AAD)
    aad = b"kaihooks/webhook-secret/v2 endpoint " + ids.decode("ep", a["id"]).bytes  # type: ignore[union-attr]
    opened = AESGCM(hkdf(master, WEBHOOK_SECRETS)).decrypt(row["nonce"], row["ciphertext"], aad)
    assert opened.decode() == a["secret"]
    assert (row["scheme"], row["key_id"]) == (2, key_id_of(master))

    # A's sealed secret copied onto B (say, by someone who can write the table) does not open as B's.
    await db.execute("UPDATE endpoint_secrets SET nonce = $2, ciphertext = $3 WHERE id = $1",
                     (await _sealed_row(db, b["id"]))["id"], row["nonce"], row["ciphertext"])
    r = await api.get(f"{tenant.path}/webhook-endpoints/{b['id']}/secret", key=key)
    assert r.status == 409 and a["secret"] not in r.raw.decode(), (r.status, r.body)
    assert "grace_seconds 0" in r.problem["detail"]
    keys = SecretKeys(SecretBox(master))  # the worker's side: it will not sign B's webhooks with A's secret
    with pytest.raises(InvalidTag):
        keys.open(Sealed(row["key_id"], row["nonce"], row["ciphertext"], 2), ids.decode("ep", b["id"]))  # type: ignore[arg-type]
    # The way out it names: a fresh secret, the unreadable one retired at once.
    r = await api.post(f"{tenant.path}/webhook-endpoints/{b['id']}/secret/rotate", key=key,
                       json={"grace_seconds": 0})
    assert r.status == 200
    assert (await api.get(f"{tenant.path}/webhook-endpoints/{b['id']}/secret", key=key)).body == r.body


async def test_api_keys_are_hashed_with_a_derived_key(tenant: Tenant, db: asyncpg.Connection,
                                                      settings: Settings) -> None:
    secret = (await tenant.create_key())["key"]
    row = await db.fetchrow("SELECT key_hash, hash_scheme, hash_key_id FROM api_keys WHERE display_prefix = $1",
                            secret[:12])
    master = settings.secret_key_bytes
    assert row["key_hash"] != hmac_sha256(master, secret)
    assert row["key_hash"] == hmac_sha256(hkdf(master, API_KEY_HASHES), secret)
    assert (row["hash_scheme"], row["hash_key_id"]) == (2, key_id_of(master))
    # The two purposes never share a key.
    assert hkdf(master, API_KEY_HASHES) != hkdf(master, WEBHOOK_SECRETS)


async def test_a_key_hashed_the_old_way_still_works_and_is_rehashed_at_its_next_use(
        tenant: Tenant, api: Api, db: asyncpg.Connection, settings: Settings) -> None:
    created = await tenant.create_key(name="from before")
    secret, master = created["key"], settings.secret_key_bytes
    key_id = ids.decode("key", created["id"])
    # As rows were stored before migration 0011.
    await db.execute("UPDATE api_keys SET key_hash = $2, hash_scheme = 1, hash_key_id = NULL WHERE id = $1",
                     key_id, hmac_sha256(master, secret))
    r = await api.get("/v1/me", key=secret)
    assert r.status == 200 and r.body["api_key"]["id"] == created["id"], r.body
    row = await db.fetchrow("SELECT key_hash, hash_scheme, hash_key_id FROM api_keys WHERE id = $1", key_id)
    assert row["key_hash"] == hmac_sha256(hkdf(master, API_KEY_HASHES), secret)
    assert (row["hash_scheme"], row["hash_key_id"]) == (2, key_id_of(master))
    assert (await api.get("/v1/me", key=secret)).status == 200


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return dict(FAST)


async def test_a_secret_sealed_the_old_way_still_opens_and_signs(world: World, settings: Settings) -> None:
    ep = await world.endpoint("/ok")
    master = settings.secret_key_bytes
    legacy_secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    nonce = os.urandom(12)
    # As rows were stored before migration 0011 (scheme 1 by its default).
    await world.db.execute(
        """UPDATE endpoint_secrets SET key_id = $2, nonce = $3, ciphertext = $4, scheme = DEFAULT
           WHERE endpoint_id = $1""",
        ids.decode("ep", ep["id"]), key_id_of(master), nonce,
        AESGCM(master).encrypt(nonce, legacy_secret.encode(), LEGACY_AAD))
    one = f"{world.tenant.path}/webhook-endpoints/{ep['id']}"
    assert (await world.api.get(f"{one}/secret", key=world.key)).body["secret"] == legacy_secret
    await world.publish()
    [got] = await world.receiver.wait_for(1, "/ok")
    headers = {k.lower(): v for k, v in got.headers.items()}
    assert verify_standard_webhook(legacy_secret, headers, got.body)


async def kaihooks(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "shared.cli", *args], cwd=ROOT, text=True, capture_output=True,
        env=process_env(settings, **env), timeout=60, check=False)


def _with(settings: Settings, **changes: Any) -> Settings:
    """The same settings but ``changes``, built afresh (a copy would keep the keys cached from the master key)."""
    values = settings.model_dump()
    for name in ("database_url", "redis_url", "port"):
        values[name.upper()] = values.pop(name)
    return Settings(**{**values, **changes})


@pytest.fixture
async def rotated(settings: Settings) -> AsyncIterator[tuple[Settings, str, str]]:
    """The app again, after KAIHOOKS_SECRET_KEY was rotated: a new master key, the old one in
    KAIHOOKS_OLD_SECRET_KEYS."""
    after = _with(settings, secret_key=base64.b64encode(os.urandom(32)).decode(),
                  old_secret_keys=(settings.secret_key,))
    server = TestServer(create_app(after), host="127.0.0.1")
    await server.start_server()
    try:
        yield after, str(server.make_url("")), settings.secret_key
    finally:
        await server.close()


async def test_rotating_the_master_key_keeps_keys_and_secrets_working(
        tenant: Tenant, api: Api, db: asyncpg.Connection, key: str, settings: Settings,
        rotated: tuple[Settings, str, str]) -> None:
    endpoint = await _endpoint(api, tenant, key)
    idle = (await tenant.create_key(name="not used during the rotation"))["key"]
    after, base_url, old = rotated
    new_key_id = key_id_of(after.secret_key_bytes)
    async with Api(base_url) as new_app:
        r = await new_app.get(f"{tenant.path}/webhook-endpoints/{endpoint['id']}/secret", key=key)
        assert r.status == 200 and r.body["secret"] == endpoint["secret"], r.body  # sealed under the old key
        row = await db.fetchrow("SELECT hash_key_id FROM api_keys WHERE display_prefix = $1", key[:12])
        assert row["hash_key_id"] == new_key_id  # re-hashed under the new key at its use
    env = {"KAIHOOKS_OLD_SECRET_KEYS": old}
    status = await kaihooks(after, "secrets", "status", **env)
    assert status.returncode == 0 and f"{key_id_of(settings.secret_key_bytes)} (KAIHOOKS_OLD_SECRET_KEYS)" in \
        status.stdout, status
    try:
        resealed = await kaihooks(after, "secrets", "reseal", **env)
        assert resealed.returncode == 0 and "re-sealed" in resealed.stdout, resealed
        assert (await _sealed_row(db, endpoint["id"]))["key_id"] == new_key_id
        assert await db.fetchval("""SELECT count(*) FROM endpoint_secrets WHERE key_id <> $1
                                    AND (expires_at IS NULL OR expires_at > now())""", new_key_id) == 0
        # The old key retired: secrets open; keys used meanwhile work, keys never used meanwhile do not.
        retired = _with(after, old_secret_keys=())
        server = TestServer(create_app(retired), host="127.0.0.1")
        await server.start_server()
        try:
            async with Api(str(server.make_url(""))) as final:
                r = await final.get(f"{tenant.path}/webhook-endpoints/{endpoint['id']}/secret", key=key)
                assert r.status == 200 and r.body["secret"] == endpoint["secret"]
                assert (await final.get("/v1/me", key=idle)).status == 401
        finally:
            await server.close()
    finally:
        # Every secret of this test session back under the session's master key, for the tests after this one.
        back = await create_pool(_with(settings, old_secret_keys=(after.secret_key,)), min_size=1, max_size=1)
        try:
            assert not (await reseal(back, _with(settings, old_secret_keys=(after.secret_key,)))).unopenable
        finally:
            await back.close()
