"""The OpenAPI 3.1 document, generated from the declared routes and their pydantic models.

Parameters take their schemas from pydantic too: query parameters from the route's query model, path
parameters from ``api.schemas.PathParameters`` (a path parameter it does not name is an error here). Pages
for people (``Operation.page``: the dashboard, the errors page) are not API operations and are left out.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

from api.routing import Operation
from api.schemas import PathParameters, Problem
from shared import __version__
from shared.errors import ERRORS_PATH

_REF = "#/components/schemas/{model}"
_PARAM = re.compile(r"\{(\w+)\}")
_SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "none": [],
    "key": [{"apiKey": []}],
    "session": [{"session": []}],
    "key_or_session": [{"apiKey": []}, {"session": []}],
    "internal": [{"internal": []}],
}
_COMMON_ERRORS = {
    "key": (401, 403, 404, 429),
    "session": (401, 403, 404, 429),  # 429: the per-session rate limit
    "key_or_session": (401, 403, 404, 429),
    "internal": (401,),
    "none": (),
}


def _schema(model: type[BaseModel], components: dict[str, Any], mode: str) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=_REF, mode=mode)  # type: ignore[arg-type]
    for name, sub in schema.pop("$defs", {}).items():
        components[name] = sub
    components[model.__name__] = schema
    return {"$ref": _REF.format(model=model.__name__)}


def _parameters(model: type[BaseModel], where: str, names: list[str], components: dict[str, Any]) -> list[Any]:
    """OpenAPI parameters for ``names``, each with its field's JSON schema. A query string has no null:
    an optional parameter is one left out, so the null branch of ``X | None`` and a null default go."""
    schema = model.model_json_schema(ref_template=_REF, mode="validation")
    components.update(schema.pop("$defs", {}))
    required = set(schema.get("required", ()))
    out = []
    for name in names:
        field = dict(schema["properties"][name])
        field.pop("title", None)
        description = field.pop("description", "")
        branches = [branch for branch in field.get("anyOf", ()) if branch != {"type": "null"}]
        if len(branches) == 1:
            del field["anyOf"]
            field = {**branches[0], **field}
        if "default" in field and field["default"] is None:
            del field["default"]
        parameter = {"name": name, "in": where, "required": where == "path" or name in required, "schema": field}
        if description:
            parameter["description"] = description
        out.append(parameter)
    return out


def _problem_response(components: dict[str, Any]) -> dict[str, Any]:
    return {"description": f"Problem details (RFC 9457); each code is explained at {ERRORS_PATH}",
            "content": {"application/problem+json": {"schema": _schema(Problem, components, "serialization")}}}


def _operation(op: Operation, components: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "operationId": op.handler.__module__.rsplit(".", 1)[-1] + "_" + op.handler.__name__,
        "summary": op.summary,
        "tags": [op.tag],
        "security": _SECURITY[op.auth],
        "parameters": _parameters(PathParameters, "path", _PARAM.findall(op.path), components),
        "responses": {},
    }
    if op.query is not None:
        doc["parameters"] += _parameters(op.query, "query", list(op.query.model_fields), components)
    if op.body is not None:
        doc["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": _schema(op.body, components, "validation")}}}
    ok: dict[str, Any] = {"description": "Success"}
    if op.response is not None:
        ok["content"] = {"application/json": {"schema": _schema(op.response, components, "serialization")}}
    for status in (op.status, *op.also):
        doc["responses"][str(status)] = ok
    statuses = set(_COMMON_ERRORS[op.auth]) | set(op.errors)
    if op.body is not None:
        statuses |= {400, 413, 415, 422}
    if op.query is not None:
        statuses.add(422)
    for status in sorted(statuses):
        doc["responses"][str(status)] = _problem_response(components)
    return doc


def build(operations: list[Operation]) -> dict[str, Any]:
    components: dict[str, Any] = {}
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        if not op.page:
            paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, components)
    return {
        "openapi": "3.1.0",
        "info": {"title": "kaihooks", "version": __version__,
                 "description": "API keys and signed webhooks for KaiCalls businesses. Every error is RFC 9457 "
                                f"problem details whose `type` is {ERRORS_PATH}#<code>, the code's entry on the "
                                f"errors page ({ERRORS_PATH})."},
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.items())),
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "kc_live_… API key"},
                "session": {"type": "apiKey", "in": "cookie", "name": "kaihooks_session"},
                "internal": {"type": "http", "scheme": "bearer", "description": "KAIHOOKS_INTERNAL_TOKENS"},
            },
        },
    }
