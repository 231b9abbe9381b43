"""Request and response bodies of the HTTP API, as OpenAPI documents them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, RootModel, field_validator

from shared.apikeys import SCOPES
from shared.events import CallStatus, EventBatchIn, EventIn, EventType
from shared.models import ApiKey, Business, Membership, Role, User

Scope = Literal["agents:read", "calls:read", "leads:read", "events:read", "webhooks:read", "webhooks:write"]
assert set(Scope.__args__) == set(SCOPES)  # type: ignore[attr-defined]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    errors: list[dict[str, Any]] | None = None


# ---- businesses -------------------------------------------------------------

class BusinessIn(Body):
    name: str = Field(min_length=1, max_length=200)


class BusinessOut(BaseModel):
    id: str
    name: str


def business_out(b: Business) -> dict[str, Any]:
    return {"id": b.public_id, "name": b.name}


# ---- sign-in and /me --------------------------------------------------------

class LoginIn(Body):
    email: str = Field(min_length=3, max_length=320)
    password: str = Field(min_length=1, max_length=1024)


class UserOut(BaseModel):
    id: str
    email: str


class MembershipOut(BaseModel):
    business: BusinessOut
    role: Role


class LoginOut(BaseModel):
    user: UserOut
    memberships: list[MembershipOut]
    csrf_token: str


class KeyBrief(BaseModel):
    id: str
    name: str
    scopes: list[Scope]


class MeOut(BaseModel):
    type: Literal["api_key", "user"]
    business: BusinessOut | None = None
    api_key: KeyBrief | None = None
    user: UserOut | None = None
    memberships: list[MembershipOut] | None = None


def user_out(u: User) -> dict[str, Any]:
    return {"id": u.public_id, "email": u.email}


def memberships_out(ms: list[Membership]) -> list[dict[str, Any]]:
    return [{"business": business_out(m.business), "role": m.role} for m in ms]


# ---- API keys ---------------------------------------------------------------

class ApiKeyIn(Body):
    name: str = Field(min_length=1, max_length=100)
    scopes: list[Scope] | None = Field(
        default=None, description="Omit for every :read scope. An empty list is refused."
    )
    expires_at: AwareDatetime | None = None

    @field_validator("scopes")
    @classmethod
    def _not_empty(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value:
                raise ValueError("give at least one scope, or omit scopes for every :read scope")
            value = sorted(set(value), key=SCOPES.index)
        return value

    @field_validator("expires_at")
    @classmethod
    def _in_future(cls, value: datetime | None) -> datetime | None:
        if value is not None and value <= datetime.now(UTC):
            raise ValueError("must be in the future")
        return value


class ApiKeyOut(BaseModel):
    id: str
    name: str
    prefix: str = Field(description="The first characters and last four of the key, for recognising it.")
    scopes: list[Scope]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None


class ApiKeyCreatedOut(ApiKeyOut):
    key: str = Field(description="The full key. It is shown this once and cannot be retrieved again.")


class ApiKeyList(BaseModel):
    data: list[ApiKeyOut]
    next_cursor: str | None


def api_key_out(k: ApiKey) -> dict[str, Any]:
    return {
        "id": k.public_id,
        "name": k.name,
        "prefix": k.prefix,
        "scopes": list(k.scopes),
        "created_at": k.created_at,
        "expires_at": k.expires_at,
        "last_used_at": k.last_used_at,
    }


class ListQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    limit: str | None = Field(default=None, description="1-100, default 20")
    cursor: str | None = None


# ---- health -----------------------------------------------------------------

class HealthOut(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] | None = None


# ---- events and projections -------------------------------------------------

class PublishIn(RootModel[EventBatchIn | EventIn]):
    """One event, or ``{"events": [...]}`` with up to 500."""


class AcceptedEvent(BaseModel):
    id: str
    idempotency_key: str | None
    duplicate: bool


class PublishOut(BaseModel):
    events: list[AcceptedEvent]


class EventOut(BaseModel):
    id: str
    type: str
    timestamp: datetime = Field(description="When it happened (the publisher's occurred_at)")
    business_id: str
    data: dict[str, Any]
    created_at: datetime = Field(description="When it was accepted")


class EventList(BaseModel):
    data: list[EventOut]
    next_cursor: str | None


class Projected(BaseModel):
    """The entity's data as last published (unnamed fields included), with when it was first and last seen."""

    model_config = ConfigDict(extra="allow")
    id: str
    created_at: datetime
    updated_at: datetime


class ProjectedList(BaseModel):
    data: list[Projected]
    next_cursor: str | None


class EventsQuery(ListQuery):
    type: EventType | None = None


class CallsQuery(ListQuery):
    status: CallStatus | None = None
    agent_id: str | None = Field(default=None, max_length=200)
    since: AwareDatetime | None = Field(default=None, description="calls started at or after (RFC 3339)")
    until: AwareDatetime | None = Field(default=None, description="calls started before (RFC 3339)")
