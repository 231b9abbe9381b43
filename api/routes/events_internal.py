"""POST /internal/v1/events: publishing services hand events in, one or a batch."""

from __future__ import annotations

from aiohttp import web

from api import auth, render
from api.context import DB, REDIS, SETTINGS
from api.parsing import read_json, validate
from api.routing import Routes
from api.schemas import PublishIn, PublishOut
from shared.events import EventBatchIn, EventIn
from shared.publishing import publish
from shared.repos.handoff import wake_channel

routes = Routes("internal")


@routes.post("/internal/v1/events", summary="Publish one event or a batch of up to 500 (all or nothing)",
             auth="internal", body=PublishIn, response=PublishOut, status=202, errors=(503,))
async def publish_events(request: web.Request) -> web.StreamResponse:
    auth.internal(request)
    raw = await read_json(request)
    if isinstance(raw, dict) and "events" in raw:
        events = validate(EventBatchIn, raw).events
        locs: list[list[str | int]] = [["body", "events", i] for i in range(len(events))]
    else:
        events = [validate(EventIn, raw)]
        locs = [["body"]]
    settings = request.app[SETTINGS]
    accepted = await publish(request.app[DB], request.app[REDIS], events, locs, settings.retry_deadline_s,
                             wake_channel=wake_channel(settings.queue_name))
    return render.json({"events": [{"id": a.id, "idempotency_key": a.idempotency_key, "duplicate": a.duplicate}
                                   for a in accepted]}, status=202)
