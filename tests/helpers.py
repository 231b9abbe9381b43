"""Test clients and tenants built through the real API."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import orjson

from shared import ids, passwords
from shared.repos import users as user_repo

INTERNAL_TOKEN = "test-internal-token-1"


def with_database(url: str, name: str) -> str:
    """The same server URL naming another database (works for TCP and unix-socket URLs)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


@dataclass
class Resp:
    status: int
    headers: Any
    body: Any
    raw: bytes

    @property
    def problem(self) -> dict[str, Any]:
        assert self.headers.get("Content-Type", "").startswith("application/problem+json"), (
            self.status, self.headers.get("Content-Type"), self.raw[:300])
        assert isinstance(self.body, dict)
        return self.body


class Api:
    """A client of the running app with its own cookie jar (one per user, like one browser each)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.csrf: str | None = None
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def __aenter__(self) -> Api:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | str | None = None,
        key: str | None = None,
        headers: dict[str, str] | None = None,
        csrf: bool = True,
    ) -> Resp:
        hdrs = dict(headers or {})
        if key is not None:
            hdrs["Authorization"] = f"Bearer {key}"
        if csrf and self.csrf and method not in ("GET", "HEAD"):
            hdrs.setdefault("X-CSRF-Token", self.csrf)
        if json is not None:
            data = orjson.dumps(json)
            hdrs.setdefault("Content-Type", "application/json")
        async with self.http.request(method, self.base_url + path, data=data, headers=hdrs,
                                     allow_redirects=False) as r:
            raw = await r.read()
            body: Any = None
            if raw and "json" in r.headers.get("Content-Type", ""):
                body = orjson.loads(raw)
            return Resp(r.status, r.headers, body, raw)

    async def get(self, path: str, **kw: Any) -> Resp:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, **kw: Any) -> Resp:
        return await self.request("POST", path, **kw)

    async def patch(self, path: str, **kw: Any) -> Resp:
        return await self.request("PATCH", path, **kw)

    async def delete(self, path: str, **kw: Any) -> Resp:
        return await self.request("DELETE", path, **kw)

    async def login(self, email: str, password: str) -> Resp:
        r = await self.post("/v1/auth/login", json={"email": email, "password": password})
        if r.status == 200:
            self.csrf = r.body["csrf_token"]
        return r


@dataclass
class Tenant:
    """A business, reached through the API, with a signed-in owner."""

    base_url: str
    database_url: str
    business_id: str
    owner: Api
    owner_email: str
    password: str
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    @property
    def path(self) -> str:
        return f"/v1/businesses/{self.business_id}"

    async def add_user(self, role: str, email: str | None = None) -> Api:
        email = email or f"{role}-{secrets.token_hex(4)}@example.test"
        await create_user(self.database_url, email, self.password, [self.business_id], role)
        client = await self._stack.enter_async_context(Api(self.base_url))
        r = await client.login(email, self.password)
        assert r.status == 200, r.body
        return client

    async def create_key(self, **body: Any) -> dict[str, Any]:
        body.setdefault("name", "test key")
        r = await self.owner.post(f"{self.path}/api-keys", json=body)
        assert r.status == 201, r.body
        return r.body  # type: ignore[no-any-return]


_HASH_CACHE: dict[str, str] = {}


async def create_user(database_url: str, email: str, password: str, business_ids: list[str], role: str) -> None:
    # Hashing is deliberately slow; tests reuse one hash per password.
    if password not in _HASH_CACHE:
        _HASH_CACHE[password] = await passwords.hash_password_async(password)
    conn = await asyncpg.connect(database_url)
    try:
        await user_repo.upsert_with_memberships(
            conn, email, _HASH_CACHE[password], [ids.decode("biz", b) for b in business_ids], role  # type: ignore[misc]
        )
    finally:
        await conn.close()


async def create_business(base_url: str, name: str = "Acme Plumbing") -> str:
    async with Api(base_url) as anon:
        r = await anon.post("/internal/v1/businesses", json={"name": name}, key=INTERNAL_TOKEN)
        assert r.status == 201, r.body
        return r.body["id"]  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def make_tenant(base_url: str, database_url: str, role: str = "owner") -> AsyncIterator[Tenant]:
    business_id = await create_business(base_url)
    password = "correct horse battery staple"
    email = f"owner-{secrets.token_hex(4)}@example.test"
    await create_user(database_url, email, password, [business_id], role)
    async with Api(base_url) as owner:
        r = await owner.login(email, password)
        assert r.status == 200, r.body
        tenant = Tenant(base_url, database_url, business_id, owner, email, password)
        async with tenant._stack:
            yield tenant


def ago(**delta: float) -> str:
    """An RFC 3339 time this long before now: ``ago(hours=1)``."""
    return (datetime.now(UTC) - timedelta(**delta)).isoformat()


async def until(check: Callable[[], bool | Awaitable[bool]], timeout_s: float, what: str,
                every_s: float = 0.02) -> float:
    """Poll ``check`` until it holds; the seconds it took, or AssertionError naming ``what``."""
    start = time.monotonic()
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(every_s)
