"""Sign-in, sign-out and /v1/me."""

from __future__ import annotations

import uuid

from aiohttp import web

from api import auth, render
from api.context import DB, SETTINGS, SIGN_INS
from api.keyauth import Verified
from api.parsing import parse_body
from api.routing import Routes
from api.schemas import LoginIn, LoginOut, MeOut, memberships_out, user_out
from shared.errors import Unauthorized
from shared.models import ApiKey
from shared.repos import sessions as session_repo
from shared.repos import users as user_repo

routes = Routes("account")


@routes.post("/v1/auth/login", summary="Sign in to the dashboard", auth="none", body=LoginIn,
             response=LoginOut, errors=(401, 429, 503))
async def login(request: web.Request) -> web.StreamResponse:
    if "Authorization" in request.headers:
        raise Unauthorized("API keys cannot sign in.")
    body = await parse_body(request, LoginIn)
    settings = request.app[SETTINGS]
    done = await request.app[SIGN_INS].sign_in(body.email, body.password, auth.client_ip(request))
    response = render.json({"user": user_out(done.user), "memberships": memberships_out(done.memberships),
                            "csrf_token": done.csrf_token})
    response.set_cookie(auth.SESSION_COOKIE, done.session_token, httponly=True, samesite="Lax",
                        secure=not settings.dev, path="/", max_age=settings.session_ttl_s)
    return response


@routes.post("/v1/auth/logout", summary="Sign out", auth="session", status=204)
async def logout(request: web.Request) -> web.StreamResponse:
    if "Authorization" in request.headers:
        raise Unauthorized("API keys cannot use sign-in routes.")
    await auth.session(request)
    token = request.cookies[auth.SESSION_COOKIE]
    await session_repo.delete(request.app[DB], auth.session_token_hash(token))
    response = render.no_content()
    response.del_cookie(auth.SESSION_COOKIE, path="/")
    return response


# A key's /v1/me answer, by key id, rendered once per copy of the key the verifier caches (so it says what
# the key check read from Postgres, as a fresh rendering would).
_KEY_ANSWERS: dict[uuid.UUID, tuple[ApiKey, bytes]] = {}


def _key_answer(verified: Verified) -> bytes:
    key = verified.key
    known = _KEY_ANSWERS.get(key.id)
    if known is not None and known[0] is key:
        return known[1]
    body = render.encode({
        "type": "api_key",
        "business": {"id": verified.business, "name": key.business_name},
        "api_key": {"id": key.public_id, "name": key.name, "scopes": list(key.scopes)},
    })
    if len(_KEY_ANSWERS) >= 10_000:
        _KEY_ANSWERS.clear()
    _KEY_ANSWERS[key.id] = (key, body)
    return body


@routes.get("/v1/me", summary="Who is calling", auth="key_or_session", response=MeOut)
async def me(request: web.Request) -> web.StreamResponse:
    token = auth.bearer_token(request)
    db = request.app[DB]
    if token is not None:
        return render.raw_json(_key_answer(await auth.api_key(request, token)))
    session = await auth.session(request)
    # The CSRF token too: a dashboard page loaded after sign-in needs it, and no other origin can read this
    # answer (no CORS headers are ever sent).
    return render.json({"type": "user", "user": user_out(session.user),
                        "memberships": memberships_out(await user_repo.memberships(db, session.user.id)),
                        "csrf_token": session.csrf_token})
