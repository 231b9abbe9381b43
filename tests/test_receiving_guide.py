"""docs/receiving-webhooks.md, run: the guide's code examples, taken from the page itself, verify real deliveries
from a real API and worker (the Python examples are exec'd, the Node.js one runs in `node`).

An example is a fenced block right after a line ``<!-- example: NAME -->``; blocks with the same name join in order.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from shared import ids
from tests.processes import free_port
from tests.receiver import Received
from tests.test_publishing import call, event, publish
from tests.world import FAST, World

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "receiving-webhooks.md"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """The delivery tests' fast settings, for the `world` fixture: real API, worker and receiver on 127.0.0.1."""
    return dict(FAST)


# Every example the guide marks, and so every one these tests check.
CHECKED = {"endpoint-created", "request", "payload", "python-standardwebhooks", "python-hmac", "node",
           "test-vector", "python-receiver"}


# ---- the guide's examples --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    example: str | None  # the name in the <!-- example: … --> line just before it, if any
    lang: str
    code: str


def guide_blocks() -> list[Block]:
    """Every fenced code block of the guide (indented ones too, as inside list items)."""
    lines = GUIDE.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = re.fullmatch(r"( *)```(\S*)", lines[i])
        if opening is None:
            i += 1
            continue
        indent, lang = opening.groups()
        end = i + 1
        while lines[end] != f"{indent}```":
            end += 1
        marker = re.fullmatch(r"\s*<!-- example: ([\w-]+) -->\s*", lines[i - 1]) if i else None
        code = "\n".join(line.removeprefix(indent) for line in lines[i + 1:end])
        blocks.append(Block(marker[1] if marker else None, lang, code))
        i = end + 1
    return blocks


def example(name: str) -> list[str]:
    found = [b.code for b in guide_blocks() if b.example == name]
    assert found, f"{GUIDE} has no block marked <!-- example: {name} -->"
    return found


def python_example(*names: str) -> dict[str, Any]:
    """The named Python examples executed in order in one namespace (a later one may use an earlier one)."""
    namespace: dict[str, Any] = {"__name__": "receiving_webhooks_guide"}
    for name in names:
        exec(compile("\n\n".join(example(name)), f"{GUIDE}#{name}", "exec"), namespace)
    return namespace


Verifier = Callable[[str, dict[str, str], bytes], bool]


def python_verifier(name: str) -> Verifier:
    """The example's verify_webhook, as True (accepted) or False (refused with the example's own exception)."""
    namespace = python_example(name)
    verify = namespace["verify_webhook"]
    refused = namespace["InvalidWebhook" if "InvalidWebhook" in namespace else "WebhookVerificationError"]

    def check(secret: str, headers: dict[str, str], body: bytes) -> bool:
        try:
            verify(secret, headers, body)
        except refused:
            return False
        return True

    return check


NODE_HARNESS = """
let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => { input += chunk; });
process.stdin.on("end", () => {
  const cases = JSON.parse(input);
  const verdicts = cases.map((c) => verifyWebhook(c.secret, c.headers, Buffer.from(c.body, "base64")));
  process.stdout.write(JSON.stringify(verdicts));
});
"""


def node_binary() -> str:
    node = shutil.which("node") or ("/usr/bin/node" if os.access("/usr/bin/node", os.X_OK) else None)
    if node is None:
        pytest.fail("`node` is not installed, so the guide's Node.js example cannot be checked: install Node.js "
                    "(18 or newer) so that `node` is on PATH")
    return node


async def node_verdicts(tmp_path: Path, cases: list[tuple[str, dict[str, str], bytes]]) -> list[bool]:
    """The guide's Node.js verifyWebhook run by `node` on each (secret, headers, body)."""
    [code] = example("node")
    script = tmp_path / "verify-webhook.js"
    script.write_text(code + "\n" + NODE_HARNESS, encoding="utf-8")
    stdin = json.dumps([{"secret": s, "headers": h, "body": base64.b64encode(b).decode()} for s, h, b in cases])
    proc = await asyncio.create_subprocess_exec(node_binary(), str(script), stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 30)
    assert proc.returncode == 0, err.decode()
    verdicts = json.loads(out)
    assert all(isinstance(v, bool) for v in verdicts), verdicts
    return verdicts  # type: ignore[no-any-return]


