"""Domain records as the storage layer returns them. Public ids are rendered with ``shared.ids``."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from shared import ids

Role = Literal["owner", "admin", "member"]  # matches the CHECK on memberships.role
WRITE_ROLES: frozenset[str] = frozenset({"owner", "admin"})


@dataclass(frozen=True, slots=True)
class Business:
    id: uuid.UUID
    name: str
    created_at: datetime

    @property
    def public_id(self) -> str:
        return ids.encode("biz", self.id)


@dataclass(frozen=True, slots=True)
class User:
    id: uuid.UUID
    email: str

    @property
    def public_id(self) -> str:
        return ids.encode("usr", self.id)


@dataclass(frozen=True, slots=True)
class Membership:
    business: Business
    role: Role


@dataclass(frozen=True, slots=True)
class Session:
    user: User
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: uuid.UUID
    business_id: uuid.UUID
    name: str
    display_prefix: str
    last4: str
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    business_name: str | None = None  # filled in by the lookup that authenticates a request

    @property
    def public_id(self) -> str:
        return ids.encode("key", self.id)

    @property
    def prefix(self) -> str:
        """What the dashboard shows: ``kc_live_AbCd…wxyz``."""
        return f"{self.display_prefix}…{self.last4}"


DeliveryStatus = Literal["pending", "succeeded", "failed"]  # matches the CHECK on deliveries.status
Trigger = Literal["scheduled", "retry", "recover", "test"]  # matches the CHECK on attempts.trigger


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: uuid.UUID
    business_id: uuid.UUID
    url: str
    description: str
    event_types: tuple[str, ...] | None
    enabled: bool
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def public_id(self) -> str:
        return ids.encode("ep", self.id)
