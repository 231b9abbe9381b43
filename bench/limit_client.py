"""The ``limit`` load: a bare aiohttp client loop that signs and POSTs webhooks, in a process of its own.

``python bench/limit_client.py --base http://127.0.0.1:N --secrets FILE --concurrency 16
--t0 EPOCH --t1 EPOCH --out FILE`` keeps ``concurrency`` keep-alive POSTs going from the moment it
starts (the warm-up) until wall-clock time ``t1``, round-robin over the paths of FILE (``{path:
"whsec_..."}``). Each request is what the dispatcher sends: a JSON body of about 1 KiB
(``{"id", "type", "timestamp", "business_id", "data"}``, ``data`` a ``callgen`` call with
``sent_at_ns``, the send time) and the Standard Webhooks headers (``webhook-id``,
``webhook-timestamp``, ``webhook-signature``: base64 HMAC-SHA256 of ``id.timestamp.body`` under the
path's secret, as ``shared/signing.py`` does), the same user agent and content type. A request
counts if it answered 200 and completed inside ``[t0, t1]``; it writes its figures as JSON to
``--out``. Bounded by time and by ``--max-requests``; 127.0.0.1 only. It does not import the project.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import itertools
import math
import random
import time
import urllib.parse
from pathlib import Path
from typing import Any

import aiohttp
import callgen
import orjson

from shared.runtime import new_event_loop

USER_AGENT = "KaiCalls-Webhooks/0.1.0"


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def _pct(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return round(1000 * ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))], 2)


async def run(base: str, targets: list[tuple[str, bytes]], concurrency: int, t0: float, t1: float,
              max_requests: int) -> dict[str, Any]:
    rng = random.Random(1)
    datas = [callgen.completed(rng, f"call_limit_{i:03d}", f"agt_{i % 7}", callgen.START) for i in range(64)]
    counter = itertools.count()
    issued = 0
    latencies: list[float] = []
    errors: list[str] = []
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=10), auto_decompress=False,
        headers={"User-Agent": USER_AGENT}, skip_auto_headers=("Accept-Encoding",),
        cookie_jar=aiohttp.DummyCookieJar(),
    ) as session:

        async def worker() -> None:
            nonlocal issued
            while issued < max_requests:
                sent = time.time()
                if sent >= t1:
                    return
                issued += 1
                n = next(counter)
                path, key = targets[n % len(targets)]
                msg_id = f"evt_limit{n:020d}"
                data = {**datas[n % len(datas)], "sent_at_ns": time.time_ns()}
                body = orjson.dumps({"id": msg_id, "type": "call.completed",
                                     "timestamp": "2026-11-27T09:00:00Z", "business_id": "biz_limit", "data": data})
                stamp = int(sent)
                headers = {"content-type": "application/json", "webhook-id": msg_id,
                           "webhook-timestamp": str(stamp), "webhook-signature": sign(key, msg_id, stamp, body)}
                try:
                    async with session.post(base + path, data=body, headers=headers, allow_redirects=False) as resp:
                        await resp.read()
                        status = resp.status
                except (aiohttp.ClientError, TimeoutError) as exc:
                    errors.append(repr(exc))
                    continue
                done = time.time()
                if status != 200:
                    errors.append(f"HTTP {status}")
                elif t0 <= done <= t1:
                    latencies.append(done - sent)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    ordered = sorted(latencies)
    return {"ok": len(latencies), "errors": len(errors), "error_samples": errors[:5], "issued": issued,
            "window_s": t1 - t0, "rtt_p50_ms": _pct(ordered, 0.5), "rtt_p95_ms": _pct(ordered, 0.95),
            "rtt_p99_ms": _pct(ordered, 0.99), "rtt_max_ms": _pct(ordered, 1.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="http://127.0.0.1:PORT")
    parser.add_argument("--secrets", type=Path, required=True, help='JSON {"/h/lim/0": "whsec_...", ...}')
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--t0", type=float, required=True, help="window start, epoch seconds")
    parser.add_argument("--t1", type=float, required=True, help="window end, epoch seconds")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--max-requests", type=int, default=1_000_000)
    args = parser.parse_args()
    if urllib.parse.urlsplit(args.base).hostname != "127.0.0.1":
        raise SystemExit("limit_client: 127.0.0.1 only")
    if not args.t0 < args.t1 <= time.time() + 600:
        raise SystemExit("limit_client: the window must end within 10 minutes")
    targets = [(path, base64.b64decode(secret.removeprefix("whsec_")))
               for path, secret in orjson.loads(args.secrets.read_bytes()).items()]
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        result = runner.run(run(args.base, targets, args.concurrency, args.t0, args.t1, args.max_requests))
    args.out.write_bytes(orjson.dumps(result))


if __name__ == "__main__":
    main()
