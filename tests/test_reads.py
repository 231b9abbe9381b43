"""Projections (newest state wins) and the read routes: agents, calls, leads, events."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from tests.helpers import Api, Tenant
from tests.test_publishing import call, event, publish


async def reader(tenant: Tenant, *scopes: str) -> str:
    body: dict[str, Any] = {"scopes": list(scopes)} if scopes else {}
    return (await tenant.create_key(**body))["key"]  # type: ignore[no-any-return]


def agent(agent_id: str = "agt_1", **over: Any) -> dict[str, Any]:
    return {"id": agent_id, "name": "Front desk", **over}


async def test_older_state_never_overwrites_newer(tenant: Tenant, api: Api) -> None:
    b = tenant.business_id
    await publish(api, event(b, "agent.updated", agent(name="new"), occurred_at="2026-11-27T10:00:00Z"))
    await publish(api, event(b, "agent.created", agent(name="old"), occurred_at="2026-11-27T09:00:00Z"))
    key = await reader(tenant)
    r = await api.get(f"{tenant.path}/agents/agt_1", key=key)
    assert r.status == 200 and r.body["name"] == "new"


async def test_equal_timestamps_keep_the_later_published(tenant: Tenant, api: Api) -> None:
    b, t = tenant.business_id, "2026-11-27T10:00:00Z"
    await publish(api, event(b, "agent.updated", agent(name="first"), occurred_at=t))
    await publish(api, event(b, "agent.updated", agent(name="second"), occurred_at=t))
    # Within one batch too: the later event in the batch wins.
    await publish(api, {"events": [event(b, "agent.updated", agent("agt_2", name="a"), occurred_at=t),
                                   event(b, "agent.updated", agent("agt_2", name="b"), occurred_at=t)]})
    key = await reader(tenant)
    assert (await api.get(f"{tenant.path}/agents/agt_1", key=key)).body["name"] == "second"
    assert (await api.get(f"{tenant.path}/agents/agt_2", key=key)).body["name"] == "b"


async def test_a_deleted_agent_is_404_even_after_a_late_update(tenant: Tenant, api: Api) -> None:
    b = tenant.business_id
    key = await reader(tenant)
    await publish(api, event(b, "agent.created", agent(), occurred_at="2026-11-27T09:00:00Z"))
    assert (await api.get(f"{tenant.path}/agents/agt_1", key=key)).status == 200
    await publish(api, event(b, "agent.deleted", {"id": "agt_1"}, occurred_at="2026-11-27T11:00:00Z"))
    r = await api.get(f"{tenant.path}/agents/agt_1", key=key)
    assert r.status == 404 and r.problem["code"] == "not_found"
    await publish(api, event(b, "agent.updated", agent(name="late"), occurred_at="2026-11-27T10:00:00Z"))
    assert (await api.get(f"{tenant.path}/agents/agt_1", key=key)).status == 404
    assert (await api.get(f"{tenant.path}/agents", key=key)).body["data"] == []
    # A delete for an agent never seen still wins over its older creation arriving later.
    await publish(api, event(b, "agent.deleted", {"id": "ghost"}, occurred_at="2026-11-27T11:00:00Z"))
    await publish(api, event(b, "agent.created", agent("ghost"), occurred_at="2026-11-27T10:00:00Z"))
    assert (await api.get(f"{tenant.path}/agents/ghost", key=key)).status == 404
    # A newer creation after the delete brings it back.
    await publish(api, event(b, "agent.created", agent(name="back"), occurred_at="2026-11-27T12:00:00Z"))
    r = await api.get(f"{tenant.path}/agents/agt_1", key=key)
    assert r.status == 200 and r.body["name"] == "back"


async def test_calls_reflect_their_newest_event_and_filters_apply(tenant: Tenant, api: Api) -> None:
    b = tenant.business_id
    await publish(api, {"events": [
        event(b, "call.started", call("c1", agent_id="a1", started_at="2026-11-27T08:00:00Z"),
              occurred_at="2026-11-27T08:00:00Z"),
        event(b, "call.completed", call("c1", agent_id="a1", status="completed", started_at="2026-11-27T08:00:00Z",
                                        duration_seconds=61.5, summary="Booked a visit"),
              occurred_at="2026-11-27T08:01:02Z"),
        event(b, "call.started", call("c2", agent_id="a2", status="missed", started_at="2026-11-27T09:30:00Z"),
              occurred_at="2026-11-27T09:30:00Z"),
        event(b, "call.started", call("c3", agent_id="a1", status="in_progress",
                                      started_at="2026-11-27T10:00:00Z"), occurred_at="2026-11-27T10:00:00Z"),
    ]})
    key = await reader(tenant, "calls:read")
    one = await api.get(f"{tenant.path}/calls/c1", key=key)
    assert one.body["status"] == "completed" and one.body["duration_seconds"] == 61.5
    assert set(one.body) == {"id", "agent_id", "direction", "from", "to", "status", "started_at",
                             "duration_seconds", "summary"}  # exactly as published

    async def ids(query: str) -> list[str]:
        r = await api.get(f"{tenant.path}/calls?{query}", key=key)
        assert r.status == 200, r.body
        return sorted(c["id"] for c in r.body["data"])

    assert await ids("") == ["c1", "c2", "c3"]
    assert await ids("status=completed") == ["c1"]
    assert await ids("agent_id=a1") == ["c1", "c3"]
    assert await ids("since=2026-11-27T09:00:00Z") == ["c2", "c3"]
    assert await ids("until=2026-11-27T09:30:00Z") == ["c1"]
    assert await ids("since=2026-11-27T09:00:00%2B00:00&until=2026-11-27T09:59:59Z&agent_id=a2") == ["c2"]
    for bad in ["status=on_hold", "since=yesterday", "until=2026-11-27T09:00:00", "limit=0"]:
        r = await api.get(f"{tenant.path}/calls?{bad}", key=key)
        assert r.status == 422, bad
        assert r.problem["code"] == "validation_error"


async def test_leads_are_listed_and_read(tenant: Tenant, api: Api) -> None:
    b = tenant.business_id
    await publish(api, event(b, "lead.created", {"id": "l1", "name": "Ann", "phone": "+1555", "source": "ad"}))
    key = await reader(tenant, "leads:read")
    r = await api.get(f"{tenant.path}/leads", key=key)
    assert [lead["id"] for lead in r.body["data"]] == ["l1"]
    assert r.body["data"][0]["source"] == "ad"
    assert (await api.get(f"{tenant.path}/leads/nope", key=key)).status == 404


async def test_events_filter_by_type(tenant: Tenant, api: Api) -> None:
    b = tenant.business_id
    await publish(api, {"events": [event(b, "agent.created", agent()), event(b, "call.started", call())]})
    key = await reader(tenant, "events:read")
    r = await api.get(f"{tenant.path}/events?type=agent.created", key=key)
    assert [e["type"] for e in r.body["data"]] == ["agent.created"]
    r = await api.get(f"{tenant.path}/events?type=agent.exploded", key=key)
    assert r.status == 422
    assert (await api.get(f"{tenant.path}/events/evt_nope", key=key)).status == 404


@pytest.mark.parametrize("path, scope", [
    ("/agents", "agents:read"), ("/calls", "calls:read"), ("/leads", "leads:read"), ("/events", "events:read"),
])
async def test_each_read_needs_its_scope(tenant: Tenant, api: Api, path: str, scope: str) -> None:
    others = [s for s in ("agents:read", "calls:read", "leads:read", "events:read") if s != scope]
    without = await reader(tenant, *others)
    r = await api.get(tenant.path + path, key=without)
    assert r.status == 403 and r.problem["code"] == "insufficient_scope"
    assert (await api.get(tenant.path + path, key=await reader(tenant, scope))).status == 200


async def test_members_read_with_a_session(tenant: Tenant, api: Api) -> None:
    await publish(api, event(tenant.business_id, "agent.created", agent()))
    member = await tenant.add_user("member")
    r = await member.get(f"{tenant.path}/agents")
    assert r.status == 200 and [a["id"] for a in r.body["data"]] == ["agt_1"]


async def test_pagination_with_concurrent_inserts_has_no_gaps_or_repeats(
    tenant: Tenant, api: Api, db: asyncpg.Connection
) -> None:
    b = tenant.business_id
    await publish(api, {"events": [event(b, "call.started", call(f"p{i:03}")) for i in range(120)]})
    from shared import ids

    existing = {r["id"] for r in await db.fetch("SELECT id FROM calls WHERE business_id = $1",
                                                ids.decode("biz", b))}
    assert len(existing) == 120
    key = await reader(tenant, "calls:read")
    seen: list[str] = []
    cursor = None
    inserting = 0
    while True:
        path = f"{tenant.path}/calls?limit=7" + (f"&cursor={cursor}" if cursor else "")
        page, _ = await asyncio.gather(
            api.get(path, key=key),
            publish(api, {"events": [event(b, "call.started", call(f"new{inserting}-{j}")) for j in range(3)]}),
        )
        inserting += 1
        assert page.status == 200
        seen += [c["id"] for c in page.body["data"]]
        cursor = page.body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)), "a row was listed twice"
    assert existing <= set(seen), "a row that existed before paging began was skipped"


async def test_a_cached_page_never_hides_a_newer_event(tenant: Tenant, api: Api, server) -> None:
    """Reads are served from a page cache keyed by the business's data version: every accepted
    event moves the version, so the very next read sees it."""
    from api.context import PAGES

    key = await reader(tenant, "calls:read")
    path = f"{tenant.path}/calls?limit=5"
    for i in range(4):
        await publish(api, event(tenant.business_id, "call.started", call(f"cache{i}")))
        first = await api.get(path, key=key)
        again = await api.get(path, key=key)
        assert first.body["data"][0]["id"] == f"cache{i}"
        assert again.raw == first.raw
    # The page is in the cache (the second read of each round could be, and was, served from it).
    assert any(url == path for (_, url) in server.app[PAGES]._entries)
