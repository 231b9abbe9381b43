"""Turn a request into a pydantic model, or into a clear 4xx."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from api.context import SETTINGS
from shared.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType, ValidationFailed

M = TypeVar("M", bound=BaseModel)
# A JSON \u0000 escape (preceded by an even number of backslashes, so not an escaped backslash):
# Postgres text and jsonb cannot hold NUL, so such a body is refused up front.
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def body_limit(request: web.Request) -> int:
    """The largest body this route takes: ``api.middleware`` refuses a body declared larger before any handler
    runs (nothing is read, buffered, authenticated or done for it); ``read_json`` cuts off a chunked one."""
    settings = request.app[SETTINGS]
    if request.path.startswith("/internal/"):
        return settings.max_body_bytes_internal
    return settings.max_body_bytes_v1


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body is over {limit} bytes.")


async def _read_capped(request: web.Request, limit: int) -> bytes:
    """The body, read as it arrives and refused as soon as it passes ``limit`` (a chunked body says no
    length up front; aiohttp's own cap is the largest route's, 8 MiB)."""
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > limit:
            raise too_large(limit)
    return bytes(body)


async def read_json(request: web.Request) -> Any:
    """The parsed JSON body: 413 over the route's limit, 415 for another media type, 400 if malformed."""
    limit = body_limit(request)
    if request.content_length is not None and request.content_length > limit:
        raise too_large(limit)
    if request.content_type not in ("application/json", "application/octet-stream") and not (
        request.content_type.endswith("+json")
    ):
        # aiohttp reports a missing Content-Type as application/octet-stream: accept it.
        raise UnsupportedMediaType("Send JSON with Content-Type: application/json.")
    raw = await _read_capped(request, limit)
    if not raw.strip():
        raise BadRequest("The request body is empty; send a JSON object.")
    depth_limit = request.app[SETTINGS].max_json_depth
    try:
        data = orjson.loads(raw)  # orjson parses without recursing in Python and stops past 1024 levels
    except orjson.JSONDecodeError as exc:
        # orjson's wording for its 1024-level limit (before 3.10.x: "array and object recursion depth exceeded")
        if exc.msg.startswith("depth limit") or "recursion depth exceeded" in exc.msg:
            raise too_deep(depth_limit) from None
        raise BadRequest(f"The request body is not valid JSON: {exc.msg} at position {exc.pos}.") from None
    # Before anything walks the value recursively (the NUL scan below, pydantic, orjson.dumps of an event's
    # data, which gives up past 255 levels).
    if (raw.count(b"[") + raw.count(b"{") > depth_limit) and nested_deeper_than(data, depth_limit):
        raise too_deep(depth_limit)
    if b"\\u0000" in raw and _NUL_ESCAPE.search(raw):  # the substring test is fast; the regex rarely runs
        raise ValidationFailed([{"loc": loc, "msg": "may not contain the NUL character (\\u0000)"}
                                for loc in _nul_locations(data, ["body"])][:20] or
                               [{"loc": ["body"], "msg": "may not contain the NUL character (\\u0000)"}])
    return data


def too_deep(limit: int) -> ValidationFailed:
    return ValidationFailed.at(["body"], f"JSON may be nested at most {limit} levels deep")


def nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` levels (the top level is 1), without recursion."""
    if not isinstance(value, dict | list):
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def _nul_locations(value: Any, loc: list[Any]) -> Iterator[list[Any]]:
    """Where in a parsed body a string (value or key) holds a NUL."""
    if isinstance(value, str):
        if "\x00" in value:
            yield loc
    elif isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                yield [*loc, key.replace("\x00", "\\u0000")]
            yield from _nul_locations(item, [*loc, key])
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _nul_locations(item, [*loc, index])


def errors_of(exc: ValidationError, where: str) -> list[dict[str, Any]]:
    return [{"loc": [where, *err["loc"]], "msg": err["msg"]} for err in exc.errors(include_url=False)]


def validate(model: type[M], data: Any, where: str = "body") -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(errors_of(exc, where)) from None


async def parse_body(request: web.Request, model: type[M]) -> M:
    return validate(model, await read_json(request))


def parse_query(request: web.Request, model: type[M]) -> M:
    query = dict(request.query)
    for name, value in query.items():
        if "\x00" in value:
            raise ValidationFailed.at(["query", name], "may not contain the NUL character")
    return validate(model, query, "query")
