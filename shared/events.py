"""Published events: the envelope and the validated ``data`` of each type (contract §3).

``data`` is validated against its type's model but stored exactly as published, so
fields the table does not name travel on to webhooks and read routes unchanged.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shared.timestamps import Timestamp

MAX_BATCH = 500
MAX_DATA_BYTES = 256 * 1024

Id = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Text = Annotated[str, StringConstraints(max_length=1000)]


class _Data(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class AgentData(_Data):
    id: Id
    name: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    phone_number: Text | None = None
    status: Text | None = None


class AgentDeletedData(_Data):
    id: Id


CallStatus = Literal["ringing", "in_progress", "completed", "missed", "failed", "voicemail"]


class CallData(_Data):
    id: Id
    agent_id: Id | None = None
    direction: Literal["inbound", "outbound"]
    from_: Annotated[str, StringConstraints(min_length=1, max_length=100)] = Field(alias="from")
    to: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    status: CallStatus
    started_at: Timestamp
    ended_at: Timestamp | None = None
    duration_seconds: Annotated[float, Field(ge=0)] | None = None
    summary: str | None = None
    transcript: str | None = None
    recording_url: Annotated[str, StringConstraints(max_length=2000)] | None = None
    lead_id: Id | None = None


class LeadData(_Data):
    id: Id
    name: Text | None = None
    phone: Text | None = None
    email: Text | None = None
    call_id: Id | None = None


# Projection each type updates: (table, is a deletion).
DATA_MODELS: dict[str, type[_Data]] = {
    "agent.created": AgentData,
    "agent.updated": AgentData,
    "agent.deleted": AgentDeletedData,
    "call.started": CallData,
    "call.updated": CallData,
    "call.completed": CallData,
    "lead.created": LeadData,
    "lead.updated": LeadData,
}
PUBLISHABLE_TYPES = tuple(DATA_MODELS)
TEST_TYPE = "webhook.test"  # sent by the test route only; never published, never listed

EventType = Literal[
    "agent.created", "agent.updated", "agent.deleted",
    "call.started", "call.updated", "call.completed",
    "lead.created", "lead.updated",
]


class EventIn(BaseModel):
    """One event as a publishing service sends it."""

    model_config = ConfigDict(extra="forbid")

    business_id: Annotated[str, StringConstraints(min_length=1, max_length=40)]
    type: EventType
    data: dict[str, Any]
    idempotency_key: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None
    occurred_at: Timestamp | None = None


class EventBatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: Annotated[list[EventIn], Field(min_length=1, max_length=MAX_BATCH)]


Kind = Literal["agents", "calls", "leads"]
_KINDS: dict[str, Kind] = {"agent": "agents", "call": "calls", "lead": "leads"}


def projection_of(event_type: str) -> Kind | None:
    """The table an event type updates (None for test events)."""
    return _KINDS.get(event_type.split(".", 1)[0])


def is_deletion(event_type: str) -> bool:
    return event_type == "agent.deleted"
