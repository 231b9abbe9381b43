"""Creating and deleting API keys, each with its audit row."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from redis.asyncio import Redis

from shared import apikeys, redis_keys
from shared.errors import NotFound
from shared.models import ApiKey
from shared.repos import api_keys as key_repo
from shared.repos import audit
from shared.settings import Settings


def key_hasher(settings: Settings) -> apikeys.KeyHasher:
    return apikeys.KeyHasher(settings.secret_key_bytes, settings.old_secret_keys_bytes)


@dataclass(frozen=True, slots=True)
class CreatedKey:
    key: ApiKey
    secret: str


async def create_key(
    db: asyncpg.Pool,
    settings: Settings,
    *,
    business_id: uuid.UUID,
    name: str,
    scopes: Sequence[str] | None,
    expires_at: datetime | None,
    actor_user_id: uuid.UUID | None,
    ip: str | None,
) -> CreatedKey:
    """Store a new key's hash and return the secret, which is never available again."""
    new = apikeys.generate()
    async with db.acquire() as conn, conn.transaction():
        key = await key_repo.create(
            conn,
            business_id=business_id,
            name=name,
            key_hash=key_hasher(settings).hash(new.secret),
            display_prefix=new.display_prefix,
            last4=new.last4,
            scopes=scopes if scopes is not None else apikeys.DEFAULT_SCOPES,
            expires_at=expires_at,
            created_by=actor_user_id,
        )
        await audit.record(
            conn, action="api_key.created", business_id=business_id, actor_user_id=actor_user_id,
            target_id=key.public_id, ip=ip, details={"name": name, "scopes": list(key.scopes)},
        )
    return CreatedKey(key, new.secret)


async def delete_key(
    db: asyncpg.Pool,
    redis: Redis,
    *,
    business_id: uuid.UUID,
    key_id: uuid.UUID,
    actor_user_id: uuid.UUID | None,
    ip: str | None,
) -> None:
    """Refuse the key everywhere first (Redis marker), then delete it; NotFound if not this business's."""
    async with db.acquire() as conn, conn.transaction():
        key = await key_repo.delete(conn, business_id, key_id)
        if key is None:
            raise NotFound("No such API key.")
        # Inside the transaction: if Redis cannot take the marker, the delete rolls back
        # and the caller sees 503, rather than a key that some process still accepts.
        await redis.set(redis_keys.KEY_REVOKED.format(key_id=key_id), "1", ex=redis_keys.REVOKED_TTL_S)
        await audit.record(
            conn, action="api_key.deleted", business_id=business_id, actor_user_id=actor_user_id,
            target_id=key.public_id, ip=ip, details={"name": key.name},
        )
