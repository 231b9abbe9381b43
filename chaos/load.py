"""The publisher: events at a steady rate through ``POST /internal/v1/events``, spread over the API processes.

A pacer cuts the load into requests (a third single events, the rest batches of 2-50) and a few senders
post them. Every event carries an idempotency key, so a request that failed or whose answer was lost is sent
again, unchanged, to the other API process (after a short pause): an event committed by a process killed
before it answered then comes back as ``duplicate: true`` with its first id. Only a ``202`` counts as an
acknowledgement; each acknowledged event is recorded with its id, the time its first request was sent and
the time its ``202`` arrived (it was stored in between).

Every answer is tallied by API process and status (``refused`` / ``reset`` / ``timeout`` for no answer).
A ``503`` must be problem+json with code ``service_unavailable``; any other 5xx is a failure of the drill.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from world import EventMaker

REQUEST_TIMEOUT_S = 30.0
RETRY_PAUSE_S = 0.25
TICK_S = 0.1


@dataclass
class Ack:
    event_id: str  # evt_…
    business: str
    type: str
    acked_at: float  # wall clock
    sent_at: float = 0.0  # when its first request was sent: the event was stored between this and acked_at


@dataclass
class Answer:
    at: float
    api: str
    status: str  # "202", "503", … or "refused", "reset", "timeout"
    detail: str = ""


@dataclass
class Publisher:
    apis: list[tuple[str, str]]  # (name, base URL)
    token: str
    maker: EventMaker
    rate: float  # events per second
    senders: int = 6
    acks: dict[str, Ack] = field(default_factory=dict)  # idempotency key -> ack
    answers: list[Answer] = field(default_factory=list)
    tally: Counter[tuple[str, str]] = field(default_factory=Counter)
    bad: list[Answer] = field(default_factory=list)  # 5xx other than 503, 503 that is not problem+json, 4xx
    published: int = 0  # events handed to the senders
    injected: int = 0  # ...of which bursts from outside the pacer (the churn's)
    retries: int = 0
    duplicates_acked: int = 0  # events acknowledged as duplicate: a first try had committed them
    _queue: asyncio.Queue[list[dict[str, Any]]] = field(default_factory=asyncio.Queue)
    _rng: random.Random = field(default_factory=lambda: random.Random(8))
    _next_api: int = 0

    async def run(self, duration_s: float, give_up_after_s: float) -> None:
        """Publish for ``duration_s``, then wait for every request to be acknowledged (at most
        ``give_up_after_s`` more: what is left then is reported as never acknowledged)."""
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        connector = aiohttp.TCPConnector(limit=self.senders * 2, force_close=False)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector,
                                         headers={"Authorization": f"Bearer {self.token}"}) as http:
            workers = [asyncio.create_task(self._sender(http)) for _ in range(self.senders)]
            try:
                await self._pace(duration_s)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._queue.join(), give_up_after_s)
            finally:
                for w in workers:
                    w.cancel()
                await asyncio.gather(*workers, return_exceptions=True)

    @property
    def unacknowledged(self) -> int:
        return self.published - len(self.acks)

    async def _pace(self, duration_s: float) -> None:
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < duration_s:
            due = int(self.rate * elapsed) - (self.published - self.injected)
            while due > 0:
                size = 1 if self._rng.random() < 0.33 else self._rng.randint(2, 50)
                size = min(size, due)
                self._queue.put_nowait([self.maker.next() for _ in range(size)])
                self.published += size
                due -= size
            await asyncio.sleep(TICK_S)

    def inject(self, events: list[dict[str, Any]]) -> None:
        """Publish these events besides the steady load, as one request (acknowledged and recorded alike)."""
        self._queue.put_nowait(events)
        self.published += len(events)
        self.injected += len(events)

    def _pick_api(self) -> int:
        self._next_api = (self._next_api + 1) % len(self.apis)
        return self._next_api

    async def _sender(self, http: aiohttp.ClientSession) -> None:
        while True:
            events = await self._queue.get()
            try:
                await self._send(http, events)
            finally:
                self._queue.task_done()

    async def _send(self, http: aiohttp.ClientSession, events: list[dict[str, Any]]) -> None:
        body = orjson.dumps({"events": events} if len(events) > 1 else events[0])
        api = self._pick_api()
        first_sent = time.time()
        while True:
            name, url = self.apis[api]
            answer = await self._post(http, name, url, body)
            self.answers.append(answer)
            self.tally[(name, answer.status)] += 1
            if answer.status == "202":
                self._acknowledged(events, orjson.loads(answer.detail), answer.at, first_sent)
                return
            if answer.status.startswith("4"):
                self.bad.append(answer)  # the drill's own mistake: never retried, reported
                return
            # 503, another 5xx, or no answer: the same request again, on the other process.
            self.retries += 1
            api = (api + 1) % len(self.apis)
            await asyncio.sleep(RETRY_PAUSE_S * self._rng.uniform(0.5, 1.5))

    async def _post(self, http: aiohttp.ClientSession, name: str, url: str, body: bytes) -> Answer:
        try:
            async with http.post(url + "/internal/v1/events", data=body,
                                 headers={"Content-Type": "application/json"}) as r:
                raw = await r.read()
                at = time.time()
                status = str(r.status)
                if r.status == 202:
                    return Answer(at, name, status, raw.decode())
                detail = raw[:300].decode(errors="replace")
                answer = Answer(at, name, status, detail)
                if r.status == 503:
                    ok = r.headers.get("Content-Type", "").startswith("application/problem+json") and \
                        orjson.loads(raw).get("code") == "service_unavailable"
                    if not ok:
                        self.bad.append(answer)
                elif r.status >= 500:
                    self.bad.append(answer)
                return answer
        except aiohttp.ClientConnectorError as exc:
            return Answer(time.time(), name, "refused", str(exc.os_error)[:200])
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, aiohttp.ClientPayloadError) as exc:
            return Answer(time.time(), name, "reset", type(exc).__name__)
        except TimeoutError:
            return Answer(time.time(), name, "timeout", f"no answer in {REQUEST_TIMEOUT_S:g} s")

    def _acknowledged(self, events: list[dict[str, Any]], body: dict[str, Any], at: float, first_sent: float) -> None:
        accepted = body["events"]
        assert len(accepted) == len(events), (len(accepted), len(events))
        for sent, got in zip(events, accepted, strict=True):
            assert got["idempotency_key"] == sent["idempotency_key"], (got, sent["idempotency_key"])
            if got["duplicate"]:
                self.duplicates_acked += 1
            self.acks[sent["idempotency_key"]] = Ack(got["id"], sent["business_id"], sent["type"], at, first_sent)
