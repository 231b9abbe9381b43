"""/internal/v1: routes for KaiCalls' own publishing services."""

from __future__ import annotations

from aiohttp import web

from api import auth, render
from api.context import DB
from api.parsing import parse_body
from api.routing import Routes
from api.schemas import BusinessIn, BusinessOut, business_out
from shared.repos import businesses

routes = Routes("internal")


@routes.post("/internal/v1/businesses", summary="Create a business", auth="internal", body=BusinessIn,
             response=BusinessOut, status=201)
async def create_business(request: web.Request) -> web.StreamResponse:
    auth.internal(request)
    body = await parse_body(request, BusinessIn)
    return render.json(business_out(await businesses.create(request.app[DB], body.name)), status=201)
