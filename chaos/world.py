"""The drill's businesses and webhook endpoints, and the events it publishes to them.

Businesses are made through the API (``POST /internal/v1/businesses``); endpoints with the project's own
service code (``shared.webhook_service.create_endpoint``, as the ``POST …/webhook-endpoints`` route does),
each ``http://127.0.0.1:<receiver>/<kind>/<n>`` with its own signing secret. Layout:

- every regular business has an ``ok`` endpoint and one with a fault (``flaky``, ``r429``, ``hang``,
  ``reset``, ``trickle``, ``redirect`` in turn), both for every event type; every third business has a third
  endpoint for ``call.completed`` and ``lead.created`` only (so matching by type is checked too);
- one business has, besides, a ``dead`` endpoint (always 500) for ``lead.updated`` only;
- one business, the *gone* business, has a ``gone`` endpoint (200 until the runner flips the receiver's
  switch, then 410: disabled by design, its events are expected to stop there) and an ``ok`` one.
- the **hostile** endpoints (``HOSTILE_KINDS``, for every event type, spread over the regular businesses):
  ``hostile_per_kind`` of each kind; they answer like ``ok`` until the drill's hostile phase begins;
- the **churn** endpoints (``churn``, for every event type, two on each of the *churn* businesses, which
  have nothing else, so that the churn's bursts of events reach only them): the drill deletes, disables and
  enables, re-points, re-keys and recovers them during the phase through the public API, with the API key
  (``webhooks:read``, ``webhooks:write``) that every business with a hostile, churn or dead endpoint gets
  (made with ``shared.api_key_service.create_key``, as the route does).
"""

from __future__ import annotations

import itertools
import random
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from shared import api_key_service, ids, webhook_service
from shared.db import create_pool
from shared.settings import Settings

FAULT_KINDS = ("flaky", "r429", "hang", "reset", "trickle", "redirect")
HEALTHY_KINDS = ("ok", *FAULT_KINDS)  # every event sent to these must arrive (a 2xx answer)
# Hostile receivers (see receiver.py): their deliveries may end failed, but must settle by their deadline.
HOSTILE_KINDS = ("random", "badretry", "huge", "drip", "midreset", "silent", "g410")
GONE_KINDS = ("gone", "g410")  # they answer 410 Gone: the service disables them, by design
CHURN_KIND = "churn"
CHURN_PER_BUSINESS = 2  # churn endpoints live on businesses of their own (the churn's bursts reach only them)
KEY_SCOPES = ("webhooks:read", "webhooks:write")
NARROW_TYPES = ("call.completed", "lead.created")
DEAD_TYPES = ("lead.updated",)
# Event types and their shares of the load.
TYPE_WEIGHTS = {"call.started": 3, "call.updated": 2, "call.completed": 3, "lead.created": 1.5,
                "lead.updated": 0.5, "agent.updated": 0.5}


@dataclass
class Endpoint:
    id: str  # ep_…
    uuid: uuid.UUID
    business: str  # biz_…
    path: str  # on the receiver
    kind: str
    event_types: tuple[str, ...] | None

    def matches(self, event_type: str) -> bool:
        return self.event_types is None or event_type in self.event_types


@dataclass
class Business:
    id: str  # biz_…
    uuid: uuid.UUID
    endpoints: list[Endpoint] = field(default_factory=list)
    api_key: str | None = field(default=None, repr=False)  # kc_live_…, for the churn (webhooks:read/write)


