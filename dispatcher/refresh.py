"""Reading a changed endpoint again: its lane takes the endpoint's URL, state and live secrets as they are
now (or learns it was deleted) before it sends anything more. Part of intake: the other side of the
endpoint-changed notifications (``shared.repos.handoff``)."""

from __future__ import annotations

import logging
from typing import TypeVar

import asyncpg
from cryptography.exceptions import InvalidTag

from dispatcher import lanes
from dispatcher.lanes import Lane
from dispatcher.message import SecretKeys
from shared import ids
from shared.repos import endpoints as endpoint_repo

log = logging.getLogger("kaihooks.dispatcher")

J = TypeVar("J")


def set_secrets(lane: Lane[J], keys: SecretKeys, sealed: list[endpoint_repo.LiveSecret]) -> None:
    """Open the endpoint's live secrets into the lane; none if one cannot be opened (the lane then hands its
    deliveries back for later rather than send them unsigned)."""
    try:
        lane.secrets = [(keys.open(s.sealed, lane.endpoint_id), s.expires_at) for s in sealed]
    except (LookupError, InvalidTag, ValueError):
        log.error("cannot open the endpoint's signing secret; check KAIHOOKS_OLD_SECRET_KEYS",
                  extra={"endpoint_id": ids.encode("ep", lane.endpoint_id)})
        lane.secrets = []


async def refresh(pool: asyncpg.Pool, lane: Lane[J], keys: SecretKeys, policy: lanes.Policy) -> None:
    """Read the endpoint until no change was heard during the read. Deleted: the lane is ``gone``.
    Re-pointed or enabled: its breaker starts afresh (it may work now)."""
    try:
        while lane.stale and not lane.gone:
            lane.stale = False  # a change heard during the read sets it again: read once more
            current = (await endpoint_repo.current(pool, [lane.endpoint_id])).get(lane.endpoint_id)
            if current is None:
                lane.gone = True
                break
            if current.url != lane.url or (current.enabled and not lane.enabled):
                lanes.reset(lane, policy)
            lane.url, lane.enabled = current.url, current.enabled
            set_secrets(lane, keys, current.secrets)
    except BaseException:
        lane.stale = True  # read again at the next pump
        raise
    finally:
        lane.refreshing = False
