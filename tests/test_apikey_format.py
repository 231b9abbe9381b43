"""The API key format: prefix, base62 body, CRC32 checksum; and its keyed hash."""

from __future__ import annotations

import string

from shared import apikeys


def test_generated_keys_have_the_documented_shape() -> None:
    seen = set()
    for _ in range(200):
        new = apikeys.generate()
        assert new.secret.startswith("kc_live_")
        assert len(new.secret) == len("kc_live_") + 43 + 6
        assert set(new.secret[8:]) <= set(string.ascii_letters + string.digits)
        assert apikeys.is_well_formed(new.secret)
        assert new.display_prefix == new.secret[:12] and new.last4 == new.secret[-4:]
        seen.add(new.secret)
    assert len(seen) == 200


def test_any_single_character_change_breaks_the_checksum() -> None:
    key = apikeys.generate().secret
    alphabet = string.digits + string.ascii_letters
    for i in range(8, len(key)):
        for replacement in alphabet[:5]:
            if replacement != key[i]:
                mutated = key[:i] + replacement + key[i + 1:]
                assert not apikeys.is_well_formed(mutated), (i, replacement)


def test_other_shapes_are_refused() -> None:
    key = apikeys.generate().secret
    for bad in ["", key[:-1], key + "a", "kc_test_" + key[8:], key.replace("kc_live_", "KC_LIVE_"),
                key[:20] + "-" + key[21:], " " + key[1:]]:
        assert not apikeys.is_well_formed(bad)


def test_keyed_hash_depends_on_the_server_secret() -> None:
    key = apikeys.generate().secret
    assert apikeys.keyed_hash(b"a" * 32, key) != apikeys.keyed_hash(b"b" * 32, key)
    assert apikeys.keyed_hash(b"a" * 32, key) == apikeys.keyed_hash(b"a" * 32, key)
