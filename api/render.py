"""JSON responses (orjson; timestamps as RFC 3339 in UTC with a Z)."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC


def encode(data: Any) -> bytes:
    return orjson.dumps(data, option=_OPTIONS)


def json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=encode(data), status=status, content_type="application/json", headers=headers)


def raw_json(body: bytes, status: int = 200) -> web.Response:
    """A body already rendered (by ``json`` earlier)."""
    return web.Response(body=body, status=status, content_type="application/json")


def page(items: list[Any], next_cursor: str | None) -> web.Response:
    return json({"data": items, "next_cursor": next_cursor})


def no_content() -> web.Response:
    return web.Response(status=204)
