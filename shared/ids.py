"""Opaque, type-prefixed, time-ordered ids.

Rows keep a plain ``uuid`` (a UUIDv7: 48 bits of milliseconds then random bits, so
new rows land at the end of the index); the API shows ``<prefix>_<26 base32 chars>``.
"""

from __future__ import annotations

import os
import random
import time
import uuid

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case
_VALID = frozenset(_ALPHABET)

_last = 0
_random = random.Random(os.urandom(32))  # ids need uniqueness, not secrecy: no syscall per id


def new_uuid() -> uuid.UUID:
    """A UUIDv7 for a new row, strictly increasing within this process (so it orders events
    published in the same millisecond in the order they were accepted)."""
    global _last
    # 48 bits of milliseconds then 74 random bits, as one counter that never goes back.
    counter = (time.time_ns() // 1_000_000) << 74 | _random.getrandbits(74)
    if counter <= _last:
        counter = _last + 1
    _last = counter
    ms, rand_a, rand_b = counter >> 74, (counter >> 62) & 0xFFF, counter & ((1 << 62) - 1)
    return uuid.UUID(int=(ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0x2 << 62 | rand_b)


# Two base32 digits per lookup: 13 steps for 128 bits.
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
# Crockford digits -> the digits int(text, 32) reads (0-9, a-v).
_TO_INT_DIGITS = str.maketrans(_ALPHABET, "0123456789abcdefghijklmnopqrstuv")


def encode(prefix: str, value: uuid.UUID) -> str:
    n = value.int
    pairs = []
    for _ in range(13):
        pairs.append(_PAIRS[n & 1023])
        n >>= 10
    return f"{prefix}_{''.join(reversed(pairs))}"


def decode(prefix: str, text: str) -> uuid.UUID | None:
    """The uuid behind ``text``, or None when it is not an id of that type."""
    head, sep, body = text.partition("_")
    if sep != "_" or head != prefix or len(body) != 26 or not body.isascii() or not body.isalnum():
        return None
    if not _VALID.issuperset(body):
        return None
    n = int(body.translate(_TO_INT_DIGITS), 32)
    if n >> 128:
        return None
    return uuid.UUID(int=n)


def pattern(prefix: str) -> str:
    """A regular expression for exactly the ids of one type that ``decode`` accepts (26 digits of 5 bits
    are 130 bits: the first digit holds the top 3 of the 128, so it is at most 7)."""
    return f"^{prefix}_[0-7][{_ALPHABET}]{{25}}$"


def new(prefix: str) -> tuple[uuid.UUID, str]:
    """A fresh uuid and its public form."""
    value = new_uuid()
    return value, encode(prefix, value)
