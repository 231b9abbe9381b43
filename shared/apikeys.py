"""API key format: ``kc_live_`` + base62(32 random bytes) + base62(CRC32), and its keyed hash.

The checksum lets us (and secret scanners) tell a mistyped or made-up key from a
real one without touching the database. Only an HMAC-SHA256 of the key is stored, with
a display prefix and the last four characters: keyed (scheme 2) with a key derived from
KAIHOOKS_SECRET_KEY for this purpose alone (``shared.master_keys``). Keys stored before
(scheme 1: keyed with the master key itself) or under an older master key still verify,
and are re-hashed the current way when next used (``KeyHasher.candidates``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import zlib
from dataclasses import dataclass

from shared.master_keys import API_KEY_HASHES, derive, key_id_of

KEY_PREFIX = "kc_live_"
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BODY_LEN = 43  # 62**43 > 2**256
_CHECKSUM_LEN = 6  # 62**6 > 2**32
KEY_LEN = len(KEY_PREFIX) + _BODY_LEN + _CHECKSUM_LEN
DISPLAY_PREFIX_LEN = len(KEY_PREFIX) + 4

SCOPES = ("agents:read", "calls:read", "leads:read", "events:read", "webhooks:read", "webhooks:write")
DEFAULT_SCOPES = tuple(s for s in SCOPES if s.endswith(":read"))


def _base62(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, digit = divmod(n, 62)
        out.append(_ALPHABET[digit])
    if n:
        raise ValueError("value does not fit")
    return "".join(reversed(out))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), _CHECKSUM_LEN)


@dataclass(frozen=True)
class NewKey:
    secret: str
    display_prefix: str
    last4: str


def generate() -> NewKey:
    body = KEY_PREFIX + _base62(int.from_bytes(os.urandom(32), "big"), _BODY_LEN)
    secret = body + _checksum(body)
    return NewKey(secret=secret, display_prefix=secret[:DISPLAY_PREFIX_LEN], last4=secret[-4:])


def is_well_formed(candidate: str) -> bool:
    """True when the text has our shape and its checksum matches: no database work needed to refuse."""
    if len(candidate) != KEY_LEN or not candidate.startswith(KEY_PREFIX):
        return False
    body, checksum = candidate[:-_CHECKSUM_LEN], candidate[-_CHECKSUM_LEN:]
    if any(c not in _ALPHABET for c in candidate[len(KEY_PREFIX):]):
        return False
    return hmac.compare_digest(_checksum(body), checksum)


def keyed_hash(secret_key: bytes, candidate: str) -> bytes:
    """What is stored and looked up: HMAC-SHA256(server secret, key)."""
    return hmac.new(secret_key, candidate.encode(), hashlib.sha256).digest()


LEGACY, DERIVED = 1, 2  # the hash schemes (api_keys.hash_scheme)


@dataclass(frozen=True, slots=True)
class StoredHash:
    """One way a key may be stored: the hash, its scheme and the id of the master key it was made under."""

    value: bytes
    scheme: int
    key_id: str


class KeyHasher:
    """Hashes keys the current way (scheme 2 under the current master key), and lists every way a key may be
    stored (the current one first) so that keys stored before a change of scheme or of master key still
    verify while the older master keys are in KAIHOOKS_OLD_SECRET_KEYS."""

    def __init__(self, current: bytes, older: tuple[bytes, ...] = ()) -> None:
        self.key_id = key_id_of(current)
        self._ways = [(derive(current, API_KEY_HASHES), DERIVED, self.key_id)]
        self._ways += [(derive(k, API_KEY_HASHES), DERIVED, key_id_of(k)) for k in older]
        self._ways += [(k, LEGACY, key_id_of(k)) for k in (current, *older)]

    def hash(self, candidate: str) -> StoredHash:
        """The current way (one HMAC: this is on every request's path)."""
        key, scheme, key_id = self._ways[0]
        return StoredHash(keyed_hash(key, candidate), scheme, key_id)

    def candidates(self, candidate: str) -> list[StoredHash]:
        return [StoredHash(keyed_hash(key, candidate), scheme, key_id) for key, scheme, key_id in self._ways]
