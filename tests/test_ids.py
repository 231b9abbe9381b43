"""Public ids: type-prefixed, round-trip exactly, and refuse anything else."""

from __future__ import annotations

import itertools
import uuid

import pytest

from shared import ids


def test_round_trip_and_prefix() -> None:
    value, text = ids.new("evt")
    assert text.startswith("evt_") and len(text) == 30
    assert ids.decode("evt", text) == value
    assert value.version == 7


def test_new_ids_sort_by_creation_time() -> None:
    made = [ids.new_uuid() for _ in range(200)]
    assert [u.bytes[:6] for u in made] == sorted(u.bytes[:6] for u in made)


@pytest.mark.parametrize("text", [
    "", "evt", "evt_", "key_" + "0" * 26, "evt_" + "0" * 25, "evt_" + "0" * 27, "evt_" + "u" * 26,
    "evt_" + "z" * 26, "EVT_" + "0" * 26, "evt-" + "0" * 26, "evt_" + "0" * 25 + "\x00",
])
def test_decode_refuses_what_is_not_an_id_of_that_type(text: str) -> None:
    assert ids.decode("evt", text) is None


def test_extremes() -> None:
    for value in (uuid.UUID(int=0), uuid.UUID(int=(1 << 128) - 1)):
        assert ids.decode("biz", ids.encode("biz", value)) == value


def test_new_uuids_strictly_increase_within_a_process() -> None:
    made = [ids.new_uuid() for _ in range(5000)]
    assert all(a.int < b.int for a, b in itertools.pairwise(made))
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in made)
