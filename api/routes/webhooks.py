"""/v1/businesses/{business_id}/webhook-endpoints and /deliveries: endpoints, secrets, tests, retries."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web

from api import auth, render
from api.context import DB, SETTINGS
from api.parsing import parse_body, parse_query, read_json, validate
from api.routing import Routes
from api.schemas import (
    DeliveriesQuery,
    DeliveryDetailOut,
    DeliveryList,
    EndpointCreatedOut,
    EndpointIn,
    EndpointList,
    EndpointOut,
    EndpointPatch,
    ListQuery,
    RecoverIn,
    RecoverJobOut,
    RecoverOut,
    RotateIn,
    SecretOut,
    TestOut,
    attempt_out,
    delivery_out,
    endpoint_out,
    recover_job_out,
)
from shared import ids, recovery
from shared import webhook_service as service
from shared.errors import NotFound, ValidationFailed
from shared.pagination import decode_cursor
from shared.repos import deliveries as delivery_repo
from shared.repos import endpoints as endpoint_repo
from shared.repos import health as health_repo
from shared.repos import notices

routes = Routes("webhooks")
BASE = "/v1/businesses/{business_id}/webhook-endpoints"
ONE = BASE + "/{endpoint_id}"
READ, WRITE = "webhooks:read", "webhooks:write"


def _endpoint_id(request: web.Request) -> uuid.UUID:
    value = ids.decode("ep", request.match_info["endpoint_id"])
    if value is None:
        raise NotFound("No such endpoint.")
    return value


@contextlib.asynccontextmanager
async def _snapshot(request: web.Request) -> AsyncIterator[asyncpg.Connection]:
    """One read-only snapshot for an answer built from several queries (an endpoint, its health and its
    notices agree with each other even while the dispatcher disables it)."""
    async with request.app[DB].acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        yield conn


async def _write_access(request: web.Request) -> auth.Access:
    return await auth.business_access(request, scope=WRITE, write=True)


@routes.get(BASE, summary="Webhook endpoints, newest first", auth="key_or_session", scope=READ, query=ListQuery,
            response=EndpointList)
async def list_endpoints(request: web.Request) -> web.StreamResponse:
    access = await auth.business_access(request, scope=READ)
    q = parse_query(request, ListQuery)
    after = decode_cursor(q.cursor) if q.cursor else None
    async with _snapshot(request) as conn:
        page = await endpoint_repo.list_page(conn, access.business_id, q.limit, after)
        endpoint_ids = [e.id for e in page.items]
        health = await health_repo.of_endpoints(conn, endpoint_ids)
        notes = await notices.recent(conn, endpoint_ids)
    return render.page([endpoint_out(e, health.get(e.id), notes.get(e.id, [])) for e in page.items],
                       page.next_cursor)


@routes.post(BASE, summary="Add an endpoint (returns its signing secret)", auth="key_or_session", scope=WRITE,
             body=EndpointIn, response=EndpointCreatedOut, status=201, errors=(409,))
async def create_endpoint(request: web.Request) -> web.StreamResponse:
    access = await _write_access(request)
    body = await parse_body(request, EndpointIn)
    created = await service.create_endpoint(
        request.app[DB], request.app[SETTINGS], business_id=access.business_id, url=body.url,
        description=body.description, event_types=body.event_types, actor=auth.actor(request, access),
    )
    return render.json({**endpoint_out(created.endpoint), "secret": created.secret}, status=201)


@routes.get(ONE, summary="One endpoint", auth="key_or_session", scope=READ, response=EndpointOut)
async def get_endpoint(request: web.Request) -> web.StreamResponse:
    access = await auth.business_access(request, scope=READ)
    async with _snapshot(request) as conn:
        endpoint = await service.get_endpoint(conn, access.business_id, _endpoint_id(request))
        health = await health_repo.of_endpoints(conn, [endpoint.id])
        notes = await notices.recent(conn, [endpoint.id])
    return render.json(endpoint_out(endpoint, health[endpoint.id], notes.get(endpoint.id, [])))


@routes.patch(ONE, summary="Change url, description, event_types or enabled", auth="key_or_session", scope=WRITE,
              body=EndpointPatch, response=EndpointOut, errors=(409,))
async def update_endpoint(request: web.Request) -> web.StreamResponse:
    access = await _write_access(request)
    endpoint_id = _endpoint_id(request)
    body = validate(EndpointPatch, await read_json(request))
    try:
        changes = body.changes()
    except ValueError as exc:
        raise ValidationFailed.at(["body", str(exc)], "may not be null") from None
    endpoint = await service.update_endpoint(request.app[DB], request.app[SETTINGS], access.business_id,
                                             endpoint_id, changes, auth.actor(request, access))
    return render.json(endpoint_out(endpoint))


@routes.delete(ONE, summary="Delete an endpoint", auth="key_or_session", scope=WRITE, status=204)
async def delete_endpoint(request: web.Request) -> web.StreamResponse:
    access = await _write_access(request)
    await service.delete_endpoint(request.app[DB], access.business_id, _endpoint_id(request),
                                  auth.actor(request, access))
    return render.no_content()


@routes.post(ONE + "/test", summary="Send a webhook.test event to this endpoint only", auth="key_or_session",
             scope=WRITE, response=TestOut, status=202, errors=(409,))
async def send_test(request: web.Request) -> web.StreamResponse:
    access = await _write_access(request)
    delivery_id = await service.send_test(request.app[DB], request.app[SETTINGS], access.business_id,
                                          _endpoint_id(request))
    return render.json({"delivery_id": delivery_id}, status=202)


@routes.get(ONE + "/secret", summary="The current signing secret", auth="key_or_session", scope=WRITE,
            response=SecretOut, errors=(409,))
async def reveal_secret(request: web.Request) -> web.StreamResponse:
    access = await _write_access(request)
    secret = await service.reveal_secret(request.app[DB], request.app[SETTINGS], access.business_id,
                                         _endpoint_id(request))
    return render.json({"secret": secret})


@routes.post(ONE + "/secret/rotate", summary="Rotate the signing secret; the old one signs on for the grace period",
             auth="key_or_session", scope=WRITE, body=RotateIn, response=SecretOut, errors=(409,))
async def rotate_secret(request: web.Request) -> web.StreamResponse:
    access = await _write_access(request)
    endpoint_id = _endpoint_id(request)
    raw = await read_json(request) if request.can_read_body else {}
    body = validate(RotateIn, raw)
    secret = await service.rotate_secret(request.app[DB], request.app[SETTINGS], access.business_id, endpoint_id,
                                         body.grace_seconds, auth.actor(request, access))
    return render.json({"secret": secret})


@routes.get(ONE + "/deliveries", summary="Deliveries to this endpoint, newest first", auth="key_or_session",
            scope=READ, query=DeliveriesQuery, response=DeliveryList)
async def list_deliveries(request: web.Request) -> web.StreamResponse:
    access = await auth.business_access(request, scope=READ)
    endpoint_id = _endpoint_id(request)
    q = parse_query(request, DeliveriesQuery)
    await service.get_endpoint(request.app[DB], access.business_id, endpoint_id)
    after = decode_cursor(q.cursor) if q.cursor else None
    page = await delivery_repo.list_for_endpoint(request.app[DB], endpoint_id, q.limit, after, q.status)
    return render.page([delivery_out(r) for r in page.items], page.next_cursor)


@routes.post(ONE + "/recover", summary="Re-send failed deliveries created in a window, paced (dry_run: only count)",
             auth="key_or_session", scope=WRITE, body=RecoverIn, response=RecoverOut, status=202, also=(200,),
             errors=(409,))
async def recover(request: web.Request) -> web.StreamResponse:
    access = await _write_access(request)
    endpoint_id = _endpoint_id(request)
    await service.get_endpoint(request.app[DB], access.business_id, endpoint_id)  # 404 before 422
    body = await parse_body(request, RecoverIn)
    if body.dry_run:
        plan = await recovery.plan(request.app[DB], request.app[SETTINGS], endpoint_id, since=body.since,
                                   until=body.until, include_missed=body.include_missed, business_id=access.business_id)
        return render.json({"count": plan.count, "failed": plan.failed, "missed": plan.missed,
                            "by_event_type": plan.by_event_type, "by_last_status": plan.by_last_status,
                            "max_count": plan.max_count})
    actor = auth.actor(request, access)
    job = await recovery.start(
        request.app[DB], request.app[SETTINGS], endpoint_id, since=body.since, until=body.until,
        include_missed=body.include_missed, rate_per_s=body.rate, actor=_actor_label(access), audit_actor=actor,
        business_id=access.business_id,
    )
    return render.json({"count": job.total, "job_id": ids.encode("rcv", job.id)}, status=202)


def _actor_label(access: auth.Access) -> str:
    if access.session is not None:
        return access.session.user.public_id
    assert access.key is not None
    return access.key.public_id


def _job_id(request: web.Request) -> uuid.UUID:
    value = ids.decode("rcv", request.match_info["job_id"])
    if value is None:
        raise NotFound("No such recover job.")
    return value


@routes.get("/v1/businesses/{business_id}/recover-jobs/{job_id}", summary="How a recover run stands",
            auth="key_or_session", scope=READ, response=RecoverJobOut)
async def get_recover_job(request: web.Request) -> web.StreamResponse:
    access = await auth.business_access(request, scope=READ)
    return render.json(recover_job_out(await recovery.status(request.app[DB], _job_id(request), access.business_id)))


@routes.post("/v1/businesses/{business_id}/recover-jobs/{job_id}/cancel",
             summary="Stop a recover run (what it has not sent goes back to failed)", auth="key_or_session",
             scope=WRITE, response=RecoverJobOut)
async def cancel_recover_job(request: web.Request) -> web.StreamResponse:
    access = await _write_access(request)
    status = await recovery.cancel(request.app[DB], _job_id(request), auth.actor(request, access), access.business_id)
    return render.json(recover_job_out(status))


def _delivery_id(request: web.Request) -> uuid.UUID:
    value = ids.decode("dlv", request.match_info["delivery_id"])
    if value is None:
        raise NotFound("No such delivery.")
    return value


@routes.get("/v1/businesses/{business_id}/deliveries/{delivery_id}", summary="One delivery with its attempts",
            auth="key_or_session", scope=READ, response=DeliveryDetailOut)
async def get_delivery(request: web.Request) -> web.StreamResponse:
    access = await auth.business_access(request, scope=READ)
    delivery_id = _delivery_id(request)
    row = await delivery_repo.get(request.app[DB], access.business_id, delivery_id)
    if row is None:
        raise NotFound("No such delivery.")
    attempts = await delivery_repo.attempts(request.app[DB], delivery_id)
    return render.json({**delivery_out(row), "attempts": [attempt_out(a) for a in attempts]})


@routes.post("/v1/businesses/{business_id}/deliveries/{delivery_id}/retry", summary="Re-send a delivery now",
             auth="key_or_session", scope=WRITE, status=202, errors=(409,))
async def retry_delivery(request: web.Request) -> web.StreamResponse:
    access = await _write_access(request)
    await service.retry_delivery(request.app[DB], request.app[SETTINGS], access.business_id, _delivery_id(request))
    return render.json({"status": "pending"}, status=202)
