"""Request and response bodies of the HTTP API, as OpenAPI documents them."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    RootModel,
    StrictBool,
    field_validator,
)
from pydantic_core import PydanticCustomError

from shared import ids
from shared.apikeys import SCOPES
from shared.errors import CODES, ERRORS_PATH
from shared.events import PUBLISHABLE_TYPES, CallStatus, EventBatchIn, EventIn, EventType, Id
from shared.models import ApiKey, Business, Endpoint, Membership, Role, User
from shared.pagination import DEFAULT_LIMIT, MAX_LIMIT
from shared.repos.health import Health
from shared.repos.notices import Notice
from shared.timestamps import Timestamp

Scope = Literal["agents:read", "calls:read", "leads:read", "events:read", "webhooks:read", "webhooks:write"]
assert set(Scope.__args__) == set(SCOPES)  # type: ignore[attr-defined]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = Field(description=f"{ERRORS_PATH}#<code>: where the code is explained (a full-path reference)",
                      json_schema_extra={"format": "uri-reference"})
    title: str
    status: int
    detail: str
    code: str = Field(description=f"a stable word to switch on (listed at {ERRORS_PATH})",
                      json_schema_extra={"enum": list(CODES)})
    errors: list[dict[str, Any]] | None = None
    limit: dict[str, Any] | None = Field(
        default=None, description='a limit that was reached: {"name", "max"} (docs/security.md)')
    job_id: str | None = Field(default=None, description="a recover that is running already")


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
    csrf_token: str | None = Field(
        default=None, description="Sessions only: the session's X-CSRF-Token value, for a page loaded after sign-in")


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
    expires_at: Timestamp | None = None

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


def _digits(value: Any) -> Any:
    """A query's integer as a client writes one, in ASCII digits (int() would also take ' 5', '+5', '1_0')."""
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise PydanticCustomError("int_parsing", "Input should be an integer written in digits")
    return value


class ListQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    limit: Annotated[int, BeforeValidator(_digits)] = Field(
        default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="how many items a page holds at most")
    cursor: str | None = Field(default=None, description="the next_cursor of the previous page")


class PathParameters(BaseModel):
    """Every route's path parameters, by name, as the OpenAPI document describes them: the service's ids
    are type-prefixed (shared/ids.py); agents, calls and leads keep the ids their publisher gave them."""

    business_id: str = Field(pattern=ids.pattern("biz"))
    key_id: str = Field(pattern=ids.pattern("key"))
    endpoint_id: str = Field(pattern=ids.pattern("ep"))
    event_id: str = Field(pattern=ids.pattern("evt"))
    delivery_id: str = Field(pattern=ids.pattern("dlv"))
    job_id: str = Field(pattern=ids.pattern("rcv"))
    item_id: Id = Field(description="the id its publisher gave it")


# ---- health -----------------------------------------------------------------

class AliveOut(BaseModel):
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
    """The entity's data exactly as last published, fields the contract does not name included."""

    model_config = ConfigDict(extra="allow")
    id: str


class ProjectedList(BaseModel):
    data: list[Projected]
    next_cursor: str | None


class EventsQuery(ListQuery):
    type: EventType | None = None


# RFC 3339's date-time, as format "date-time" means it (pydantic alone would also take "0" as 1970, or a
# time without seconds).
_RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
                      r"([Zz]|[+-][0-9]{2}:[0-9]{2})")


def _rfc3339(value: Any) -> Any:
    if isinstance(value, str) and not _RFC3339.fullmatch(value):
        raise PydanticCustomError("rfc3339_datetime",
                                  "Input should be an RFC 3339 date-time with an offset, e.g. 2026-01-01T09:00:00Z")
    return value


QueryTimestamp = Annotated[Timestamp, BeforeValidator(_rfc3339)]


class CallsQuery(ListQuery):
    status: CallStatus | None = None
    agent_id: str | None = Field(default=None, max_length=200)
    since: QueryTimestamp | None = Field(default=None, description="calls started at or after (RFC 3339)")
    until: QueryTimestamp | None = Field(default=None, description="calls started before (RFC 3339)")


# ---- webhooks ---------------------------------------------------------------

def _each_once(types: list[str]) -> list[str]:
    seen: set[str] = set()
    for name in types:
        if name in seen:
            raise PydanticCustomError("repeated_event_type", "{type} is listed twice", {"type": name})
        seen.add(name)
    return types


# Known types only, each at most once: never more than the catalogue holds.
EventTypes = Annotated[
    list[EventType],
    Field(min_length=1, max_length=len(PUBLISHABLE_TYPES), json_schema_extra={"uniqueItems": True}),
    AfterValidator(_each_once),
]


class EndpointIn(Body):
    url: str = Field(min_length=1, max_length=2048, description="https:// to a public address")
    description: str = Field(default="", max_length=500)
    event_types: EventTypes | None = Field(
        default=None, description=f"null or absent: every type; else 1 to {len(PUBLISHABLE_TYPES)} distinct types")


class EndpointPatch(Body):
    url: str | None = Field(default=None, min_length=1, max_length=2048)
    description: str | None = Field(default=None, max_length=500)
    event_types: EventTypes | None = None
    enabled: StrictBool | None = None

    def changes(self) -> dict[str, Any]:
        """The fields the request named (``event_types: null`` means every type; other nulls are refused)."""
        out = {name: getattr(self, name) for name in self.model_fields_set}
        for name in ("url", "description", "enabled"):
            if name in out and out[name] is None:
                raise ValueError(name)
        return out


