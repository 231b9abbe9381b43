"""Rotating KAIHOOKS_SECRET_KEY (README, "Rotating the master key"): what is still stored under an older
master key or an older scheme, and re-sealing webhook secrets the current way so that an older master key
can be retired. API keys cannot be re-hashed without the key itself: each is re-hashed at its next use
(``api.keyauth``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import asyncpg
from cryptography.exceptions import InvalidTag

from shared.master_keys import key_id_of
from shared.repos import api_keys as key_repo
from shared.repos import endpoints as endpoint_repo
from shared.secrets_box import Sealed, SecretBox
from shared.settings import Settings

log = logging.getLogger("kaihooks.keys")

RESEAL_BATCH = 500


@dataclass(frozen=True, slots=True)
class Standing:
    current_key_id: str
    older_key_ids: tuple[str, ...]
    secrets: dict[tuple[str, int], int]  # (master key id, scheme) -> secrets that still sign
    api_keys: dict[tuple[str | None, int], int]  # (master key id or None, scheme) -> keys


async def standing(db: asyncpg.Pool, settings: Settings) -> Standing:
    return Standing(key_id_of(settings.secret_key_bytes),
                    tuple(key_id_of(k) for k in settings.old_secret_keys_bytes),
                    await endpoint_repo.live_sealed_by_key(db), await key_repo.hashes_by_key(db))


@dataclass(slots=True)
class Resealed:
    resealed: int = 0
    current: int = 0  # already sealed the current way
    unopenable: dict[str, int] = field(default_factory=dict)  # master key id -> secrets that did not open


async def reseal(db: asyncpg.Pool, settings: Settings) -> Resealed:
    """Re-seal every secret that still signs under the current master key, scheme 2 (bound to its endpoint), a
    page at a time. Safe to run again, and beside the service: a row changed meanwhile is left as it is."""
    box = SecretBox(settings.secret_key_bytes, settings.old_secret_keys_bytes)
    result, after = Resealed(), 0
    while page := await endpoint_repo.live_sealed_after(db, after, RESEAL_BATCH):
        after = page[-1].id
        replaced: list[tuple[endpoint_repo.StoredSecret, Sealed]] = []
        for stored in page:
            if box.is_current(stored.sealed):
                result.current += 1
                continue
            try:
                replaced.append((stored, box.seal(box.open(stored.sealed, stored.endpoint_id), stored.endpoint_id)))
            except (LookupError, InvalidTag):
                key_id = stored.sealed.key_id
                result.unopenable[key_id] = result.unopenable.get(key_id, 0) + 1
        result.resealed += await endpoint_repo.replace_sealed(db, replaced)
    if result.unopenable:
        log.warning("some webhook secrets could not be opened; they were left as they are",
                    extra={"by_key_id": result.unopenable})
    return result
