"""Who is calling: an API key, a signed-in user, or an internal service, and what they may touch."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass

from aiohttp import web

from api.client_address import client_address
from api.context import DB, KEYS, SESSION_LIMIT, SETTINGS
from api.keyauth import Verified
from api.observe import KEY_ID, USER_ID
from shared import ids
from shared.errors import Forbidden, InsufficientScope, NotFound, Unauthorized
from shared.models import WRITE_ROLES, ApiKey, Role, Session
from shared.repos import sessions as session_repo
from shared.repos import users as user_repo

SESSION_COOKIE = "kaihooks_session"
CSRF_HEADER = "X-CSRF-Token"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_KEY_IN_BROWSER = (
    "API keys belong in server-side code: requests from a browser (with an Origin header) are refused."
)


@dataclass(frozen=True, slots=True)
class Access:
    """The business a request may act on, and through which credential."""

    business_id: uuid.UUID
    key: ApiKey | None = None
    session: Session | None = None
    role: Role | None = None
    data_version: str | None = None


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    # Every token we issue is ASCII; a header aiohttp decoded with lone surrogates (bytes that are not UTF-8)
    # is no token of ours, and must not reach an .encode() that would raise.
    if scheme.lower() != "bearer" or not token.strip() or not token.isascii():
        raise Unauthorized()
    return token.strip()


def session_token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


async def api_key(request: web.Request, token: str) -> Verified:
    """Verify a key-authenticated request. A browser Origin is refused before the key is looked at."""
    if "Origin" in request.headers:
        raise Forbidden(_KEY_IN_BROWSER)
    verified: Verified = await request.app[KEYS].verify(token)
    request[KEY_ID] = verified.key.id
    return verified


async def session(request: web.Request) -> Session:
    """The signed-in user, within the session's rate limit; cookie-authenticated unsafe methods must carry
    the CSRF token."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise Unauthorized()
    token_hash = session_token_hash(token)
    found = await session_repo.get_live(request.app[DB], token_hash)
    if found is None:
        raise Unauthorized()
    request[USER_ID] = found.user.id
    await request.app[SESSION_LIMIT].take(token_hash)
    if request.method not in _SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not sent.isascii() or not hmac.compare_digest(sent.encode(), found.csrf_token.encode()):
            raise Forbidden(f"Missing or wrong {CSRF_HEADER} header.")
    return found


def _business_id(request: web.Request) -> uuid.UUID | None:
    return ids.decode("biz", request.match_info.get("business_id", ""))


async def business_access(
    request: web.Request, *, scope: str | None = None, write: bool = False, session_only: bool = False
) -> Access:
    """Authorise a business-scoped route.

    Keys: wrong business is 401 (as if unknown), a missing scope 403. Sessions: not a
    member is 404 (the business may as well not exist), a member writing is 403.
    """
    token = bearer_token(request)
    if token is not None:
        if session_only:
            raise Unauthorized()
        verified = await api_key(request, token)
        key = verified.key
        # Public ids are canonical (one text per business), so comparing the texts compares the businesses.
        if request.match_info.get("business_id") != verified.business:
            raise Unauthorized()
        if scope is not None and scope not in key.scopes:
            raise InsufficientScope(f"This key lacks the {scope} scope.")
        return Access(key.business_id, key=key, data_version=verified.data_version)
    business_id = _business_id(request)
    user_session = await session(request)
    if business_id is None:
        raise NotFound("No such business.")
    role = await user_repo.role_in(request.app[DB], user_session.user.id, business_id)
    if role is None:
        raise NotFound("No such business.")
    if write and role not in WRITE_ROLES:
        raise Forbidden("Only an owner or admin of this business can do this.")
    return Access(business_id, session=user_session, role=role)


def internal(request: web.Request) -> None:
    """Internal routes: a bearer token from KAIHOOKS_INTERNAL_TOKENS, compared in constant time."""
    token = bearer_token(request)
    allowed = request.app[SETTINGS].internal_tokens
    if token is None or not allowed:
        raise Unauthorized()
    # Compare against every token so the time taken does not say which one nearly matched.
    matched = False
    for candidate in allowed:
        matched |= hmac.compare_digest(token.encode(), candidate.encode())
    if not matched:
        raise Unauthorized()


def client_ip(request: web.Request) -> str | None:
    """The client's address (``api.client_address``: X-Forwarded-For only from trusted proxies)."""
    return client_address(request)


def actor(request: web.Request, access: Access) -> dict[str, object]:
    """Who to name in the audit log for this request."""
    return {
        "actor_user_id": access.session.user.id if access.session else None,
        "actor_key_id": access.key.id if access.key else None,
        "ip": client_ip(request),
    }
