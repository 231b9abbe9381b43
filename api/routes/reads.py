"""What an integrator reads with a key: agents, calls, leads and the event log."""

from __future__ import annotations

from collections.abc import Callable

import orjson
from aiohttp import web

from api import auth, render
from api.context import DB, PAGES
from api.parsing import parse_query
from api.routing import Routes
from api.schemas import CallsQuery, EventList, EventOut, EventsQuery, ListQuery, Projected, ProjectedList
from shared import ids
from shared.errors import NotFound
from shared.events import Kind
from shared.pagination import decode_cursor
from shared.repos import events as event_repo
from shared.repos import projections
from shared.repos.events import EventRow
from shared.repos.projections import CallFilter

routes = Routes("reads")
BASE = "/v1/businesses/{business_id}"
_NAMES = {"agents": "agent", "calls": "call", "leads": "lead"}


def _cached(request: web.Request, access: auth.Access) -> web.Response | None:
    """The page as answered before at this data version, if it was. Asked right after authorisation, before
    the query is parsed: a page is cached only once its URL (query included) was answered 200."""
    body = request.app[PAGES].get(access.business_id, request.path_qs, access.data_version)
    return None if body is None else render.raw_json(body)


def _cache(request: web.Request, access: auth.Access, response: web.Response) -> web.Response:
    assert isinstance(response.body, bytes)
    request.app[PAGES].put(access.business_id, request.path_qs, access.data_version, response.body)
    return response


def _list_query(request: web.Request) -> tuple[ListQuery, CallFilter | None]:
    return parse_query(request, ListQuery), None


def _calls_query(request: web.Request) -> tuple[ListQuery, CallFilter | None]:
    q = parse_query(request, CallsQuery)
    return q, CallFilter(q.status, q.agent_id, q.since, q.until)


async def _list(request: web.Request, kind: Kind,
                parse: Callable[[web.Request], tuple[ListQuery, CallFilter | None]]) -> web.Response:
    access = await auth.business_access(request, scope=f"{kind}:read")
    if (hit := _cached(request, access)) is not None:
        return hit
    query, calls = parse(request)
    after = decode_cursor(query.cursor) if query.cursor else None
    page = await projections.list_page(request.app[DB], kind, access.business_id, query.limit,
                                       after, calls)
    return _cache(request, access, render.page([orjson.Fragment(i.json) for i in page.items], page.next_cursor))


async def _one(request: web.Request, kind: Kind) -> web.Response:
    access = await auth.business_access(request, scope=f"{kind}:read")
    if (hit := _cached(request, access)) is not None:
        return hit
    item_id = request.match_info["item_id"]
    item = await projections.get(request.app[DB], kind, access.business_id, item_id) if len(item_id) <= 200 else None
    if item is None:
        raise NotFound(f"No such {_NAMES[kind]}.")
    return _cache(request, access, render.json(orjson.Fragment(item.json)))


@routes.get(BASE + "/agents", summary="Agents, newest first", auth="key_or_session", scope="agents:read",
            query=ListQuery, response=ProjectedList)
async def list_agents(request: web.Request) -> web.StreamResponse:
    return await _list(request, "agents", _list_query)


@routes.get(BASE + "/agents/{item_id}", summary="One agent", auth="key_or_session", scope="agents:read",
            response=Projected)
async def get_agent(request: web.Request) -> web.StreamResponse:
    return await _one(request, "agents")


@routes.get(BASE + "/calls", summary="Calls, newest first, filtered by status, agent and start time",
            auth="key_or_session", scope="calls:read", query=CallsQuery, response=ProjectedList)
async def list_calls(request: web.Request) -> web.StreamResponse:
    return await _list(request, "calls", _calls_query)


@routes.get(BASE + "/calls/{item_id}", summary="One call", auth="key_or_session", scope="calls:read",
            response=Projected)
async def get_call(request: web.Request) -> web.StreamResponse:
    return await _one(request, "calls")


@routes.get(BASE + "/leads", summary="Leads, newest first", auth="key_or_session", scope="leads:read",
            query=ListQuery, response=ProjectedList)
async def list_leads(request: web.Request) -> web.StreamResponse:
    return await _list(request, "leads", _list_query)


@routes.get(BASE + "/leads/{item_id}", summary="One lead", auth="key_or_session", scope="leads:read",
            response=Projected)
async def get_lead(request: web.Request) -> web.StreamResponse:
    return await _one(request, "leads")


def _event(e: EventRow) -> dict[str, object]:
    return {"id": ids.encode("evt", e.id), "type": e.type, "timestamp": e.occurred_at,
            "business_id": ids.encode("biz", e.business_id), "data": orjson.Fragment(e.data_json),
            "created_at": e.created_at}


@routes.get(BASE + "/events", summary="The business's event log, newest first (for backfills)",
            auth="key_or_session", scope="events:read", query=EventsQuery, response=EventList)
async def list_events(request: web.Request) -> web.StreamResponse:
    access = await auth.business_access(request, scope="events:read")
    if (hit := _cached(request, access)) is not None:
        return hit
    q = parse_query(request, EventsQuery)
    after = decode_cursor(q.cursor) if q.cursor else None
    page = await event_repo.list_page(request.app[DB], access.business_id, q.limit, after, q.type)
    return _cache(request, access, render.page([_event(e) for e in page.items], page.next_cursor))


@routes.get(BASE + "/events/{event_id}", summary="One event", auth="key_or_session", scope="events:read",
            response=EventOut)
async def get_event(request: web.Request) -> web.StreamResponse:
    access = await auth.business_access(request, scope="events:read")
    event_id = ids.decode("evt", request.match_info["event_id"])
    if (hit := _cached(request, access)) is not None:
        return hit
    event = await event_repo.get(request.app[DB], access.business_id, event_id) if event_id else None
    if event is None:
        raise NotFound("No such event.")
    return _cache(request, access, render.json(_event(event)))
