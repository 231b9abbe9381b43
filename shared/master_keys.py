"""KAIHOOKS_SECRET_KEY and the keys derived from it. The master key itself keys nothing: each purpose gets
its own key, derived with HKDF-SHA256 (RFC 5869) under a label naming the purpose, so that no output of one
use (an API-key hash, a sealed webhook secret) can be mistaken for or combined with another's.

A key id (a fingerprint of the master key, never the key) is stored beside what was written under it, so
that after a rotation rows written under an older master key (``KAIHOOKS_OLD_SECRET_KEYS``) are still read.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# The purposes; changing a label changes every key derived for it.
WEBHOOK_SECRETS = b"kaihooks/v2 webhook signing secrets at rest (AES-256-GCM)"
API_KEY_HASHES = b"kaihooks/v2 API key hashes (HMAC-SHA256)"


def derive(master_key: bytes, purpose: bytes) -> bytes:
    """The 32-byte key for ``purpose`` (one of the labels above)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(master_key)


def key_id_of(master_key: bytes) -> str:
    """Which master key wrote a row (the same fingerprint as before keys were derived)."""
    return hashlib.sha256(b"kaihooks-key-id:" + master_key).hexdigest()[:16]
