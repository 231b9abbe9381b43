"""Timestamps the API accepts: RFC 3339 with an offset, and representable in UTC (years 1-9999)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime


def in_utc_range(value: datetime) -> datetime:
    """The same instant in UTC; ValueError if it falls outside what can be stored."""
    try:
        converted = value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is out of range once converted to UTC") from None
    if not 1 < converted.year < 9999:
        raise ValueError("the time is out of range (years 2 to 9998)")
    return converted


Timestamp = Annotated[AwareDatetime, AfterValidator(in_utc_range)]
