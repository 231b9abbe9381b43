"""`kaihooks endpoints list|enable|recover`: endpoint health, re-enabling and paced recovery for the
on-call engineer.

Each action calls the service the API calls for it (``shared.webhook_service.update_endpoint``,
``shared.recovery``), so it has one implementation and one audit entry; this module only turns results into
text or JSON. Everything printed that it did not write itself (URLs, reasons, failures) goes through
``shared.cli.terminal``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from typing import Any

from shared import ids, recovery
from shared import webhook_service as service
from shared.cli.base import Context, cli_actor
from shared.cli.terminal import print_json, safe, table
from shared.errors import NotFound
from shared.repos import endpoints as endpoint_repo
from shared.repos import health as health_repo
from shared.repos.recover_jobs import RecoverJob


async def list_endpoints(ctx: Context, args: argparse.Namespace) -> None:
    db = await ctx.db()
    endpoints = await endpoint_repo.newest(db, args.business, args.limit)
    health = await health_repo.of_endpoints(db, [e.id for e in endpoints])
    data: list[dict[str, Any]] = [{"id": e.public_id, "business_id": ids.encode("biz", e.business_id), "url": e.url,
                                   "enabled": e.enabled, "disabled_reason": e.disabled_reason,
                                   "health": dataclasses.asdict(health[e.id])} for e in endpoints]
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


async def enable_endpoint(ctx: Context, args: argparse.Namespace) -> None:
    """As `PATCH …/webhook-endpoints/{id}` with ``{"enabled": true}``: the same change, audit entry and
    notice to the workers."""
    db = await ctx.db()
    before = await endpoint_repo.get_any(db, args.id)
    if before is None:
        raise NotFound(f"no such endpoint: {ids.encode('ep', args.id)}")
    after = await service.update_endpoint(db, ctx.settings, before.business_id, args.id, {"enabled": True},
                                          actor={}, by=cli_actor())
    if args.json:
        print_json({"id": after.public_id, "enabled": after.enabled, "was_enabled": before.enabled,
                    "was_disabled_reason": before.disabled_reason})
        return
    print(safe(f"enabled {after.public_id}" + (f" (was disabled: {before.disabled_reason})"
                                              if not before.enabled else " (it was already enabled)")))


def _job(job: RecoverJob, status: recovery.Status | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"job_id": ids.encode("rcv", job.id), "endpoint_id": ids.encode("ep", job.endpoint_id),
                            "status": (status.job if status else job).status, "total": job.total,
                            "rate_per_s": job.rate_per_s, "since": job.since, "until": job.until}
    if status is not None:
        data.update(dataclasses.asdict(status.progress))
    return data


async def recover_endpoint(ctx: Context, args: argparse.Namespace) -> None:
    db = await ctx.db()
    if args.dry_run:
        plan = await recovery.plan(db, ctx.settings, args.id, since=args.since, until=args.until,
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
    rate = args.rate if args.rate is not None else recovery.DEFAULT_RATE_PER_S
    job = await recovery.start(db, ctx.settings, args.id, since=args.since, until=args.until,
                               include_missed=args.include_missed, rate_per_s=rate, actor=cli_actor(),
                               audit_actor={})
    job_text = ids.encode("rcv", job.id)
    if not args.json:
        print(f"recover {job_text}: {job.total} delivery(ies) at most {rate:g}/s "
              f"(cancel: Ctrl-C, or POST /v1/businesses/…/recover-jobs/{job_text}/cancel)")
    if args.detach or job.total == 0:
        if args.json:
            print_json(_job(job))
        return
    try:
        while True:
            status = await recovery.status(db, job.id)
            if not args.json:
                _progress(status.progress.attempted, job.total, status.progress.succeeded)
            if status.job.status != "running":
                break
            await asyncio.sleep(0.5)
    except (KeyboardInterrupt, asyncio.CancelledError):
        status = await recovery.cancel(db, job.id, {"ip": None})
        if args.json:
            print_json(_job(job, status))
            return
        sys.stderr.write("\n")
        print(f"cancelled: {status.progress.attempted} of {job.total} sent; the rest stay failed")
        return
    if args.json:
        print_json(_job(job, status))
        return
    sys.stderr.write("\n")
    p = status.progress
    print(f"{status.job.status}: {p.succeeded} succeeded, {p.failed} failed, {p.attempted - p.succeeded - p.failed}"
          " retrying")


def _progress(done: int, total: int, ok: int) -> None:
    width = 30
    filled = int(width * done / total) if total else width
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} sent, {ok} succeeded")
    sys.stderr.flush()
