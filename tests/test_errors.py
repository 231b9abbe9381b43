"""The error registry (shared/errors.py), the page that explains it (GET /docs/errors, docs/errors.md), and
the problems the app answers: every one carries a registered code and that code's ``type``."""

from __future__ import annotations

import io
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from html import escape
from html.parser import HTMLParser
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import api.app  # noqa: F401  (every module that defines an error class is imported)
from api import errors_page, problems
from api.context import SETTINGS
from api.middleware import middleware
from api.security import API_CSP, DASHBOARD_CSP
from shared.errors import CODES, ERRORS_PATH, KaihooksError
from shared.settings import Settings
from tests.helpers import Api, Tenant

DOCS = Path(__file__).resolve().parent.parent / "docs" / "errors.md"
MIB = 1024 * 1024


class _Ids(HTMLParser):
    """Every id attribute of a page, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.ids += [value for name, value in attrs if name == "id" and value is not None]


def _ids(html: str) -> list[str]:
    parser = _Ids()
    parser.feed(html)
    return parser.ids


def _subclasses(cls: type[KaihooksError]) -> Iterator[type[KaihooksError]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_every_error_class_takes_its_status_and_title_from_the_registry() -> None:
    classes: list[type[KaihooksError]] = [KaihooksError, *_subclasses(KaihooksError)]
    assert len(classes) >= 14  # the hierarchy and the services' own (LimitReached, AlreadyRunning, ...)
    for cls in classes:
        entry = CODES[cls.code]
        assert (cls.status, cls.title) == (entry.status, entry.title), cls
    # And a class naming a code the registry lacks cannot even be defined.
    with pytest.raises(KeyError):
        type("Teapot", (KaihooksError,), {"code": "teapot"})


def test_aiohttp_refusals_map_to_codes_of_their_own_status() -> None:
    for status, code in problems._HTTP_CODES.items():
        assert CODES[code].status == status, code


def test_the_registry_says_when_and_what_to_do_for_every_code() -> None:
    for code, entry in CODES.items():
        assert code == entry.code and code.isidentifier() and code.islower()
        assert entry.type == f"/docs/errors#{code}"
        assert 400 <= entry.status <= 599
        assert len(entry.when) > 40 and len(entry.todo) > 20, code
        assert entry.when.count("`") % 2 == 0 and entry.todo.count("`") % 2 == 0, code  # code spans close


async def test_the_errors_page_lists_every_code_with_an_anchor(api: Api) -> None:
    r = await api.get(ERRORS_PATH)  # no credentials
    assert r.status == 200
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    page = r.raw.decode()
    assert _ids(page) == ["main", *CODES]  # one anchor per code, in the registry's order, nothing else
    for code, entry in CODES.items():
        section = page[page.index(f'<section class="card" id="{code}">'):]
        section = section[:section.index("</section>")]
        for text in (f"<code>{code}</code>", str(entry.status), escape(entry.title),
                     errors_page.inline_html(entry.when), errors_page.inline_html(entry.todo)):
            assert text in section, (code, text)
        assert f'href="#{code}"' in page  # and the table at the top links to it


async def test_the_errors_page_carries_the_pages_security_headers(api: Api) -> None:
    r = await api.get(ERRORS_PATH)
    assert r.headers["Content-Security-Policy"] == DASHBOARD_CSP
    assert r.headers["X-Frame-Options"] == "DENY"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Referrer-Policy"] == "no-referrer"
    assert r.headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert "<script" not in r.raw.decode() and "style=" not in r.raw.decode()
    # What the page loads is the service's own, and is there (the CSP allows 'self' only).
    for asset in ("/dashboard/assets/dashboard.css", "/dashboard/assets/icon.svg"):
        assert f'href="{asset}"' in r.raw.decode()
        assert (await api.get(asset)).status == 200


def test_docs_errors_md_is_rendered_from_the_registry() -> None:
    text = DOCS.read_text()
    assert text == errors_page.markdown(), "regenerate it: python -m api.errors_page > docs/errors.md"
    headings = [line[3:] for line in text.splitlines() if line.startswith("## ")]
    assert headings == list(CODES)


@pytest.fixture
def settings_overrides() -> dict[str, float]:
    return {"rate_limit_per_s": 1, "rate_limit_burst": 2}


async def test_real_errors_carry_their_codes_type_and_the_page_has_its_anchor(tenant: Tenant, api: Api) -> None:
    key = (await tenant.create_key(name="errors"))["key"]
    answers = {
        "unauthorized": await api.get("/v1/me"),
        "not_found": await api.get("/no/such/route"),
        "method_not_allowed": await api.post("/healthz"),
        "payload_too_large": await api.post("/v1/auth/login", data=io.BytesIO(b"{" + b" " * MIB + b"}"),
                                            headers={"Content-Type": "application/json"}),
        "validation_error": await tenant.owner.get(f"{tenant.path}/calls?limit=0"),
        "bad_request": await api.post("/v1/auth/login", data=b"{", headers={"Content-Type": "application/json"}),
        "unsupported_media_type": await api.post("/v1/auth/login", data=b"x", headers={"Content-Type": "text/plain"}),
        "forbidden": await tenant.owner.post(f"{tenant.path}/api-keys", json={"name": "k"}, csrf=False),
    }
    for _ in range(20):  # a burst of 2 at 1 a second: the third request in a row at the latest is refused
        r = await api.get(f"{tenant.path}/agents", key=key)
        if r.status == 429:
            answers["rate_limited"] = r
            break
    assert {code: r.status for code, r in answers.items()} == {
        "unauthorized": 401, "not_found": 404, "method_not_allowed": 405, "payload_too_large": 413,
        "validation_error": 422, "bad_request": 400, "unsupported_media_type": 415, "forbidden": 403,
        "rate_limited": 429,
    }
    page = await api.get(ERRORS_PATH)
    for code, r in answers.items():
        problem = r.problem
        assert problem["code"] == code
        assert problem["type"] == CODES[code].type == f"/docs/errors#{code}"
        assert (problem["title"], problem["status"]) == (CODES[code].title, CODES[code].status)
        # The type, resolved against the request's URL, is the page's anchor for the code.
        url = urllib.parse.urljoin(f"{api.base_url}/v1/businesses/x/calls", problem["type"])
        path, _, fragment = url.removeprefix(api.base_url).partition("#")
        assert (path, fragment) == (ERRORS_PATH, code)
        assert fragment in _ids(page.raw.decode())


# ---- the middleware's fallbacks, on an app of their own -----------------------


async def _raise_416(request: web.Request) -> web.StreamResponse:
    raise web.HTTPRequestRangeNotSatisfiable()


async def _raise_502(request: web.Request) -> web.StreamResponse:
    raise web.HTTPBadGateway()


async def _raise_bug(request: web.Request) -> web.StreamResponse:
    raise RuntimeError("a bug")


async def _raise_data_error(request: web.Request) -> web.StreamResponse:
    raise asyncpg.exceptions.DataError("invalid byte sequence")


async def _raise_unreachable(request: web.Request) -> web.StreamResponse:
    raise ConnectionRefusedError("postgres")


@pytest.fixture
async def fallbacks(settings: Settings) -> AsyncIterator[Api]:
    app = web.Application(middlewares=[middleware(settings)])
    app[SETTINGS] = settings
    for path, handler in [("/416", _raise_416), ("/502", _raise_502), ("/bug", _raise_bug),
                          ("/data", _raise_data_error), ("/unreachable", _raise_unreachable)]:
        app.router.add_get(path, handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with Api(str(server.make_url(""))) as client:
            yield client
    finally:
        await server.close()


async def test_every_fallback_answers_a_registered_code(fallbacks: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("CRITICAL", logger="kaihooks.api")  # the bug is logged as an error: expected here
    for path, status, code in [
        ("/416", 416, "bad_request"),  # an HTTP-level refusal with no code of its own keeps its status
        ("/502", 502, "internal_error"),
        ("/bug", 500, "internal_error"),
        ("/data", 422, "validation_error"),
        ("/unreachable", 503, "service_unavailable"),
    ]:
        r = await fallbacks.get(path)
        assert r.status == status, path
        assert r.problem["status"] == status
        assert r.problem["code"] == code
        assert r.problem["type"] == CODES[code].type
        assert r.problem["title"] == CODES[code].title
        assert r.problem["detail"]
        assert "a bug" not in r.raw.decode()  # nothing of the exception reaches the client
        assert r.headers["X-Content-Type-Options"] == "nosniff"  # a problem answer has the security headers
        assert r.headers["Content-Security-Policy"] == API_CSP
