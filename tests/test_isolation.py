"""Tenant isolation, route by route. The routes come from the app's own OpenAPI document,
so a new business-scoped route is covered (or fails here for want of a sample id) automatically."""

from __future__ import annotations

import re
from typing import Any

from aiohttp.test_utils import TestServer

from shared.apikeys import SCOPES
from tests.helpers import Api, Tenant, ago, make_tenant
from tests.test_publishing import call, event, publish

_PARAM = re.compile(r"\{(\w+)\}")


async def _seed(api: Api, tenant: Tenant, suffix: str) -> dict[str, str]:
    """Resources of every kind in this business; returns collection -> one of its ids."""
    b = tenant.business_id
    r = await publish(api, {"events": [
        event(b, "agent.created", {"id": f"agt_{suffix}", "name": "Desk"}),
        event(b, "call.started", call(f"call_{suffix}")),
        event(b, "lead.created", {"id": f"lead_{suffix}"}),
    ]})
    key = await tenant.create_key(scopes=list(SCOPES))
    ep = await api.post(f"{tenant.path}/webhook-endpoints", key=key["key"],
                        json={"url": "https://hooks.example.com/kaicalls"})
    assert ep.status == 201, ep.body
    test = await api.post(f"{tenant.path}/webhook-endpoints/{ep.body['id']}/test", key=key["key"])
    assert test.status == 202, test.body
    job = await api.post(f"{tenant.path}/webhook-endpoints/{ep.body['id']}/recover", key=key["key"],
                         json={"since": ago(hours=1)})
    assert job.status == 202, job.body
    return {"agents": f"agt_{suffix}", "calls": f"call_{suffix}", "leads": f"lead_{suffix}",
            "events": r.body["events"][0]["id"], "api-keys": key["id"], "webhook-endpoints": ep.body["id"],
            "deliveries": test.body["delivery_id"], "recover-jobs": job.body["job_id"], "_key": key["key"]}


def _fill(path: str, business_id: str, samples: dict[str, str]) -> str:
    parts = path.split("/")
    out = []
    for i, part in enumerate(parts):
        name = _PARAM.fullmatch(part)
        if name is None:
            out.append(part)
        elif name.group(1) == "business_id":
            out.append(business_id)
        else:
            collection = parts[i - 1]
            assert collection in samples, f"add a sample {collection} id to tests/test_isolation.py for {path}"
            out.append(samples[collection])
    return "/".join(out)


async def _call(client: Api, method: str, path: str, key: str | None = None) -> Any:
    body = {} if method in ("post", "patch", "put") else None
    return await client.request(method.upper(), path, json=body, key=key)


async def test_every_business_route_isolates_tenants(server: TestServer, database_url: str, api: Api) -> None:
    doc = (await api.get("/openapi.json")).body
    routes = [(m, p) for p, ops in doc["paths"].items() if "{business_id}" in p for m in ops]
    assert len(routes) >= 10
    base = str(server.make_url(""))
    async with make_tenant(base, database_url) as a, make_tenant(base, database_url) as b:
        a_ids = await _seed(api, a, "a")
        b_ids = await _seed(api, b, "b")
        failures = []
        for method, template in routes:
            own_ids = _fill(template, a.business_id, a_ids)
            foreign_ids = _fill(template, a.business_id, b_ids)
            # 1. B's key on A's URL: the uniform 401, whatever the route.
            r = await _call(api, method, own_ids, key=b_ids["_key"])
            if r.status != 401:
                failures.append(f"B's key: {method.upper()} {template} -> {r.status}")
            # 2. B's ids under A's URL, with A's own owner session: 404, like ids that do not exist.
            if foreign_ids != own_ids:
                r = await _call(a.owner, method, foreign_ids)
                if r.status != 404:
                    failures.append(f"B's ids: {method.upper()} {template} -> {r.status}")
            # 3. A signed-in user who is not a member of A: 404.
            r = await _call(b.owner, method, own_ids)
            if r.status != 404:
                failures.append(f"non-member: {method.upper()} {template} -> {r.status}")
        assert failures == []
        # And the owner's own ids do work, so the 404s above are about ownership, not bad paths.
        for collection in ("agents", "calls", "leads", "events", "webhook-endpoints", "deliveries", "recover-jobs"):
            path = f"{a.path}/{collection}/{a_ids[collection]}"
            assert (await a.owner.get(path)).status == 200, path
