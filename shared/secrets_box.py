"""Webhook signing secrets at rest: AES-256-GCM under KAIHOOKS_SECRET_KEY, tagged with a key id.

The key id is a fingerprint of the master key, so after the master key is rotated
(the old one moved to KAIHOOKS_OLD_SECRET_KEYS) rows sealed under it still open.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SECRET_PREFIX = "whsec_"
_AAD = b"kaihooks/webhook-secret/v1"


def key_id_of(master_key: bytes) -> str:
    return hashlib.sha256(b"kaihooks-key-id:" + master_key).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Sealed:
    key_id: str
    nonce: bytes
    ciphertext: bytes


class SecretBox:
    """Seal with the current master key; open with it or any older one."""

    def __init__(self, current: bytes, older: tuple[bytes, ...] = ()) -> None:
        self._current_id = key_id_of(current)
        self._keys = {key_id_of(k): AESGCM(k) for k in (current, *older)}

    def seal(self, plaintext: str) -> Sealed:
        nonce = os.urandom(12)
        return Sealed(self._current_id, nonce, self._keys[self._current_id].encrypt(nonce, plaintext.encode(), _AAD))

    def open(self, sealed: Sealed) -> str:
        aead = self._keys.get(sealed.key_id)
        if aead is None:
            raise LookupError(f"no master key with id {sealed.key_id}: add it to KAIHOOKS_OLD_SECRET_KEYS")
        return aead.decrypt(sealed.nonce, sealed.ciphertext, _AAD).decode()


def new_signing_secret() -> str:
    """``whsec_`` + base64 of 32 random bytes (Standard Webhooks)."""
    return SECRET_PREFIX + base64.b64encode(os.urandom(32)).decode()


def secret_bytes(secret: str) -> bytes:
    """The HMAC key: the bytes encoded after ``whsec_``."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))
