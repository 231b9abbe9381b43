"""A deleted key fails on the very next request on every API process, not only the one that deleted it."""

from __future__ import annotations

import asyncio

from shared.settings import Settings
from tests.helpers import Api, Tenant
from tests.processes import wait_until_healthy, web_processes


async def test_deletion_takes_effect_on_every_process_at_once(tenant: Tenant, settings: Settings) -> None:
    key = await tenant.create_key()
    with web_processes(settings, 2) as (one, two):
        await asyncio.gather(wait_until_healthy(one.url), wait_until_healthy(two.url))
        async with Api(one.url) as a, Api(two.url) as b:
            # Warm both processes' key caches.
            for _ in range(3):
                assert (await a.get("/v1/me", key=key["key"])).status == 200
                assert (await b.get("/v1/me", key=key["key"])).status == 200
            # Delete through process one (signed in there with the owner's session).
            for cookie in tenant.owner.http.cookie_jar:
                a.http.cookie_jar.update_cookies({cookie.key: cookie.value})
            a.csrf = tenant.owner.csrf
            assert (await a.delete(f"{tenant.path}/api-keys/{key['id']}")).status == 204
            # The very next request on each process is refused.
            assert (await b.get("/v1/me", key=key["key"])).status == 401
            assert (await a.get("/v1/me", key=key["key"])).status == 401


async def test_sigterm_stops_an_api_process_cleanly(settings: Settings) -> None:
    with web_processes(settings, 1) as (web,):
        await wait_until_healthy(web.url)
        web.proc.terminate()
        assert await asyncio.to_thread(web.proc.wait, 15) == 0
