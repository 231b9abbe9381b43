"""Managing webhook endpoints and on-demand sends: the rules behind the webhook routes and the CLI."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from cryptography.exceptions import InvalidTag

from shared import ids, metrics
from shared.errors import Conflict, LimitReached, NotFound, ValidationFailed
from shared.models import Endpoint
from shared.repos import Executor, audit
from shared.repos import deliveries as delivery_repo
from shared.repos import endpoints as endpoint_repo
from shared.secrets_box import SecretBox, new_signing_secret
from shared.settings import Settings
from shared.url_policy import UrlRefused, check_url

log = logging.getLogger("kaihooks.webhooks")

TEST_DATA = {"message": "A test event from KaiCalls. If you can read this, your endpoint receives webhooks."}


def _checked_url(settings: Settings, url: str) -> str:
    try:
        return check_url(url, settings.allow_private_targets)
    except UrlRefused as exc:
        raise ValidationFailed.at(["body", "url"], str(exc)) from None


def box(settings: Settings) -> SecretBox:
    return SecretBox(settings.secret_key_bytes, settings.old_secret_keys_bytes)


@dataclass(frozen=True, slots=True)
class CreatedEndpoint:
    endpoint: Endpoint
    secret: str


async def create_endpoint(
    db: asyncpg.Pool, settings: Settings, *, business_id: uuid.UUID, url: str, description: str,
    event_types: Sequence[str] | None, actor: dict[str, Any],
) -> CreatedEndpoint:
    url = _checked_url(settings, url)
    secret = new_signing_secret()
    async with db.acquire() as conn, conn.transaction():
        if not await endpoint_repo.lock_business(conn, business_id):
            raise NotFound("No such business.")
        limit = settings.max_endpoints_per_business
        if await endpoint_repo.count_of_business(conn, business_id) >= limit:
            raise LimitReached(f"This business has {limit} webhook endpoints, the most it may have; delete one "
                               "before adding another.", name="endpoints_per_business", maximum=limit)
        endpoint_id = ids.new_uuid()
        endpoint = await endpoint_repo.create(conn, endpoint_id=endpoint_id, business_id=business_id, url=url,
                                              description=description, event_types=event_types,
                                              secret=box(settings).seal(secret, endpoint_id))
        await audit.record(conn, action="endpoint.created", business_id=business_id, target_id=endpoint.public_id,
                           details={"url": url}, **actor)
    return CreatedEndpoint(endpoint, secret)


async def update_endpoint(db: asyncpg.Pool, settings: Settings, business_id: uuid.UUID, endpoint_id: uuid.UUID,
                          changes: dict[str, Any], actor: dict[str, Any], by: str | None = None) -> Endpoint:
    """Change an endpoint (enabling it among the changes), with its audit entry; ``by`` names an operator who
    is neither a user nor a key (``cli:<user>@<host>``)."""
    if "url" in changes:
        changes["url"] = _checked_url(settings, changes["url"])
    async with db.acquire() as conn, conn.transaction():
        endpoint = await endpoint_repo.update(conn, business_id, endpoint_id, changes)
        if endpoint is None:
            raise NotFound("No such endpoint.")
        await audit.record(conn, action="endpoint.updated", business_id=business_id, target_id=endpoint.public_id,
                           details={**{k: v for k, v in changes.items() if k != "event_types"},
                                    **({"actor": by} if by is not None else {})}, **actor)
    return endpoint


async def delete_endpoint(db: asyncpg.Pool, business_id: uuid.UUID, endpoint_id: uuid.UUID,
                          actor: dict[str, Any]) -> None:
    async with db.acquire() as conn, conn.transaction():
        if not await endpoint_repo.delete(conn, business_id, endpoint_id):
            raise NotFound("No such endpoint.")
        await audit.record(conn, action="endpoint.deleted", business_id=business_id,
                           target_id=ids.encode("ep", endpoint_id), **actor)


async def disable_endpoint(db: asyncpg.Pool, endpoint_id: uuid.UUID, reason: str, cause: str) -> Endpoint | None:
    """The service disables an endpoint (it answered 410, or failed every attempt for days): the flag, the
    business's notice and the audit entry in one transaction; at commit every worker stops sending to it.
    ``cause`` labels the metric (``gone``, ``failing``). None if it was not enabled."""
    async with db.acquire() as conn, conn.transaction():
        endpoint = await endpoint_repo.disable(conn, endpoint_id, reason)
        if endpoint is None:
            return None
        await audit.record(conn, action="endpoint.disabled", business_id=endpoint.business_id,
                           target_id=endpoint.public_id, details={"reason": reason})
    metrics.ENDPOINTS_DISABLED.labels(cause).inc()
    log.warning("endpoint disabled", extra={"endpoint_id": endpoint.public_id,
                                           "business_id": ids.encode("biz", endpoint.business_id), "reason": reason})
    return endpoint


async def get_endpoint(db: Executor, business_id: uuid.UUID, endpoint_id: uuid.UUID) -> Endpoint:
    endpoint = await endpoint_repo.get(db, business_id, endpoint_id)
    if endpoint is None:
        raise NotFound("No such endpoint.")
    return endpoint


async def reveal_secret(db: asyncpg.Pool, settings: Settings, business_id: uuid.UUID,
                        endpoint_id: uuid.UUID) -> str:
    await get_endpoint(db, business_id, endpoint_id)
    sealed = await endpoint_repo.current_secret(db, endpoint_id)
    if sealed is None:
        raise NotFound("No such endpoint.")
    try:
        return box(settings).open(sealed, endpoint_id)
    except (LookupError, InvalidTag):
        log.error("cannot open an endpoint's signing secret: sealed under a master key missing from "
                  "KAIHOOKS_OLD_SECRET_KEYS, or not sealed for this endpoint",
                  extra={"endpoint_id": ids.encode("ep", endpoint_id), "key_id": sealed.key_id})
        raise Conflict("This endpoint's signing secret cannot be read (it was sealed under a master key this "
                       "service no longer has, or for another endpoint), and webhooks to it are held back. "
                       "Rotate it with grace_seconds 0 to replace it.") from None


async def rotate_secret(db: asyncpg.Pool, settings: Settings, business_id: uuid.UUID, endpoint_id: uuid.UUID,
                        grace_s: int, actor: dict[str, Any]) -> str:
    secret = new_signing_secret()
    async with db.acquire() as conn, conn.transaction():
        endpoint = await endpoint_repo.get(conn, business_id, endpoint_id)
        if endpoint is None or not await endpoint_repo.lock(conn, endpoint_id):
            raise NotFound("No such endpoint.")
        _check_room_for_a_secret(await endpoint_repo.signing_now(conn, endpoint_id), grace_s,
                                 settings.max_live_secrets_per_endpoint)
        await endpoint_repo.rotate_secret(conn, endpoint_id, box(settings).seal(secret, endpoint_id), grace_s)
        await audit.record(conn, action="endpoint.secret_rotated", business_id=business_id,
                           target_id=endpoint.public_id, details={"grace_seconds": grace_s}, **actor)
    return secret


def _check_room_for_a_secret(now: endpoint_repo.SigningNow, grace_s: int, limit: int) -> None:
    """Each live secret adds a signature to every webhook: a rotation that would leave more than ``limit``
    signing is refused (409) rather than cutting short a grace period a receiver may still rely on."""
    after = now.count + 1 if grace_s > 0 else now.count  # with no grace the current one stops signing at once
    if after <= limit:
        return
    until = f" at {now.next_expiry:%Y-%m-%dT%H:%M:%SZ}" if now.next_expiry is not None else ""
    raise LimitReached(
        f"{now.count} signing secrets sign this endpoint's webhooks now (the current one and those still in "
        f"their grace period), and at most {limit} may. Rotate with grace_seconds 0 to retire the current secret "
        f"at once, or wait until the oldest one stops signing{until}.",
        name="live_secrets_per_endpoint", maximum=limit)


async def send_test(db: asyncpg.Pool, settings: Settings, business_id: uuid.UUID, endpoint_id: uuid.UUID) -> str:
    endpoint = await get_endpoint(db, business_id, endpoint_id)
    if not endpoint.enabled:
        raise Conflict("The endpoint is disabled; enable it before sending a test event.")
    async with db.acquire() as conn, conn.transaction():
        delivery_id = await delivery_repo.create_test(conn, business_id, endpoint_id, ids.new_uuid(),
                                                      orjson.dumps(TEST_DATA).decode(), settings.replay_deadline_s)
    return ids.encode("dlv", delivery_id)


async def retry_delivery(db: asyncpg.Pool, settings: Settings, business_id: uuid.UUID, delivery_id: uuid.UUID
                         ) -> None:
    delivery = await delivery_repo.get(db, business_id, delivery_id)
    if delivery is None:
        raise NotFound("No such delivery.")
    endpoint = await endpoint_repo.get(db, business_id, delivery["endpoint_id"])
    if endpoint is None or not endpoint.enabled:
        raise Conflict("The endpoint is disabled; enable it before retrying.")
    await delivery_repo.send_now(db, [delivery_id], "retry", settings.replay_deadline_s)
