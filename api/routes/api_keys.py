"""/v1/businesses/{business_id}/api-keys: the dashboard's key management (sessions only)."""

from __future__ import annotations

from aiohttp import web

from api import auth, render
from api.context import DB, REDIS, SETTINGS
from api.parsing import parse_body, parse_query
from api.routing import Routes
from api.schemas import ApiKeyCreatedOut, ApiKeyIn, ApiKeyList, ListQuery, api_key_out
from shared import ids
from shared.api_key_service import create_key, delete_key
from shared.errors import NotFound
from shared.pagination import decode_cursor
from shared.repos import api_keys as key_repo

routes = Routes("api-keys")
BASE = "/v1/businesses/{business_id}/api-keys"


@routes.get(BASE, summary="List API keys, newest first", auth="session", query=ListQuery,
            response=ApiKeyList)
async def list_keys(request: web.Request) -> web.StreamResponse:
    access = await auth.business_access(request, session_only=True)
    query = parse_query(request, ListQuery)
    after = decode_cursor(query.cursor) if query.cursor else None
    page = await key_repo.list_page(request.app[DB], access.business_id, query.limit, after)
    return render.page([api_key_out(k) for k in page.items], page.next_cursor)


@routes.post(BASE, summary="Create an API key (the secret is returned this once)", auth="session",
             body=ApiKeyIn, response=ApiKeyCreatedOut, status=201)
async def create(request: web.Request) -> web.StreamResponse:
    access = await auth.business_access(request, write=True, session_only=True)
    body = await parse_body(request, ApiKeyIn)
    assert access.session is not None
    created = await create_key(
        request.app[DB], request.app[SETTINGS], business_id=access.business_id, name=body.name,
        scopes=body.scopes, expires_at=body.expires_at, actor_user_id=access.session.user.id,
        ip=auth.client_ip(request),
    )
    return render.json({**api_key_out(created.key), "key": created.secret}, status=201)


@routes.delete(BASE + "/{key_id}", summary="Delete an API key; it stops working at once",
               auth="session", status=204)
async def delete(request: web.Request) -> web.StreamResponse:
    access = await auth.business_access(request, write=True, session_only=True)
    key_id = ids.decode("key", request.match_info["key_id"])
    if key_id is None:
        raise NotFound("No such API key.")
    assert access.session is not None
    await delete_key(request.app[DB], request.app[REDIS], business_id=access.business_id, key_id=key_id,
                     actor_user_id=access.session.user.id, ip=auth.client_ip(request))
    return render.no_content()
