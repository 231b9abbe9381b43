"""Realistic ``call.started`` / ``call.completed`` event data, about 1 KiB of JSON each (P5, P6).

Deterministic (a seeded ``random.Random``), valid for ``shared.events.CallData``: the
fields the contract names plus the extra fields a voice-agent platform would send
along (``extra="allow"`` keeps them). Does not import the project.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

_WORDS = (
    "caller asked about pricing for a water heater replacement and whether the technician could come "
    "tomorrow morning agent confirmed availability between eight and ten quoted the standard diagnostic "
    "fee explained financing options took the address and gate code booked the appointment and sent a text "
    "confirmation customer mentioned a slow leak under the kitchen sink and low pressure upstairs agent "
    "recommended shutting the valve and offered an earlier slot if one opens up"
).split()
_CITIES = ("Austin", "Denver", "Tampa", "Columbus", "Portland", "Raleigh", "Omaha", "Boise")
_CAMPAIGNS = ("google-lsa", "yelp", "website", "referral", "direct-mail", "facebook")


def _text(rng: random.Random, chars: int) -> str:
    words: list[str] = []
    size = 0
    while size < chars:
        word = rng.choice(_WORDS)
        words.append(word)
        size += len(word) + 1
    return " ".join(words).capitalize() + "."


def _phone(rng: random.Random) -> str:
    return f"+1{rng.randint(200, 989)}{rng.randint(200, 999)}{rng.randint(1000, 9999)}"


def started(rng: random.Random, call_id: str, agent_id: str, at: datetime) -> dict[str, Any]:
    """A call as it starts: who, where from, how it was routed (about 1 KiB as JSON)."""
    return {
        "id": call_id,
        "agent_id": agent_id,
        "direction": "inbound",
        "from": _phone(rng),
        "to": _phone(rng),
        "status": "in_progress",
        "started_at": at.isoformat().replace("+00:00", "Z"),
        "caller_name": rng.choice(("Dana Whitfield", "Luis Ortega", "Priya Natarajan", "Sam O'Connor")),
        "caller_city": rng.choice(_CITIES),
        "campaign": rng.choice(_CAMPAIGNS),
        "ivr_path": ["main-menu", rng.choice(("service", "sales", "billing")), "agent"],
        "greeting": _text(rng, 360),
        "notes": _text(rng, 320),
    }


def completed(rng: random.Random, call_id: str, agent_id: str, at: datetime) -> dict[str, Any]:
    """The same call once it ended: outcome, summary, a transcript excerpt (about 1 KiB as JSON)."""
    seconds = rng.randint(30, 900)
    return {
        "id": call_id,
        "agent_id": agent_id,
        "direction": "inbound",
        "from": _phone(rng),
        "to": _phone(rng),
        "status": "completed",
        "started_at": at.isoformat().replace("+00:00", "Z"),
        "ended_at": (at + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z"),
        "duration_seconds": float(seconds),
        "summary": _text(rng, 220),
        "transcript": _text(rng, 420),
        "recording_url": f"https://recordings.kaicalls.example/2026/11/{call_id}.mp3",
        "lead_id": f"lead_{call_id.removeprefix('call_')}",
    }


START = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
