"""Scenario ``P6``: reads, ``GET /v1/businesses/{id}/calls?limit=20`` with an API key, vs a bare
aiohttp handler sending the same bytes from memory (quality target P6: ≥ 0.5 x the baseline).

Setup: the run's seeded business and key (default scopes, ``calls:read`` among them)
gets SEEDED_CALLS calls, published through the API's own ``POST /internal/v1/events``
(``call.completed`` events of about 1 KiB of data each, from ``callgen``), so the
``calls`` projection holds exactly what publishing makes. The API's first page is
captured once; the bare handler (``bare_server.py --raw``) then sends those very bytes
without encoding anything, the ceiling for this response on this box. The comparison
is ``common.get_vs_bare``, as for ``me``: same load, same concurrency (the bare
handler's best), alternating rounds, every response checked byte for byte.
"""

from __future__ import annotations

import http.client
import random
from contextlib import ExitStack
from datetime import timedelta
from typing import Any

import callgen
import common
import orjson
import procs
import report
from setup_env import Context

ID = "P6"
TITLE = "Reads: GET /v1/businesses/{id}/calls?limit=20 with an API key vs a bare aiohttp handler"
TARGET_RATIO = 0.5
SEEDED_CALLS = 1_000
SEED_BATCH = 100  # published in batches of this many (so the calls do not all share one created_at)
LIMIT = 20


def _seed(ctx: Context, port: int) -> int:
    """Publish SEEDED_CALLS ``call.completed`` events for the run's business; the calls projection follows."""
    rng = random.Random(6)
    published = 0
    for first in range(0, SEEDED_CALLS, SEED_BATCH):
        events = []
        for i in range(first, first + SEED_BATCH):
            call_id = f"call_seed_{i:05d}"
            data = callgen.completed(rng, call_id, f"agt_{i % 7}", callgen.START + timedelta(minutes=i))
            events.append({"business_id": ctx.business_id, "type": "call.completed",
                           "idempotency_key": f"{call_id}.completed", "data": data})
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("POST", "/internal/v1/events", body=orjson.dumps({"events": events}),
                         headers={"Authorization": f"Bearer {ctx.internal_token}",
                                  "Content-Type": "application/json"})
            response = conn.getresponse()
            answer = response.read()
        finally:
            conn.close()
        if response.status != 202 or len(orjson.loads(answer)["events"]) != SEED_BATCH:
            raise SystemExit(f"bench: P6 seeding failed: HTTP {response.status}: {answer[:300]!r}")
        published += SEED_BATCH
    return published


def run(ctx: Context) -> dict[str, Any]:
    with ExitStack() as stack:  # this scenario's processes stop when it ends
        api, api_port = common.start_api(ctx, stack)
        seeded = _seed(ctx, api_port)
        path = f"/v1/businesses/{ctx.business_id}/calls"
        headers = {"Authorization": f"Bearer {ctx.api_key}"}
        page = orjson.loads(procs.wait_http(api, api_port, f"{path}?limit={LIMIT}", headers))
        if len(page["data"]) != LIMIT or not page["next_cursor"]:
            raise SystemExit(f"bench: P6 expected a full page of {LIMIT} calls and a cursor, got "
                             f"{len(page['data'])} and {page['next_cursor']!r}")
        result = common.get_vs_bare(
            ctx, stack, scenario_id=ID, title=TITLE, target_ratio=TARGET_RATIO, api=api, api_port=api_port,
            path=path, query=f"?limit={LIMIT}", headers=headers,
            app_name=f"kaihooks GET …/calls?limit={LIMIT} (API key)", raw=True)
    result["seeded_calls"] = seeded
    result["method"] = (
        f"{seeded:,} calls seeded through `POST /internal/v1/events` (`call.completed`, about 1 KiB of data "
        f"each) for one business; the page is the newest {LIMIT} with a cursor. The bare handler sends the "
        f"API's captured {result['response_bytes']:,}-byte body as it is (no encoding). "
        + report.get_method(result)
    )
    return result
