"""Accepting events: validate all, then store all in one transaction: event rows, idempotency,
projections and the deliveries to every matching endpoint. Once committed, one Redis round trip wakes the
workers (when deliveries were made) and marks the businesses' cached pages stale. 202 means committed."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from pydantic import ValidationError
from redis.asyncio import Redis

from shared import ids, redis_client, redis_keys
from shared.errors import PayloadTooLarge, ServiceUnavailable, ValidationFailed
from shared.events import DATA_MODELS, MAX_DATA_BYTES, CallData, EventIn, Kind, is_deletion, projection_of
from shared.repos import businesses as business_repo
from shared.repos import events as event_repo
from shared.repos import ingest
from shared.repos.ingest import Change

log = logging.getLogger("kaihooks.publishing")

STORE_TRIES = 4  # the accepting statement, run again after a race with a deletion (each try is one round trip)


@dataclass(frozen=True, slots=True)
class Accepted:
    id: str
    idempotency_key: str | None
    duplicate: bool


@dataclass(frozen=True, slots=True)
class _Prepared:
    event: event_repo.NewEvent
    model: Any


def _prepare(events: Sequence[EventIn], locs: Sequence[list[str | int]]) -> list[_Prepared]:
    """Validate each event's data for its type; every problem is reported, with its location."""
    errors: list[dict[str, Any]] = []
    prepared: list[_Prepared] = []
    now = datetime.now(UTC)
    for event, loc in zip(events, locs, strict=True):
        try:
            data_json = orjson.dumps(event.data)
        except orjson.JSONEncodeError:  # nested past orjson's 255 levels (the API refuses past 64 before this)
            errors.append({"loc": [*loc, "data"], "msg": "data is nested too deeply"})
            continue
        if len(data_json) > MAX_DATA_BYTES:
            raise PayloadTooLarge(f"{_where(loc)}data is over {MAX_DATA_BYTES // 1024} KiB.")
        try:
            model = DATA_MODELS[event.type].model_validate(event.data)
        except ValidationError as exc:
            errors += [{"loc": [*loc, "data", *e["loc"]], "msg": e["msg"]} for e in exc.errors(include_url=False)]
            continue
        business_id = ids.decode("biz", event.business_id)
        if business_id is None:
            errors.append({"loc": [*loc, "business_id"], "msg": "unknown business"})
            continue
        prepared.append(_Prepared(
            event_repo.NewEvent(ids.new_uuid(), business_id, event.type, data_json.decode(),
                                event.idempotency_key, event.occurred_at or now),
            model,
        ))
    if errors:
        raise ValidationFailed(errors)
    return prepared


def _where(loc: Sequence[str | int]) -> str:
    """``["body", "events", 3]`` -> ``"events[3]."`` (empty for a single event)."""
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[1:]).lstrip(".")
    return f"{text}." if text else ""


def _change(p: _Prepared) -> Change:
    e, model = p.event, p.model
    if isinstance(model, CallData):
        return Change(e.business_id, model.id, e.data_json, e.occurred_at, e.id,
                      status=model.status, agent_id=model.agent_id, started_at=model.started_at)
    return Change(e.business_id, model.id, e.data_json, e.occurred_at, e.id, deleted=is_deletion(e.type))


def _changes(prepared: Sequence[_Prepared]) -> dict[Kind, list[Change]]:
    grouped: dict[Kind, list[Change]] = {"agents": [], "calls": [], "leads": []}
    for p in prepared:
        kind = projection_of(p.event.type)
        if kind is not None:
            grouped[kind].append(_change(p))
    return grouped


async def bump_data_versions(redis: Redis, business_ids: set[uuid.UUID]) -> None:
    """Tell the API processes these businesses' data changed (their cached read pages are stale).
    If Redis is unreachable, no page is served from cache anyway (the key check needs Redis)."""
    await _after_commit(redis, business_ids, None)