@dataclass
class World:
    businesses: list[Business]
    secrets: dict[str, str] = field(repr=False)  # receiver path -> whsec_…

    @property
    def endpoints(self) -> list[Endpoint]:
        return [e for b in self.businesses for e in b.endpoints]

    def business(self, public_id: str) -> Business:
        return self._by_id[public_id]

    def __post_init__(self) -> None:
        self._by_id = {b.id: b for b in self.businesses}

    def layout(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for e in self.endpoints:
            counts[e.kind] = counts.get(e.kind, 0) + 1
        return counts


async def make_world(api_url: str, token: str, settings: Settings, receiver_port: int, businesses: int,
                     hostile_per_kind: int = 0, churn: int = 0) -> World:
    base = f"http://127.0.0.1:{receiver_port}"
    made: list[Business] = []
    churn_businesses = (churn + CHURN_PER_BUSINESS - 1) // CHURN_PER_BUSINESS
    names = [f"Chaos Plumbing {i:03d}" for i in range(businesses)] + ["Chaos Gone Co."] + [
        f"Chaos Churn Co. {i}" for i in range(churn_businesses)]
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        for name in names:
            async with http.post(api_url + "/internal/v1/businesses", json={"name": name}) as r:
                body = await r.json()
                if r.status != 201:
                    raise SystemExit(f"chaos: could not create a business: HTTP {r.status} {body}")
            biz_uuid = ids.decode("biz", body["id"])
            assert biz_uuid is not None
            made.append(Business(body["id"], biz_uuid))
    regular, gone, churners = made[:businesses], made[businesses], made[businesses + 1:]

    plan: list[tuple[Business, str, tuple[str, ...] | None]] = []
    for i, business in enumerate(regular):
        plan.append((business, "ok", None))
        plan.append((business, FAULT_KINDS[i % len(FAULT_KINDS)], None))
        if i % 3 == 0:
            plan.append((business, ("ok", *FAULT_KINDS)[(i // 3) % 7], NARROW_TYPES))
        if i == 1:
            plan.append((business, "dead", DEAD_TYPES))
    plan += [(gone, "gone", None), (gone, "ok", None)]
    for j in range(hostile_per_kind * len(HOSTILE_KINDS)):
        plan.append((regular[(j * 5 + 2) % len(regular)], HOSTILE_KINDS[j % len(HOSTILE_KINDS)], None))
    for j in range(churn):
        plan.append((churners[j // CHURN_PER_BUSINESS], CHURN_KIND, None))

    secrets: dict[str, str] = {}
    db = await create_pool(settings, min_size=1, max_size=2)
    try:
        for n, (business, kind, types) in enumerate(plan):
            path = f"/{kind}/{n}"
            created = await webhook_service.create_endpoint(
                db, settings, business_id=business.uuid, url=base + path, description=f"chaos {kind}",
                event_types=list(types) if types else None, actor={})
            secrets[path] = created.secret
            business.endpoints.append(Endpoint(created.endpoint.public_id, created.endpoint.id, business.id, path,
                                               kind, types))
        for business in made:
            if any(e.kind in (*HOSTILE_KINDS, CHURN_KIND, "dead") for e in business.endpoints):
                key = await api_key_service.create_key(
                    db, settings, business_id=business.uuid, name="chaos churn", scopes=KEY_SCOPES, expires_at=None,
                    actor_user_id=None, ip=None)
                business.api_key = key.secret
    finally:
        await db.close()
    return World(made, secrets)


class EventMaker:
    """Events for the load: every business in turn, types by TYPE_WEIGHTS, each with its own idempotency key."""

    def __init__(self, world: World, run: str, seed: int = 8) -> None:
        self._rng = random.Random(seed)
        self._world = world
        self._run = run
        self._seq = itertools.count()
        self._types = list(TYPE_WEIGHTS)
        self._weights = list(TYPE_WEIGHTS.values())

    def next(self, business: Business | None = None) -> dict[str, Any]:
        """The next event: for every business in turn, or for ``business`` (the churn's bursts, marked
        ``"chaos_slow"``: churn receivers answer them slowly)."""
        n = next(self._seq)
        burst = business is not None
        business = business or self._world.businesses[n % len(self._world.businesses)]
        type_ = self._rng.choices(self._types, self._weights)[0]
        if type_.startswith("call."):
            data: dict[str, Any] = {
                "id": f"call-{n}", "direction": "inbound", "from": "+15550001111", "to": "+15550002222",
                "status": {"call.started": "ringing", "call.updated": "in_progress"}.get(type_, "completed"),
                "started_at": "2026-11-27T09:00:00Z", "summary": "Asked for a quote for a new boiler.",
            }
        elif type_.startswith("lead."):
            data = {"id": f"lead-{n}", "name": "Jo Example", "phone": "+15550003333", "call_id": f"call-{n}"}
        else:
            data = {"id": f"agent-{n % 50}", "name": f"Agent {n % 50}", "status": "active"}
        if burst:
            data["chaos_slow"] = True
        return {"business_id": business.id, "type": type_, "data": data, "idempotency_key": f"{self._run}-{n}"}
