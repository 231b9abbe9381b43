"""`kaihooks deliveries …` and `kaihooks endpoints …`: what the on-call engineer runs.

Everything printed that this module did not write itself (receivers' answers, URLs, error messages,
reasons, and the operator's own arguments echoed back) goes through ``shared.terminal``: ``table`` and
``print_json`` do it for every cell and document, other lines call ``safe``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import getpass
import re
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from shared import ids, recovery
from shared.db import create_pool
from shared.errors import NotFound
from shared.repos import audit
from shared.repos import deliveries as delivery_repo
from shared.repos import endpoints as endpoint_repo
from shared.repos import health as health_repo
from shared.settings import Settings
from shared.signing import USER_AGENT
from shared.terminal import safe, safe_json

_DURATION = re.compile(r"^(\d+)(s|m|h|d)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class UsageError(Exception):
    """Bad input: one line on stderr."""


def parse_time(text: str) -> datetime:
    """RFC 3339 (2026-11-27T09:00:00Z) or a duration back from now (90s, 30m, 2h, 7d)."""
    m = _DURATION.match(text.strip())
    if m:
        return datetime.now(UTC) - timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"not a time: {text!r} (use RFC 3339 like 2026-11-27T09:00:00Z, or 90s, 30m, 2h, 7d)") from None
    if value.tzinfo is None:
        raise UsageError(f"give the time zone in {text!r} (e.g. a trailing Z for UTC)")
    return value


def _id(prefix: str, text: str, what: str) -> Any:
    value = ids.decode(prefix, text)
    if value is None:
        raise UsageError(f"not {what}: {text!r}")
    return value


def timestamp(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if value else "-"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[safe(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    line = "  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line.rstrip()]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(out)


def print_json(data: Any) -> None:
    print(safe_json(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_UTC_Z, default=str).decode()))


def cli_actor() -> str:
    return f"cli:{getpass.getuser()}@{socket.gethostname()}"


# ---- deliveries ----------------------------------------------------------------------------------

def _delivery_row(d: Any) -> dict[str, Any]:
    return {
        "id": ids.encode("dlv", d["id"]), "status": d["status"], "endpoint_id": ids.encode("ep", d["endpoint_id"]),
        "event_id": ids.encode("evt", d["event_id"]), "event_type": d["event_type"],
        "attempts": d["attempt_count"], "last_response_status": d["last_response_status"],
        "last_error": d["last_error"], "next_attempt_at": d["next_attempt_at"], "updated_at": d["updated_at"],
    }


async def deliveries_list(db: asyncpg.Pool, settings: Settings, args: argparse.Namespace) -> None:
    rows = await delivery_repo.search(
        db, business_id=_id("biz", args.business, "a business id") if args.business else None,
        endpoint_id=_id("ep", args.endpoint, "an endpoint id") if args.endpoint else None,
        status=args.status, since=parse_time(args.since), limit=args.limit,
    )
    data = [_delivery_row(r) for r in rows]
    if args.json:
        print_json(data)
        return
    if not data:
        with_status = f" with status {args.status}" if args.status else ""
        print(safe(f"no deliveries changed since {args.since}{with_status}"))
        return
    print(table(["id", "status", "endpoint", "event type", "attempts", "last", "updated"],
                [[d["id"], d["status"], d["endpoint_id"], d["event_type"], d["attempts"],
                  d["last_response_status"] or (d["last_error"] or "-")[:30], timestamp(d["updated_at"])]
                 for d in data]))


async def deliveries_show(db: asyncpg.Pool, settings: Settings, args: argparse.Namespace) -> None:
    delivery_id = _id("dlv", args.id, "a delivery id")
    d = await delivery_repo.get_any(db, delivery_id)
    if d is None:
        raise NotFound(f"no such delivery: {args.id}")
    attempts = await delivery_repo.attempts(db, delivery_id)
    data = _delivery_row(d)
    data["attempts"] = [{
        "number": a["number"], "started_at": a["started_at"], "duration_ms": a["duration_ms"],
        "response_status": a["response_status"], "error": a["error_kind"], "error_message": a["error"],
        "trigger": a["trigger"], "url": a["url"], "response_body": a["response_body"],
        "headers_sent": {
            "content-type": "application/json", "user-agent": USER_AGENT,
            "webhook-id": data["event_id"], "webhook-timestamp": str(int(a["started_at"].timestamp())),
            "webhook-signature": "v1,[redacted]",
        },
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


async def deliveries_retry(db: asyncpg.Pool, settings: Settings, args: argparse.Namespace) -> None:
    wanted = [_id("dlv", text, "a delivery id") for text in args.ids]
    found = await delivery_repo.send_now(db, wanted, "retry", settings.replay_deadline_s)
    if found < len(wanted):
        missing = [t for t, v in zip(args.ids, wanted, strict=True) if await delivery_repo.get_any(db, v) is None]
        raise NotFound(f"no such delivery: {', '.join(missing)} (the others are queued)")
    print(f"queued {found} delivery(ies) for a retry now")


# ---- endpoints ----------------------------------------------------------------------------------

async def endpoints_list(db: asyncpg.Pool, settings: Settings, args: argparse.Namespace) -> None:
    business_id = _id("biz", args.business, "a business id") if args.business else None
    rows = await db.fetch(
        "SELECT id FROM endpoints WHERE ($1::uuid IS NULL OR business_id = $1) ORDER BY created_at DESC LIMIT $2",
        business_id, args.limit)
    endpoints = [await endpoint_repo.get_any(db, r["id"]) for r in rows]
    health = await health_repo.of_endpoints(db, [r["id"] for r in rows])
    data: list[dict[str, Any]] = [{"id": e.public_id, "business_id": ids.encode("biz", e.business_id), "url": e.url,
             "enabled": e.enabled, "disabled_reason": e.disabled_reason,
             "health": dataclasses.asdict(health[e.id])} for e in endpoints if e is not None]
    if args.json:
        print_json(data)
        return
    if not data:
        print("no endpoints")
        return

    def rate(x: float | None) -> str:
        return f"{x * 100:.1f}%" if x is not None else "-"

    print(table(["id", "enabled", "ok 1h", "p95", "backlog", "lag", "last failure", "url"],
                [[d["id"], "yes" if d["enabled"] else f"no ({(d['disabled_reason'] or '')[:30]})",
                  rate(d["health"]["success_rate"]),
                  f"{d['health']['p95_ms']} ms" if d["health"]["p95_ms"] is not None else "-",
                  d["health"]["backlog"], f"{d['health']['lag_s']:.0f}s" if d["health"]["lag_s"] is not None else "-",
                  (d["health"]["last_failure"] or "-")[:40], d["url"]] for d in data]))


async def endpoints_enable(db: asyncpg.Pool, settings: Settings, args: argparse.Namespace) -> None:
    endpoint_id = _id("ep", args.id, "an endpoint id")
    endpoint = await endpoint_repo.get_any(db, endpoint_id)
    if endpoint is None:
        raise NotFound(f"no such endpoint: {args.id}")
    async with db.acquire() as conn, conn.transaction():
        await endpoint_repo.update(conn, endpoint.business_id, endpoint_id, {"enabled": True})
        await audit.record(conn, action="endpoint.enabled", business_id=endpoint.business_id,
                           target_id=endpoint.public_id, details={"actor": cli_actor(),
                                                                  "was": endpoint.disabled_reason})
    print(safe(f"enabled {endpoint.public_id}" + (f" (was disabled: {endpoint.disabled_reason})"
                                                 if not endpoint.enabled else " (it was already enabled)")))


async def endpoints_recover(db: asyncpg.Pool, settings: Settings, args: argparse.Namespace) -> None:
    endpoint_id = _id("ep", args.id, "an endpoint id")
    since, until = parse_time(args.since), parse_time(args.until) if args.until else None
    if args.dry_run:
        plan = await recovery.plan(db, settings, endpoint_id, since=since, until=until,
                                   include_missed=args.include_missed)
        if args.json:
            print_json(dataclasses.asdict(plan))
            return
        print(f"would send {plan.count} delivery(ies) ({plan.failed} failed"
              + (f", {plan.missed} never sent" if args.include_missed else "") + "); nothing was changed")
        if plan.count > plan.max_count:
            print(f"that is over the {plan.max_count} one run re-sends (KAIHOOKS_MAX_RECOVER_DELIVERIES): "
                  "narrow the window")
        if plan.count:
            print(table(["event type", "count"], sorted(plan.by_event_type.items())))
            print(table(["last response", "count"], sorted(plan.by_last_status.items())))
        return
    job = await recovery.start(db, settings, endpoint_id, since=since, until=until,
                               include_missed=args.include_missed, rate_per_s=args.rate, actor=cli_actor(),
                               audit_actor={})
    job_text = ids.encode("rcv", job.id)
    print(f"recover {job_text}: {job.total} delivery(ies) at most {args.rate:g}/s "
          f"(cancel: Ctrl-C, or POST /v1/businesses/…/recover-jobs/{job_text}/cancel)")
    if args.detach or job.total == 0:
        return
    try:
        while True:
            status = await recovery.status(db, job.id)
            _progress(status.progress.attempted, job.total, status.progress.succeeded)
            if status.job.status != "running":
                break
            await asyncio.sleep(0.5)
        sys.stderr.write("\n")
        p = status.progress
        print(f"{status.job.status}: {p.succeeded} succeeded, {p.failed} failed, {p.attempted - p.succeeded - p.failed}"
              " retrying")
    except (KeyboardInterrupt, asyncio.CancelledError):
        status = await recovery.cancel(db, job.id, {"ip": None})
        sys.stderr.write("\n")
        print(f"cancelled: {status.progress.attempted} of {job.total} sent; the rest stay failed")


def _progress(done: int, total: int, ok: int) -> None:
    width = 30
    filled = int(width * done / total) if total else width
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} sent, {ok} succeeded")
    sys.stderr.flush()


Handler = Callable[[asyncpg.Pool, Settings, argparse.Namespace], Awaitable[None]]


def register(sub: Any) -> None:
    """Add the on-call commands to the `kaihooks` parser."""
    deliveries = sub.add_parser("deliveries", help="find, inspect and re-send deliveries").add_subparsers(
        dest="action", required=True)
    p = deliveries.add_parser("list", help="recent deliveries (last 24 h, 50 rows unless told)")
    p.add_argument("--business", metavar="ID")
    p.add_argument("--endpoint", metavar="ID")
    p.add_argument("--status", choices=["pending", "succeeded", "failed"])
    p.add_argument("--since", default="24h", metavar="T", help="RFC 3339 or a duration back (default 24h)")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=deliveries_list)
    p = deliveries.add_parser("show", help="one delivery with its attempts")
    p.add_argument("id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=deliveries_show)
    p = deliveries.add_parser("retry", help="re-send deliveries now")
    p.add_argument("ids", nargs="+", metavar="ID")
    p.set_defaults(handler=deliveries_retry)

    endpoints = sub.add_parser("endpoints", help="endpoint health, re-enabling and recovery").add_subparsers(
        dest="action", required=True)
    p = endpoints.add_parser("list", help="endpoints with their health over the last hour")
    p.add_argument("--business", metavar="ID")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=endpoints_list)
    p = endpoints.add_parser("enable", help="re-enable an endpoint disabled for failing")
    p.add_argument("id")
    p.set_defaults(handler=endpoints_enable)
    p = endpoints.add_parser("recover", help="re-send failed deliveries of a window, paced")
    p.add_argument("id")
    p.add_argument("--since", required=True, metavar="T")
    p.add_argument("--until", metavar="T")
    p.add_argument("--dry-run", action="store_true", help="count what would be sent; change nothing")
    p.add_argument("--rate", type=float, default=recovery.DEFAULT_RATE_PER_S, metavar="N",
                   help=f"at most N a second (default {recovery.DEFAULT_RATE_PER_S:g})")
    p.add_argument("--include-missed", action="store_true", help="also send events it never got")
    p.add_argument("--detach", action="store_true", help="start it and return (no progress bar)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=endpoints_recover)


async def run(settings: Settings, handler: Handler, args: argparse.Namespace) -> None:
    db = await create_pool(settings, min_size=1, max_size=2)
    try:
        await handler(db, settings, args)
    finally:
        await db.close()
