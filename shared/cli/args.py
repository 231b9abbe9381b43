"""Argument types: a malformed id, time or number is a usage mistake, refused by the parser (exit status 2)
before anything is opened. Light on purpose: the parser is built on every start."""

from __future__ import annotations

import argparse
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

_DURATION = re.compile(r"^(\d+)(s|m|h|d)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
TIME_HELP = "RFC 3339 (2026-11-27T09:00:00Z) or a duration back from now (90s, 30m, 2h, 7d)"


def moment(text: str) -> datetime:
    """RFC 3339 (2026-11-27T09:00:00Z) or a duration back from now (90s, 30m, 2h, 7d)."""
    m = _DURATION.match(text.strip())
    if m:
        try:
            return datetime.now(UTC) - timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])
        except OverflowError:
            raise argparse.ArgumentTypeError(f"too far back: {text!r}") from None
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (use RFC 3339 like 2026-11-27T09:00:00Z, or 90s, 30m, 2h, 7d)") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give the time zone in {text!r} (e.g. a trailing Z for UTC)")
    return value


def public_id(prefix: str, what: str) -> Callable[[str], uuid.UUID]:
    """The type of an ``<prefix>_…`` id argument: its uuid."""

    def parse(text: str) -> uuid.UUID:
        from shared import ids

        value = ids.decode(prefix, text)
        if value is None:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}")
        return value

    parse.__name__ = f"{prefix}_id"
    return parse


def count(low: int, high: int) -> Callable[[str], int]:
    """The type of a whole-number argument from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}: {value}")
        return value

    return parse


def rate(text: str) -> float:
    """A rate a second: a number above 0 (the service caps it)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0: {text!r}")
    return value