# ---- real deliveries and altered copies of them ------------------------------------------------------------


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """A Standard Webhooks signature, for re-signing a real delivery with another timestamp."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


@dataclass(frozen=True)
class Case:
    name: str
    secret: str
    headers: dict[str, str]
    body: bytes
    valid: bool


def cases(secret: str, got: Received) -> list[Case]:
    """The genuine request, and copies of it that a verifier must refuse (each changes one thing)."""
    headers, body = lower(got.headers), got.body
    msg_id, now = headers["webhook-id"], int(time.time())

    def resigned(timestamp: int) -> dict[str, str]:
        return {**headers, "webhook-timestamp": str(timestamp), "webhook-signature": sign(secret, msg_id, timestamp,
                                                                                          body)}

    tampered = body.replace(b'"ringing"', b'"completed"')
    reencoded = json.dumps(json.loads(body)).encode()
    assert tampered != body and reencoded != body
    return [
        Case("genuine", secret, headers, body, True),
        # proves that re-signing works, so that the stale and future cases fail for their timestamp alone
        Case("re-signed, 4 minutes old", secret, resigned(now - 4 * 60), body, True),
        Case("tampered body", secret, headers, tampered, False),
        Case("body parsed and re-encoded", secret, headers, reencoded, False),
        Case("wrong secret", new_secret(), headers, body, False),
        Case("another webhook-id", secret, {**headers, "webhook-id": ids.encode("evt", ids.new_uuid())}, body, False),
        Case("stale timestamp, correctly signed", secret, resigned(now - 6 * 60), body, False),
        Case("future timestamp, correctly signed", secret, resigned(now + 6 * 60), body, False),
        Case("no signature header", secret, {k: v for k, v in headers.items() if k != "webhook-signature"}, body,
             False),
        Case("unknown versions and junk", secret, {**headers, "webhook-signature": "v2,abc v1,not-base64!! v1a,x"},
             body, False),
        *(Case(f"malformed signature {junk!r}", secret, {**headers, "webhook-signature": junk}, body, False)
          for junk in ("v1,\u00fc", "v1", ",", "v1, ")),
        Case("malformed timestamp", secret, {**headers, "webhook-timestamp": "12e3"}, body, False),
    ]


def assert_verdicts(cases_: list[Case], verdicts: list[bool]) -> None:
    assert {c.name: v for c, v in zip(cases_, verdicts, strict=True)} == {c.name: c.valid for c in cases_}


async def real_delivery(world: World, path: str = "/ok") -> tuple[dict[str, Any], Received]:
    """An endpoint created with the API, an event published by a service, and what the receiver got."""
    endpoint = await world.endpoint(path)
    event_id = await world.publish("call.started", call(status="ringing"))
    [got] = await world.receiver.wait_for(1, path)
    assert lower(got.headers)["webhook-id"] == event_id
    [delivery] = await world.settled(endpoint["id"])
    assert delivery["status"] == "succeeded"
    return endpoint, got


async def until(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout_s} s")
        await asyncio.sleep(0.02)


# ---- the verification examples against real deliveries -------------------------------------------------------


async def test_the_standard_library_example_verifies_a_real_delivery(world: World) -> None:
    endpoint, got = await real_delivery(world)
    verify = python_verifier("python-hmac")
    all_cases = cases(endpoint["secret"], got)
    assert_verdicts(all_cases, [verify(c.secret, c.headers, c.body) for c in all_cases])
    # header names in any case, as Python frameworks hand them over
    assert verify(endpoint["secret"], {k.title(): v for k, v in got.headers.items()}, got.body)


async def test_the_standardwebhooks_package_example_verifies_a_real_delivery(world: World) -> None:
    endpoint, got = await real_delivery(world)
    verify = python_verifier("python-standardwebhooks")
    all_cases = cases(endpoint["secret"], got)
    assert_verdicts(all_cases, [verify(c.secret, c.headers, c.body) for c in all_cases])
    assert verify(endpoint["secret"], {k.title(): v for k, v in got.headers.items()}, got.body)
    parsed = python_example("python-standardwebhooks")["verify_webhook"](endpoint["secret"], got.headers, got.body)
    assert parsed == json.loads(got.body)


async def test_the_node_example_verifies_a_real_delivery(world: World, tmp_path: Path) -> None:
    endpoint, got = await real_delivery(world)
    all_cases = cases(endpoint["secret"], got)
    assert_verdicts(all_cases, await node_verdicts(tmp_path, [(c.secret, c.headers, c.body) for c in all_cases]))


async def test_during_a_rotation_every_example_accepts_the_old_and_the_new_secret(world: World,
                                                                                 tmp_path: Path) -> None:
    endpoint = await world.endpoint("/ok")
    old = endpoint["secret"]
    r = await world.api.post(f"{world.tenant.path}/webhook-endpoints/{endpoint['id']}/secret/rotate", key=world.key,
                             json={"grace_seconds": 3600})
    assert r.status == 200, r.body
    new = r.body["secret"]
    assert new != old
    await world.publish()
    [got] = await world.receiver.wait_for(1, "/ok")
    await world.settled(endpoint["id"])
    headers = lower(got.headers)
    assert len(headers["webhook-signature"].split(" ")) == 2
    secrets = {"old": old, "new": new, "unrelated": new_secret()}
    expected = {"old": True, "new": True, "unrelated": False}
    for name in ("python-hmac", "python-standardwebhooks"):
        verify = python_verifier(name)
        assert {k: verify(s, headers, got.body) for k, s in secrets.items()} == expected, name
    verdicts = await node_verdicts(tmp_path, [(s, headers, got.body) for s in secrets.values()])
    assert dict(zip(secrets, verdicts, strict=True)) == expected, "node"


# ---- the rest of the page --------------------------------------------------------------------------------


def payload_examples() -> dict[str, dict[str, Any]]:
    found = [json.loads(code) for code in example("payload")]
    assert {e["type"].split(".")[0] for e in found} == {"call", "agent", "lead", "webhook"}
    for e in found:
        assert ids.decode("evt", e["id"]) and ids.decode("biz", e["business_id"]), e
    return {e["type"]: e for e in found}


async def test_the_payload_examples_are_what_endpoints_receive(world: World) -> None:
    examples = payload_examples()
    del examples["webhook.test"]
    endpoint = await world.endpoint("/ok")
    [created_example] = [json.loads(code) for code in example("endpoint-created")]
    assert list(created_example) == list(endpoint)
    assert ids.decode("ep", created_example["id"]) and created_example["secret"].startswith("whsec_")
    for e in examples.values():
        r = await publish(world.api, event(world.tenant.business_id, e["type"], e["data"], occurred_at=e["timestamp"]))
        assert r.status == 202, r.body
    got = await world.receiver.wait_for(len(examples), "/ok")
    assert {d["status"] for d in await world.settled(endpoint["id"], len(examples))} == {"succeeded"}
    received = {(body := json.loads(g.body))["type"]: (body, lower(g.headers)) for g in got}
    assert set(received) == set(examples)
    for type_, e in examples.items():
        body, headers = received[type_]
        assert list(body) == list(e), type_
        assert body["data"] == e["data"] and body["timestamp"] == e["timestamp"], type_
        assert body["id"] == headers["webhook-id"] and body["business_id"] == world.tenant.business_id


async def test_the_webhook_test_example_is_what_the_test_route_sends(world: World) -> None:
    e = payload_examples()["webhook.test"]
    endpoint = await world.endpoint("/ok")
    r = await world.api.post(f"{world.tenant.path}/webhook-endpoints/{endpoint['id']}/test", key=world.key)
    assert r.status == 202, r.body
    [got] = await world.receiver.wait_for(1, "/ok")
    assert (await world.delivery_settled(r.body["delivery_id"]))["status"] == "succeeded"
    body = json.loads(got.body)
    assert list(body) == list(e) and body["type"] == "webhook.test"
    assert body["id"] == lower(got.headers)["webhook-id"] and body["business_id"] == world.tenant.business_id
    assert body["data"] == e["data"]


def test_the_example_request_and_the_test_vector_agree_with_the_signing_rule() -> None:
    [request] = example("request")
    head, body = request.split("\n\n", 1)
    request_line, *header_lines = head.splitlines()
    assert request_line.startswith("POST ")
    headers = dict(line.split(": ", 1) for line in header_lines)
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"].startswith("KaiCalls-Webhooks/")
    payload = json.loads(body)
    assert payload["id"] == headers["webhook-id"]

    [vector] = example("test-vector")
    fields = dict(line.split(": ", 1) for line in vector.splitlines())
    assert fields["signed content"] == f"{headers['webhook-id']}.{headers['webhook-timestamp']}.{body}"
    signature = sign(fields["secret"], headers["webhook-id"], int(headers["webhook-timestamp"]), body.encode())
    assert fields["signature"] == headers["webhook-signature"] == signature


def test_every_code_example_in_the_guide_is_checked_here() -> None:
    blocks = guide_blocks()
    unchecked = [b.code[:60] for b in blocks if b.lang in {"python", "py", "js", "javascript", "ts"} and not b.example]
    assert unchecked == [], "mark each code example with <!-- example: NAME --> and check it in this file"
    assert {b.example for b in blocks if b.example} == CHECKED


# ---- the complete receiver ------------------------------------------------------------------------------------


async def test_the_complete_receiver_acknowledges_at_once_and_handles_each_event_once(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/webhooks/kaicalls"
    r = await world.api.post(f"{world.tenant.path}/webhook-endpoints", key=world.key, json={"url": url})
    assert r.status == 201, r.body
    endpoint = r.body
    monkeypatch.setenv("KAICALLS_WEBHOOK_SECRET", endpoint["secret"])
    guide = python_example("python-hmac", "python-receiver")
    handled: list[dict[str, Any]] = []

    async def handle_event(event: dict[str, Any]) -> None:
        handled.append(event)

    guide["handle_event"] = handle_event
    app = guide["make_app"]()
    inbox = app[guide["INBOX"]]
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    try:
        event_id = await world.publish("call.completed", call("c-guide", status="completed"))
        await until(lambda: len(handled) == 1)
        assert handled[0]["id"] == event_id and handled[0]["data"]["id"] == "c-guide"
        [delivery] = await world.settled(endpoint["id"])
        assert delivery["status"] == "succeeded" and delivery["last_response_status"] == 204

        # The same event again (a retry by hand): acknowledged with 2xx, not handled a second time.
        r = await world.api.post(f"{world.tenant.path}/deliveries/{delivery['id']}/retry", key=world.key)
        assert r.status == 202, r.body
        deadline = time.monotonic() + 10
        while len((detail := await world.delivery(delivery["id"]))["attempts"]) < 2 or detail["status"] == "pending":
            assert time.monotonic() < deadline, detail
            await asyncio.sleep(0.05)
        assert [a["response_status"] for a in detail["attempts"]] == [204, 204]
        assert inbox.jobs.empty() and inbox.seen == {event_id}
        assert len(handled) == 1

        # A forged request: refused, nothing queued.
        now = int(time.time())
        forged = {"content-type": "application/json", "webhook-id": "evt_forged", "webhook-timestamp": str(now),
                  "webhook-signature": sign(new_secret(), "evt_forged", now, b"{}")}
        async with aiohttp.ClientSession() as http, http.post(url, data=b"{}", headers=forged) as resp:
            assert resp.status == 400
        assert inbox.jobs.empty() and inbox.seen == {event_id} and len(handled) == 1
    finally:
        await server.close()