async def _after_commit(redis: Redis, business_ids: set[uuid.UUID], wake_channel: str | None) -> None:
    """In one round trip: given ``wake_channel``, wake the workers (deliveries are due now:
    ``shared.repos.handoff``); bump the businesses' data versions. If Redis fails, the workers find the
    deliveries at their next poll of Postgres (``KAIHOOKS_WORKER_POLL_S``)."""
    if not business_ids and wake_channel is None:
        return
    try:
        async with redis.pipeline(transaction=False) as pipe:
            if wake_channel is not None:
                pipe.publish(wake_channel, b"")
            for business_id in business_ids:
                pipe.incr(redis_keys.DATA_VERSION.format(business_id=business_id))
            await pipe.execute()
    except redis_client.UNUSABLE as exc:
        # Accepted all the same (stored in Postgres). Key checks need the same Redis, so while it fails no
        # page is served from cache; should it fail for bumps only, pages expire within a minute.
        redis_client.note_failure("data_version" if wake_channel is None else "wake", exc)


async def _store(db: asyncpg.Pool, unique: Sequence[_Prepared], prepared: Sequence[_Prepared],
                 locs: Sequence[list[str | int]], deadline_s: float) -> ingest.Stored:
    """Run the accepting statement. A foreign-key violation is an unknown business (422), or else a race with a
    deletion on our side: an endpoint deleted while the fan-out wrote a delivery for it. Nothing was stored, so
    the statement runs again (it no longer sees that endpoint); if deletions keep winning, 503 with Retry-After,
    never a 4xx for a valid batch."""
    changes = _changes(unique)
    for attempt in range(1, STORE_TRIES + 1):
        try:
            return await ingest.accept(db, [p.event for p in unique], changes["agents"], changes["calls"],
                                       changes["leads"], deadline_s)
        except asyncpg.ForeignKeyViolationError as exc:
            known = set(await business_repo.existing(db, list({p.event.business_id for p in prepared})))
            unknown = [{"loc": [*loc, "business_id"], "msg": "unknown business"}
                       for p, loc in zip(prepared, locs, strict=True) if p.event.business_id not in known]
            if unknown:
                raise ValidationFailed(unknown) from None
            log.info("a deletion raced the accepting statement; running it again",
                     extra={"constraint": exc.constraint_name, "attempt": attempt})
    raise ServiceUnavailable("Endpoints were being deleted while the events were stored; nothing was stored. "
                             "Send the same request again.", headers={"Retry-After": "1"})


async def publish(
    db: asyncpg.Pool, redis: Redis, events: Sequence[EventIn], locs: Sequence[list[str | int]], deadline_s: float,
    *, wake_channel: str,
) -> list[Accepted]:
    """Store the events (all or none) and return, in order, each one's id and whether it was a repeat. Their
    deliveries are failed ``deadline_s`` (the retry schedule's total) from now at the latest; once they are
    stored, the workers are woken on ``wake_channel`` (``shared.repos.handoff.wake_channel``)."""
    prepared = _prepare(events, locs)
    # A repeated idempotency key inside the batch: the first occurrence is the event.
    first_of: dict[tuple[uuid.UUID, str], uuid.UUID] = {}
    unique: list[_Prepared] = []
    for p in prepared:
        e = p.event
        if e.idempotency_key is not None:
            if (e.business_id, e.idempotency_key) in first_of:
                continue
            first_of[(e.business_id, e.idempotency_key)] = e.id
        unique.append(p)

    stored = await _store(db, unique, prepared, locs, deadline_s)
    inserted = stored.inserted
    earlier: dict[tuple[uuid.UUID, str], uuid.UUID] = {}
    if len(inserted) < len(unique):
        conflicted = [(p.event.business_id, p.event.idempotency_key) for p in unique
                      if p.event.id not in inserted and p.event.idempotency_key is not None]
        earlier = await event_repo.ids_by_idempotency_key(db, conflicted)

    await _after_commit(redis, {p.event.business_id for p in unique if p.event.id in inserted},
                        wake_channel if stored.deliveries else None)

    answers: list[Accepted] = []
    for p in prepared:
        e = p.event
        key = (e.business_id, e.idempotency_key) if e.idempotency_key is not None else None
        if e.id in inserted:
            answers.append(Accepted(ids.encode("evt", e.id), e.idempotency_key, False))
        else:
            assert key is not None
            original = earlier.get(key) or first_of[key]
            answers.append(Accepted(ids.encode("evt", original), e.idempotency_key, True))
    return answers
