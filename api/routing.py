"""Routes declared once, with what OpenAPI needs to describe them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from aiohttp import web
from pydantic import BaseModel

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Auth = Literal["none", "key", "session", "key_or_session", "internal"]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    handler: Handler
    summary: str
    auth: Auth
    status: int = 200
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    scope: str | None = None
    tag: str = "api"
    # Problem statuses this route can answer besides the ones every route may (400/401/404/...).
    errors: tuple[int, ...] = field(default_factory=tuple)
    # Other success statuses, answered with the same response body (e.g. 200 for a dry run).
    also: tuple[int, ...] = field(default_factory=tuple)
    # A page for people (HTML, or a page's asset) rather than an API operation: not in the OpenAPI document.
    page: bool = False


class Routes:
    """A module's routes: ``@routes.get("/v1/me", summary=..., auth="key_or_session", response=Me)``.
    ``Routes(tag, pages=True)``: every route of the group is a page (see ``Operation.page``)."""

    def __init__(self, tag: str, *, pages: bool = False) -> None:
        self.tag = tag
        self.pages = pages
        self.operations: list[Operation] = []

    def add(self, method: str, path: str, **meta: object) -> Callable[[Handler], Handler]:
        meta.setdefault("page", self.pages)

        def register(handler: Handler) -> Handler:
            self.operations.append(
                Operation(method=method, path=path, handler=handler, tag=self.tag, **meta)  # type: ignore[arg-type]
            )
            return handler

        return register

    def get(self, path: str, **meta: object) -> Callable[[Handler], Handler]:
        return self.add("GET", path, **meta)

    def post(self, path: str, **meta: object) -> Callable[[Handler], Handler]:
        return self.add("POST", path, **meta)

    def patch(self, path: str, **meta: object) -> Callable[[Handler], Handler]:
        return self.add("PATCH", path, **meta)

    def delete(self, path: str, **meta: object) -> Callable[[Handler], Handler]:
        return self.add("DELETE", path, **meta)


def install(app: web.Application, groups: list[Routes]) -> list[Operation]:
    operations = [op for group in groups for op in group.operations]
    for op in operations:
        app.router.add_route(op.method, op.path, op.handler)
    return operations
