"""Sign-in under load: the throttle counts each attempt before the password is checked (so concurrent
guesses cannot overshoot it), and password checks are bounded per process. Real Redis, real argon2."""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter

import pytest

from shared.errors import ServiceUnavailable
from shared.password_checks import PasswordChecks
from tests.helpers import Api, Tenant, create_user


@pytest.fixture(autouse=True)
def _clear_login_throttle(clear_login_throttle: None) -> None:
    """Every test here counts sign-in failures; start and end each with none."""


async def _login(api: Api, email: str, password: str) -> int:
    r = await api.post("/v1/auth/login", json={"email": email, "password": password})
    return r.status


@pytest.mark.parametrize("settings_overrides", [{"login_max_failures": 10}])
async def test_concurrent_wrong_passwords_are_checked_at_most_the_limit(tenant: Tenant, api: Api) -> None:
    statuses = await asyncio.gather(*(_login(api, tenant.owner_email, f"wrong {i}") for i in range(30)))
    assert Counter(statuses) == {401: 10, 429: 20}
    # The budget is spent: even the right password waits for the window.
    assert await _login(api, tenant.owner_email, tenant.password) == 429


@pytest.mark.parametrize("settings_overrides", [{"login_max_failures": 3}])
async def test_a_correct_password_resets_the_email_budget(tenant: Tenant, api: Api) -> None:
    assert [await _login(api, tenant.owner_email, "wrong") for _ in range(2)] == [401, 401]
    assert await _login(api, tenant.owner_email, tenant.password) == 200
    assert [await _login(api, tenant.owner_email, "wrong") for _ in range(4)] == [401, 401, 401, 429]


@pytest.mark.parametrize("settings_overrides", [{"login_max_failures_per_ip": 3}])
async def test_successful_sign_ins_do_not_spend_the_address_budget(tenant: Tenant, api: Api) -> None:
    """An office behind one address signs in all day: only failures count against it."""
    for _ in range(5):
        assert await _login(api, tenant.owner_email, tenant.password) == 200
    assert [await _login(api, f"x{i}@example.test", "wrong") for i in range(4)] == [401, 401, 401, 429]


async def _new_user(tenant: Tenant) -> tuple[str, str]:
    email = f"busy-{secrets.token_hex(4)}@example.test"
    await create_user(tenant.database_url, email, tenant.password, [tenant.business_id], "member")
    return email, tenant.password


@pytest.mark.parametrize("settings_overrides", [{"password_checks_max_in_flight": 1,
                                                 "password_checks_max_waiting": 0}])
async def test_password_checks_past_the_bound_answer_503_with_retry_after(tenant: Tenant, api: Api) -> None:
    email, password = await _new_user(tenant)
    results = await asyncio.gather(*(api.post("/v1/auth/login", json={"email": email, "password": password})
                                     for _ in range(12)))
    statuses = Counter(r.status for r in results)
    assert set(statuses) == {200, 503} and statuses[200] >= 1, statuses
    busy = next(r for r in results if r.status == 503)
    assert busy.problem["code"] == "service_unavailable"
    assert busy.headers["Retry-After"] == "1"


@pytest.mark.parametrize("settings_overrides", [{"password_checks_max_in_flight": 1,
                                                 "password_checks_max_waiting": 0, "login_max_failures": 4}])
async def test_attempts_refused_as_busy_do_not_spend_the_budget(tenant: Tenant, api: Api) -> None:
    email, _ = await _new_user(tenant)
    statuses = Counter(await asyncio.gather(*(_login(api, email, f"wrong {i}") for i in range(12))))
    assert statuses[401] >= 1 and statuses[401] + statuses[503] + statuses[429] == 12, statuses
    # Only the attempts that were checked (401) count: the rest of the budget is still there.
    left = 4 - statuses[401]
    assert [await _login(api, email, "wrong") for _ in range(left + 1)] == [401] * left + [429]


async def test_the_bound_admits_a_queue_and_refuses_past_it() -> None:
    checks = PasswordChecks(max_in_flight=2, max_waiting=1)
    release = asyncio.Event()
    running = 0
    most = 0

    async def check() -> bool:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await release.wait()
        running -= 1
        return True

    tasks = [asyncio.create_task(checks.run(check)) for _ in range(5)]
    await asyncio.sleep(0)  # let every task reach the bound (no polling needed: nothing else runs)
    await asyncio.sleep(0)
    refused = [t for t in tasks if t.done()]
    assert len(refused) == 2 and all(isinstance(t.exception(), ServiceUnavailable) for t in refused)
    release.set()
    results = await asyncio.gather(*(t for t in tasks if t not in refused))
    assert results == [True, True, True] and most == 2


def test_an_unknown_email_costs_a_full_check_with_the_hashers_own_parameters() -> None:
    from shared import passwords

    assert not passwords._hasher.check_needs_rehash(passwords._DUMMY_HASH)
    assert passwords.verify_password(None, "kaihooks-timing-equaliser") is False
