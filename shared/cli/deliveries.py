"""`kaihooks deliveries list|show|retry`: what the on-call engineer runs to find, inspect and re-send
deliveries.

Each action calls what the API calls for it (a retry is ``shared.webhook_service.retry_delivery``; the
headers shown are ``shared.signing``'s, as the dispatcher sets them); this module only turns results into
text or JSON. Everything printed that it did not write itself (receivers' answers, URLs, error messages)
goes through ``shared.cli.terminal``: ``table`` and ``print_json`` do it for every cell and document, other
lines call ``safe``.
"""

from __future__ import annotations

import argparse
from typing import Any

from shared import ids, signing
from shared.cli.base import CliError, Context
from shared.cli.terminal import print_json, safe, table, timestamp
from shared.errors import Conflict, NotFound
from shared.repos import deliveries as delivery_repo

REDACTED_SIGNATURE = "v1,[redacted]"


def _delivery_row(d: Any) -> dict[str, Any]:
    return {
        "id": ids.encode("dlv", d["id"]), "status": d["status"], "endpoint_id": ids.encode("ep", d["endpoint_id"]),
        "event_id": ids.encode("evt", d["event_id"]), "event_type": d["event_type"],
        "attempts": d["attempt_count"], "last_response_status": d["last_response_status"],
        "last_error": d["last_error"], "next_attempt_at": d["next_attempt_at"], "updated_at": d["updated_at"],
    }


async def list_deliveries(ctx: Context, args: argparse.Namespace) -> None:
    rows = await delivery_repo.search(await ctx.db(), business_id=args.business, endpoint_id=args.endpoint,
                                      status=args.status, since=args.since, limit=args.limit)
    data = [_delivery_row(r) for r in rows]
    if args.json:
        print_json(data)
        return
    if not data:
        with_status = f" with status {args.status}" if args.status else ""
        print(f"no deliveries changed since {timestamp(args.since)}{with_status}")
        return
    print(table(["id", "status", "endpoint", "event type", "attempts", "last", "updated"],
                [[d["id"], d["status"], d["endpoint_id"], d["event_type"], d["attempts"],
                  d["last_response_status"] or (d["last_error"] or "-")[:30], timestamp(d["updated_at"])]
                 for d in data]))


async def show_delivery(ctx: Context, args: argparse.Namespace) -> None:
    db = await ctx.db()
    d = await delivery_repo.get_any(db, args.id)
    if d is None:
        raise NotFound(f"no such delivery: {ids.encode('dlv', args.id)}")
    attempts = await delivery_repo.attempts(db, args.id)
    data = _delivery_row(d)
    data["attempts"] = [{
        "number": a["number"], "started_at": a["started_at"], "duration_ms": a["duration_ms"],
        "response_status": a["response_status"], "error": a["error_kind"], "error_message": a["error"],
        "trigger": a["trigger"], "url": a["url"], "response_body": a["response_body"],
        # what the dispatcher sent: the event's id is the webhook-id, the attempt's start the timestamp
        "headers_sent": signing.sent_headers(data["event_id"], int(a["started_at"].timestamp()),
                                             REDACTED_SIGNATURE),
    } for a in attempts]
    if args.json:
        print_json(data)
        return
    print(safe(f"delivery   {data['id']}  {data['status']}  ({d['attempt_count']} attempts)"))
    print(safe(f"event      {data['event_id']}  {data['event_type']}"))
    print(safe(f"endpoint   {data['endpoint_id']}"))
    if d["status"] == "pending":
        print(f"next       {timestamp(d['next_attempt_at'])}")
    for a in data["attempts"]:
        outcome = a["response_status"] or a["error"] or "-"
        print()
        print(safe(f"#{a['number']}  {timestamp(a['started_at'])}  {a['trigger']:<9}  {outcome}  "
                   f"{a['duration_ms']} ms  {a['url']}"))
        if a["error_message"]:
            print(f"    why:  {safe(a['error_message'])}")
        if a["response_body"]:
            print(f"    body: '{safe(a['response_body'][:300])}'")
        print("    sent: " + safe(", ".join(f"{k}: {v}" for k, v in a["headers_sent"].items())))


async def retry_deliveries(ctx: Context, args: argparse.Namespace) -> None:
    """Each as `POST …/deliveries/{id}/retry` does it; the ones that cannot be retried are named at the end."""
    # Here, not at the top: the service brings the cipher and the metrics, which listing and showing do not need.
    from shared import webhook_service as service

    db = await ctx.db()
    queued: list[str] = []
    refused: list[str] = []
    for delivery_id in dict.fromkeys(args.ids):
        text = ids.encode("dlv", delivery_id)
        found = await delivery_repo.get_any(db, delivery_id)
        if found is None:
            refused.append(f"{text}: no such delivery")
            continue
        try:
            await service.retry_delivery(db, ctx.settings, found["business_id"], delivery_id)
        except (NotFound, Conflict) as exc:
            refused.append(f"{text}: {exc.detail}")
            continue
        queued.append(text)
    if args.json:
        print_json({"queued": queued, "refused": refused})
    else:
        print(f"queued {len(queued)} delivery(ies) for a retry now")
    if refused:
        raise CliError("; ".join(refused) + (" (the others are queued)" if queued else ""))
