"""Keyset pagination: newest first by (created_at, id), with an opaque cursor.

The cursor names the last row of the page; the next page is every row strictly
older than it, so rows inserted meanwhile never shift or repeat a page.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

import orjson

from shared.errors import ValidationFailed
from shared.timestamps import in_utc_range

T = TypeVar("T")

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


@dataclass(frozen=True, slots=True)
class Position:
    created_at: datetime
    id: str

    def as_uuid(self) -> uuid.UUID:
        """The id as a uuid, for lists of rows keyed by one (a cursor of another list is refused)."""
        try:
            return uuid.UUID(self.id)
        except ValueError:
            raise ValidationFailed.at(["query", "cursor"], "cursor is not valid") from None


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(pos: Position) -> str:
    raw = orjson.dumps([pos.created_at.isoformat(), pos.id])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> Position:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, id_text = orjson.loads(raw)
        if not isinstance(id_text, str) or not isinstance(created_at, str):
            raise TypeError
        when = datetime.fromisoformat(created_at)
        if when.tzinfo is None:
            raise ValueError
        return Position(in_utc_range(when), id_text)
    except (binascii.Error, ValueError, TypeError, orjson.JSONDecodeError):
        raise ValidationFailed.at(["query", "cursor"], "cursor is not valid") from None


def paginate(rows: list[T], limit: int, position_of: Callable[[T], Position]) -> Page[T]:
    """Rows were fetched with ``LIMIT limit + 1``: the extra one only says a next page exists."""
    if len(rows) > limit:
        rows = rows[:limit]
        return Page(rows, encode_cursor(position_of(rows[-1])))
    return Page(rows, None)
