"""Webhook signing secrets at rest: AES-256-GCM, tagged with the master key's id and a scheme.

Scheme 2 (every secret sealed now): the AES key is derived from KAIHOOKS_SECRET_KEY for this purpose
(``shared.master_keys``), and the associated data names the endpoint, so a sealed secret opens only as the
secret of the endpoint it was sealed for (a row copied to another endpoint does not open). Scheme 1 (rows
sealed before): AES-GCM under the master key itself, the same associated data for every endpoint; still
opened, and re-sealed as scheme 2 by ``kaihooks secrets reseal`` or when the secret is rotated.
"""

from __future__ import annotations

import base64
import os
import uuid
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.master_keys import WEBHOOK_SECRETS, derive, key_id_of

SECRET_PREFIX = "whsec_"
LEGACY, BOUND = 1, 2  # the schemes (endpoint_secrets.scheme)
_LEGACY_AAD = b"kaihooks/webhook-secret/v1"
_BOUND_AAD = b"kaihooks/webhook-secret/v2 endpoint "


def _bound_aad(endpoint_id: uuid.UUID) -> bytes:
    return _BOUND_AAD + endpoint_id.bytes


@dataclass(frozen=True, slots=True)
class Sealed:
    key_id: str
    nonce: bytes
    ciphertext: bytes
    scheme: int


class SecretBox:
    """Seal with the current master key; open with it or any older one, in either scheme."""

    def __init__(self, current: bytes, older: tuple[bytes, ...] = ()) -> None:
        self.current_key_id = key_id_of(current)
        masters = {key_id_of(k): k for k in (current, *older)}
        self._bound = {kid: AESGCM(derive(k, WEBHOOK_SECRETS)) for kid, k in masters.items()}
        self._legacy = {kid: AESGCM(k) for kid, k in masters.items()}

    def seal(self, plaintext: str, endpoint_id: uuid.UUID) -> Sealed:
        nonce = os.urandom(12)
        aead = self._bound[self.current_key_id]
        return Sealed(self.current_key_id, nonce, aead.encrypt(nonce, plaintext.encode(), _bound_aad(endpoint_id)),
                      BOUND)

    def open(self, sealed: Sealed, endpoint_id: uuid.UUID) -> str:
        """The secret; ``LookupError`` for a master key this process lacks, ``InvalidTag`` for a row that was
        not sealed for this endpoint (or was altered)."""
        keys = self._bound if sealed.scheme == BOUND else self._legacy
        aead = keys.get(sealed.key_id)
        if aead is None:
            raise LookupError(f"no master key with id {sealed.key_id}: add it to KAIHOOKS_OLD_SECRET_KEYS")
        aad = _bound_aad(endpoint_id) if sealed.scheme == BOUND else _LEGACY_AAD
        return aead.decrypt(sealed.nonce, sealed.ciphertext, aad).decode()

    def is_current(self, sealed: Sealed) -> bool:
        """Sealed the way ``seal`` seals now (so re-sealing would change nothing)."""
        return sealed.scheme == BOUND and sealed.key_id == self.current_key_id


def new_signing_secret() -> str:
    """``whsec_`` + base64 of 32 random bytes (Standard Webhooks)."""
    return SECRET_PREFIX + base64.b64encode(os.urandom(32)).decode()


def secret_bytes(secret: str) -> bytes:
    """The HMAC key: the bytes encoded after ``whsec_``."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))
