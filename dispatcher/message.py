"""The message stage: the body a receiver gets and the Standard Webhooks headers that sign it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import orjson

from shared import ids, signing
from shared.secrets_box import Sealed, SecretBox, secret_bytes

_MAX_OPENED = 50_000  # opened secrets kept in memory; the cache starts afresh past this


def envelope(event_id: uuid.UUID, event_type: str, business_id: uuid.UUID, occurred_at: datetime,
             data_json: str) -> tuple[bytes, str]:
    """The body (``{"id", "type", "timestamp", "business_id", "data"}``, the data exactly as published) and
    the ``webhook-id``: the event's id, the same on every attempt and for every endpoint."""
    msg_id = ids.encode("evt", event_id)
    body = orjson.dumps(
        {"id": msg_id, "type": event_type, "timestamp": occurred_at, "business_id": ids.encode("biz", business_id),
         "data": orjson.Fragment(data_json)},
        option=orjson.OPT_UTC_Z,
    )
    return body, msg_id


def signed_headers(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """One ``v1,`` signature per live secret (several during a rotation)."""
    return signing.request_headers(msg_id, timestamp, signing.signature_header(keys, msg_id, timestamp, body))


class SecretKeys:
    """Opens sealed signing secrets, each once per process (AES-GCM is cheap, but not free per request).
    Raises ``LookupError`` or ``cryptography.exceptions.InvalidTag`` for a secret this process cannot open."""

    def __init__(self, box: SecretBox) -> None:
        self._box = box
        self._opened: dict[tuple[uuid.UUID, bytes], bytes] = {}

    def open(self, sealed: Sealed, endpoint_id: uuid.UUID) -> bytes:
        """The HMAC key of ``endpoint_id``'s secret (a secret sealed for another endpoint does not open)."""
        cached = (endpoint_id, sealed.nonce)
        key = self._opened.get(cached)
        if key is None:
            if len(self._opened) >= _MAX_OPENED:
                self._opened.clear()
            key = self._opened[cached] = secret_bytes(self._box.open(sealed, endpoint_id))
        return key