class HealthOut(BaseModel):
    attempts_last_hour: int
    success_rate: float | None = Field(description="share of 2xx among the last hour's attempts")
    p95_ms: int | None = Field(description="95th percentile attempt duration over the last hour")
    backlog: int = Field(description="deliveries still pending")
    lag_s: float | None = Field(description="age of the oldest pending delivery")
    last_failure: str | None
    last_failure_at: datetime | None


class NoticeOut(BaseModel):
    kind: Literal["endpoint.disabled", "delivery.exhausted"]
    message: str
    created_at: datetime


class EndpointOut(BaseModel):
    id: str
    url: str
    description: str
    event_types: list[str] | None
    enabled: bool
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime
    health: HealthOut | None = None
    notices: list[NoticeOut] | None = Field(default=None, description="the latest operational notices")


class EndpointCreatedOut(EndpointOut):
    secret: str = Field(description="The signing secret (whsec_…); also available later from /secret")


class EndpointList(BaseModel):
    data: list[EndpointOut]
    next_cursor: str | None


def endpoint_out(e: Endpoint, health: Health | None = None, notices: list[Notice] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": e.public_id, "url": e.url, "description": e.description,
        "event_types": list(e.event_types) if e.event_types is not None else None,
        "enabled": e.enabled, "disabled_reason": e.disabled_reason,
        "created_at": e.created_at, "updated_at": e.updated_at,
    }
    if health is not None:
        out["health"] = dataclasses.asdict(health)
    if notices is not None:
        out["notices"] = [dataclasses.asdict(n) for n in notices]
    return out


class SecretOut(BaseModel):
    secret: str


class RotateIn(Body):
    grace_seconds: int = Field(default=86400, ge=0, le=7 * 86400,
                               description="How long the old secret keeps signing beside the new one")


class TestOut(BaseModel):
    delivery_id: str


class DeliveryOut(BaseModel):
    id: str
    event_id: str
    endpoint_id: str
    event_type: str
    status: Literal["pending", "succeeded", "failed"]
    attempt_count: int
    next_attempt_at: datetime | None
    last_response_status: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime


class AttemptOut(BaseModel):
    number: int
    started_at: datetime
    duration_ms: int
    response_status: int | None
    response_body: str | None
    error: str | None = Field(description="a stable word: timeout, connection_refused, dns, tls, http_status, …")
    error_message: str | None = Field(description="the same failure in plain words")
    trigger: Literal["scheduled", "retry", "recover", "test"]
    url: str


class DeliveryDetailOut(DeliveryOut):
    attempts: list[AttemptOut]


class DeliveryList(BaseModel):
    data: list[DeliveryOut]
    next_cursor: str | None


class DeliveriesQuery(ListQuery):
    status: Literal["pending", "succeeded", "failed"] | None = None


class RecoverIn(Body):
    since: Timestamp
    until: Timestamp | None = None
    include_missed: StrictBool = False
    dry_run: StrictBool = False
    rate: float = Field(default=10.0, gt=0, le=1000, description="at most this many deliveries a second")


class RecoverOut(BaseModel):
    count: int
    job_id: str | None = Field(default=None, description="the run, to watch or cancel (not for a dry run)")
    failed: int | None = None
    missed: int | None = None
    by_event_type: dict[str, int] | None = None
    by_last_status: dict[str, int] | None = None
    max_count: int | None = Field(default=None, description="dry run: the most one run re-sends; narrow the "
                                  "window if count is over it")


class RecoverJobOut(BaseModel):
    id: str
    endpoint_id: str
    status: Literal["running", "cancelled", "done"]
    since: datetime
    until: datetime
    include_missed: bool
    rate: float
    total: int
    attempted: int
    succeeded: int
    failed: int
    waiting: int
    created_at: datetime
    finished_at: datetime | None


def recover_job_out(status: Any) -> dict[str, Any]:
    job, progress = status.job, status.progress
    return {
        "id": ids.encode("rcv", job.id), "endpoint_id": ids.encode("ep", job.endpoint_id), "status": job.status,
        "since": job.since, "until": job.until, "include_missed": job.include_missed, "rate": job.rate_per_s,
        "total": job.total, "attempted": progress.attempted, "succeeded": progress.succeeded,
        "failed": progress.failed, "waiting": progress.waiting, "created_at": job.created_at,
        "finished_at": job.finished_at,
    }


def delivery_out(row: Any) -> dict[str, Any]:
    return {
        "id": ids.encode("dlv", row["id"]), "event_id": ids.encode("evt", row["event_id"]),
        "endpoint_id": ids.encode("ep", row["endpoint_id"]), "event_type": row["event_type"],
        "status": row["status"], "attempt_count": row["attempt_count"], "next_attempt_at": row["next_attempt_at"],
        "last_response_status": row["last_response_status"], "last_error": row["last_error"],
        "created_at": row["created_at"], "updated_at": row["updated_at"],
    }


def attempt_out(row: Any) -> dict[str, Any]:
    return {
        "number": row["number"], "started_at": row["started_at"], "duration_ms": row["duration_ms"],
        "response_status": row["response_status"], "response_body": row["response_body"],
        "error": row["error_kind"], "error_message": row["error"], "trigger": row["trigger"], "url": row["url"],
    }
