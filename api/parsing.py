"""Turn a request into a pydantic model, or into a clear 4xx."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from api.context import SETTINGS
from shared.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType, ValidationFailed

M = TypeVar("M", bound=BaseModel)


def body_limit(request: web.Request) -> int:
    settings = request.app[SETTINGS]
    if request.path.startswith("/internal/"):
        return settings.max_body_bytes_internal
    return settings.max_body_bytes_v1


async def read_json(request: web.Request) -> Any:
    """The parsed JSON body: 413 over the route's limit, 415 for another media type, 400 if malformed."""
    limit = body_limit(request)
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"The request body is over {limit} bytes.")
    if request.content_type not in ("application/json", "application/octet-stream") and not (
        request.content_type.endswith("+json")
    ):
        # aiohttp reports a missing Content-Type as application/octet-stream: accept it.
        raise UnsupportedMediaType("Send JSON with Content-Type: application/json.")
    raw = await request.read()
    if len(raw) > limit:
        raise PayloadTooLarge(f"The request body is over {limit} bytes.")
    if not raw.strip():
        raise BadRequest("The request body is empty; send a JSON object.")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc.msg} at position {exc.pos}.") from None


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
    return validate(model, dict(request.query), "query")
