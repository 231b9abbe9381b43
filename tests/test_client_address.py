"""The client's address behind proxies (KAIHOOKS_TRUSTED_PROXIES): what the sign-in throttle, the audit
log, sessions and the access log see. The app runs on a real port; the test client is 127.0.0.1."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestServer
from hypothesis import given
from hypothesis import strategies as st

from api.app import create_app, runner_options
from api.client_address import resolve
from shared import addresses
from shared.settings import Settings
from tests.helpers import Api, Tenant, until


@pytest.fixture(autouse=True)
def _clear_login_throttle(clear_login_throttle: None) -> None:
    """Every test here counts sign-in failures; start and end each with none."""


def _nets(*cidrs: str) -> tuple[Any, ...]:
    import ipaddress

    return tuple(ipaddress.ip_network(c) for c in cidrs)


# ---- the rule, as a pure function ------------------------------------------------------------------------------


@pytest.mark.parametrize("peer, forwarded, trusted, client", [
    # No trusted proxies (the default): the header is ignored, whatever it says.
    ("127.0.0.1", ["203.0.113.5"], (), "127.0.0.1"),
    # From a peer that is not trusted, likewise.
    ("198.51.100.1", ["203.0.113.5"], ("127.0.0.1/32",), "198.51.100.1"),
    # From a trusted proxy: its right-most entry is the client.
    ("127.0.0.1", ["203.0.113.5"], ("127.0.0.1/32",), "203.0.113.5"),
    # A client cannot choose its address by sending its own header: the right-most untrusted entry wins.
    ("127.0.0.1", ["6.6.6.6, 203.0.113.5"], ("127.0.0.1/32",), "203.0.113.5"),
    # Chains of trusted proxies are walked from the right; several headers read as one list.
    ("127.0.0.1", ["6.6.6.6, 203.0.113.9", "10.1.2.3"], ("127.0.0.1/32", "10.0.0.0/8"), "203.0.113.9"),
    # Every hop trusted: the left-most one is as far as we can see.
    ("127.0.0.1", ["10.0.0.7, 10.1.2.3"], ("127.0.0.1/32", "10.0.0.0/8"), "10.0.0.7"),
    # A trusted proxy that wrote something unreadable: the nearest address we can vouch for.
    ("127.0.0.1", ["203.0.113.5, garbage"], ("127.0.0.1/32",), "127.0.0.1"),
    ("127.0.0.1", ["garbage, 10.1.2.3"], ("127.0.0.1/32", "10.0.0.0/8"), "10.1.2.3"),
    # No header from a trusted proxy: the proxy itself.
    ("127.0.0.1", [], ("127.0.0.1/32",), "127.0.0.1"),
    # Ports, brackets and IPv4-mapped IPv6 are understood.
    ("127.0.0.1", ["[2001:db8::1]:443"], ("127.0.0.1/32",), "2001:db8::1"),
    ("127.0.0.1", ["203.0.113.5:5555"], ("127.0.0.1/32",), "203.0.113.5"),
    ("::ffff:127.0.0.1", ["::ffff:203.0.113.5"], ("127.0.0.1/32",), "203.0.113.5"),
    # No peer address at all (a unix socket): nothing to believe.
    (None, ["203.0.113.5"], ("127.0.0.1/32",), None),
])
def test_the_right_most_untrusted_address_is_the_client(
    peer: str | None, forwarded: list[str], trusted: tuple[str, ...], client: str | None
) -> None:
    found = resolve(peer, forwarded, _nets(*trusted))
    assert (str(found) if found is not None else None) == client


@given(st.one_of(st.none(), st.text(max_size=60)), st.lists(st.text(max_size=80), max_size=4))
def test_resolve_never_raises(peer: str | None, forwarded: list[str]) -> None:
    resolve(peer, forwarded, _nets("127.0.0.1/32", "::1/128", "10.0.0.0/8"))


def test_ipv6_clients_share_a_bucket_per_64() -> None:
    assert addresses.bucket("2001:db8:1:2::1") == addresses.bucket("2001:db8:1:2:ffff:ffff:ffff:ffff")
    assert addresses.bucket("2001:db8:1:2::1") != addresses.bucket("2001:db8:1:3::1")
    assert addresses.bucket("203.0.113.5") == "203.0.113.5"
    assert addresses.bucket("203.0.113.5") != addresses.bucket("203.0.113.6")


# ---- through the API -------------------------------------------------------------------------------------------

_BEHIND_PROXY = {"trusted_proxies": ("127.0.0.1/32", "10.0.0.0/8"), "login_max_failures_per_ip": 3}


async def _wrong(api: Api, email: str, forwarded_for: str | None = None) -> int:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else None
    r = await api.post("/v1/auth/login", json={"email": email, "password": "wrong password"}, headers=headers)
    return r.status


@pytest.mark.parametrize("settings_overrides", [_BEHIND_PROXY])
async def test_behind_a_trusted_proxy_each_client_has_its_own_sign_in_budget(api: Api) -> None:
    """Ten users behind one load balancer: one of them guessing does not lock the others out."""
    assert [await _wrong(api, f"u{i}@example.test", "203.0.113.5") for i in range(3)] == [401] * 3
    assert await _wrong(api, "u9@example.test", "203.0.113.5") == 429
    # Another client behind the same proxy is unaffected...
    assert await _wrong(api, "u10@example.test", "203.0.113.6") == 401
    # ...and prepending an address of one's own choosing does not escape the budget.
    assert await _wrong(api, "u11@example.test", "198.51.100.1, 203.0.113.5") == 429


@pytest.mark.parametrize("settings_overrides", [{"login_max_failures_per_ip": 3}])
async def test_without_trusted_proxies_the_header_is_ignored(api: Api) -> None:
    """The default: a client that invents X-Forwarded-For values is still counted at its own address."""
    for i in range(3):
        assert await _wrong(api, f"v{i}@example.test", f"203.0.113.{i}") == 401
    assert await _wrong(api, "v9@example.test", "203.0.113.200") == 429


@pytest.mark.parametrize("settings_overrides", [_BEHIND_PROXY])
async def test_ipv6_clients_are_counted_per_64(api: Api) -> None:
    for i in range(3):
        assert await _wrong(api, f"w{i}@example.test", f"2001:db8:1:2::{i + 1}") == 401
    # Another address in the same /64 (an attacker's to choose from) shares the budget; the next /64 does not.
    assert await _wrong(api, "w8@example.test", "2001:db8:1:2:abcd::99") == 429
    assert await _wrong(api, "w9@example.test", "2001:db8:1:3::1") == 401


@pytest.mark.parametrize("settings_overrides", [_BEHIND_PROXY])
async def test_audit_rows_and_sessions_record_the_forwarded_client(
    tenant: Tenant, api: Api, db: asyncpg.Connection
) -> None:
    hop = {"X-Forwarded-For": "6.6.6.6, 203.0.113.77, 10.9.8.7"}
    r = await api.post("/v1/auth/login", json={"email": tenant.owner_email, "password": tenant.password},
                       headers=hop)
    assert r.status == 200
    api.csrf = r.body["csrf_token"]
    assert await db.fetchval("SELECT ip FROM sessions ORDER BY created_at DESC LIMIT 1") == "203.0.113.77"
    r = await api.post(f"{tenant.path}/api-keys", json={"name": "from behind the proxy"}, headers=hop)
    assert r.status == 201
    ip = await db.fetchval("SELECT ip FROM audit_log WHERE target_id = $1 AND action = 'api_key.created'",
                           r.body["id"])
    assert ip == "203.0.113.77"


@pytest.fixture
async def logged_server(settings: Settings) -> AsyncIterator[TestServer]:
    """The app with its access log on, as ``python -m api`` runs it."""
    srv = TestServer(create_app(settings), host="127.0.0.1")
    await srv.start_server(**runner_options(settings))
    yield srv
    await srv.close()


@pytest.mark.parametrize("settings_overrides", [{**_BEHIND_PROXY, "access_log": True}])
async def test_the_access_log_names_the_same_client(logged_server: TestServer,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kaihooks.access")
    async with Api(str(logged_server.make_url(""))) as client:
        r = await client.get("/healthz", headers={"X-Forwarded-For": "6.6.6.6, 2001:db8::42"})
        assert r.status == 200
        r = await client.get("/healthz")
        assert r.status == 200

    def lines() -> list[logging.LogRecord]:
        return [rec for rec in caplog.records if rec.name == "kaihooks.access"]

    await until(lambda: len(lines()) >= 2, 5, "two access log lines")
    assert [getattr(rec, "client", None) for rec in lines()] == ["2001:db8::42", "127.0.0.1"]
    assert getattr(lines()[0], "status", None) == 200 and getattr(lines()[0], "path", None) == "/healthz"
