"""Standard Webhooks signatures: base64(HMAC-SHA256(secret, "{id}.{timestamp}.{body}"))."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable

from shared import __version__

USER_AGENT = f"KaiCalls-Webhooks/{__version__}"


def sign(secret_key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret_key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signature_header(secret_keys: Iterable[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,`` signature per live secret, space-separated (several during a rotation)."""
    return " ".join(sign(key, msg_id, timestamp, body) for key in secret_keys)


def request_headers(msg_id: str, timestamp: int, signature: str) -> dict[str, str]:
    """The headers the dispatcher sets on a webhook request (``signature``: ``signature_header``'s)."""
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


def sent_headers(msg_id: str, timestamp: int, signature: str) -> dict[str, str]:
    """Every header of a webhook request: ``request_headers`` and the ``user-agent`` that the sending session
    adds to each (``dispatcher.send``)."""
    return {**request_headers(msg_id, timestamp, signature), "user-agent": USER_AGENT}
