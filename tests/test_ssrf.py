"""R7, SSRF: private, loopback, link-local, metadata and odd spellings of them are refused when an endpoint is
saved, and again at connect time for the address a name actually resolves to (with a resolver we control)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from dispatcher import send
from dispatcher.outcome import Outcome
from tests.helpers import Api, Tenant

# ---- save time ------------------------------------------------------------------------------------

# (url, words the refusal must contain). The app runs with the default KAIHOOKS_ALLOW_PRIVATE_TARGETS (off).
REFUSED = [
    ("http://hooks.example.com/hook", "https://"),
    ("https://127.0.0.1/hook", "loopback"),
    ("https://127.1/hook", "loopback"),
    ("https://2130706433/hook", "loopback"),  # decimal
    ("https://0177.0.0.1/hook", "loopback"),  # octal
    ("https://0x7f.0.0.1/hook", "loopback"),  # hex
    ("https://017700000001/hook", "loopback"),  # one octal number
    ("https://localhost/hook", "not a public host name"),
    ("https://LocalHost:8443/hook", "not a public host name"),
    ("https://localhost./hook", "not a public host name"),  # the same name, fully qualified
    ("https://metadata.google.internal/computeMetadata/v1/", "not a public host name"),
    ("https://metadata.google.internal./computeMetadata/v1/", "not a public host name"),  # fully qualified
    ("https://10.0.0.1/hook", "private"),
    ("https://10.255.255.254/hook", "private"),
    ("https://172.16.0.1/hook", "private"),
    ("https://172.31.255.254/hook", "private"),
    ("https://192.168.1.1/hook", "private"),
    ("https://100.64.0.1/hook", "carrier-grade NAT"),
    ("https://100.127.255.254/hook", "carrier-grade NAT"),
    ("https://169.254.10.20/hook", "link-local"),
    ("https://169.254.169.254/latest/meta-data/", "metadata"),
    ("https://[fd00:ec2::254]/latest/meta-data/", "metadata"),
    ("https://[::1]/hook", "loopback"),
    ("https://[fc00::1]/hook", "private"),
    ("https://[fd12:3456:789a::1]/hook", "private"),
    ("https://[fe80::1]/hook", "link-local"),
    ("https://[::ffff:127.0.0.1]/hook", "IPv6 form of a loopback"),
    ("https://[::ffff:169.254.169.254]/hook", "IPv6 form of a cloud metadata"),
    ("https://[64:ff9b::a00:1]/hook", "IPv6 form of a private"),  # NAT64 of 10.0.0.1
    ("https://[2002:a00:1::]/hook", "IPv6 form of a private"),  # 6to4 of 10.0.0.1
    ("https://0.0.0.0/hook", "unspecified"),
    ("https://224.0.0.1/hook", "multicast"),
    ("https://239.255.255.250/hook", "multicast"),
    ("https://[ff02::1]/hook", "multicast"),
    # Spellings a resolver (WHATWG/UTS #46 host parsing) folds to the ones above.
    ("https://\uff11\uff12\uff17.0.0.1/hook", "loopback"),  # full-width digits
    ("https://127.0.0\u30021/hook", "loopback"),  # an ideographic full stop
    ("https://127\uff0e0\uff0e0\uff0e1/hook", "loopback"),  # full-width full stops
    ("https://127\uff610\uff610\uff611/hook", "loopback"),  # half-width ideographic full stops
    ("https://169.254.169.\uff12\uff15\uff14/latest/meta-data/", "metadata"),
    ("https://\u2460\u2461\u2466.0.0.1/hook", "loopback"),  # circled digits
    ("https://%31%32%37.0.0.1/hook", "loopback"),  # percent-encoded
    ("https://127.0.0.1\u00ad/hook", "loopback"),  # a soft hyphen, which host parsing drops
    ("https://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54/hook", "not a public host name"),
    ("https://LOCALHOST\u3002/hook", "not a public host name"),
    ("https://metadata.google.\uff49\uff4e\uff54\uff45\uff52\uff4e\uff41\uff4c/", "not a public host name"),
]

ACCEPTED = [
    "https://hooks.example.com/hook",
    "https://172.32.0.1/hook",  # just past 172.16.0.0/12
    "https://100.128.0.1/hook",  # just past 100.64.0.0/10
    "https://[2606:4700:4700::1111]/hook",
    "https://b\u00fccher.example/hook",  # an internationalised name
    "https://\uff18.\uff18.\uff18.\uff18/hook",  # a public address in full-width digits
]


@pytest.fixture
async def writer_key(tenant: Tenant) -> str:
    return (await tenant.create_key(scopes=["webhooks:read", "webhooks:write"]))["key"]  # type: ignore[no-any-return]


def _assert_refused(r: Any, words: str) -> str:
    assert r.status == 422, (r.status, r.body)
    problem = r.problem
    assert problem["code"] == "validation_error"
    [error] = problem["errors"]
    assert error["loc"] == ["body", "url"], error
    assert words.lower() in error["msg"].lower(), error["msg"]
    assert error["msg"] in problem["detail"]
    return str(error["msg"])


@pytest.mark.parametrize("url, words", REFUSED, ids=[u for u, _ in REFUSED])
async def test_private_targets_are_refused_on_create_and_on_update(
    api: Api, tenant: Tenant, writer_key: str, url: str, words: str
) -> None:
    base = f"{tenant.path}/webhook-endpoints"
    msg = _assert_refused(await api.post(base, key=writer_key, json={"url": url}), words)
    host = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[0] if "[" not in url else \
        url.split("[", 1)[1].split("]", 1)[0]
    if words != "https://":
        assert host.lower() in msg, f"the reason should name the host or address: {msg}"
    listed = await api.get(base, key=writer_key)
    assert listed.status == 200 and listed.body["data"] == []  # nothing was stored

    good = await api.post(base, key=writer_key, json={"url": "https://hooks.example.com/hook"})
    assert good.status == 201, good.body
    one = f"{base}/{good.body['id']}"
    _assert_refused(await api.patch(one, key=writer_key, json={"url": url}), words)
    after = await api.get(one, key=writer_key)
    assert after.status == 200 and after.body["url"] == "https://hooks.example.com/hook"


@pytest.mark.parametrize("url", ACCEPTED)
async def test_public_targets_are_accepted(api: Api, tenant: Tenant, writer_key: str, url: str) -> None:
    r = await api.post(f"{tenant.path}/webhook-endpoints", key=writer_key, json={"url": url})
    assert r.status == 201, r.body
    assert r.body["url"] == url
    r = await api.patch(f"{tenant.path}/webhook-endpoints/{r.body['id']}", key=writer_key,
                        json={"url": "https://other.example.com/hook"})
    assert r.status == 200, r.body


# ---- connect time ---------------------------------------------------------------------------------


class FixedResolver(AbstractResolver):
    """Answers every name with the addresses it was given, and remembers what it was asked."""

    def __init__(self, addresses: list[str]) -> None:
        self.addresses = addresses
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        self.asked.append(host)
        return [
            ResolveResult(hostname=host, host=a, port=port,
                          family=socket.AF_INET6 if ":" in a else socket.AF_INET,
                          proto=0, flags=socket.AI_NUMERICHOST)
            for a in self.addresses
        ]

    async def close(self) -> None:
        pass


class Listener:
    """A plain receiver on 127.0.0.1 that counts every request it gets."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.paths.append(request.path)
        return web.Response(text="reached")


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    got = Listener()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", got.handle)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    got.port = int(runner.addresses[0][1])
    try:
        yield got
    finally:
        await runner.cleanup()


async def _post(url: str, *, allow_private: bool, resolver: AbstractResolver | None = None) -> Outcome:
    session = send.new_session(3.0, allow_private, 10, resolver=resolver)
    try:
        return await send.post(session, url, b'{"type":"ssrf.probe"}', {"content-type": "application/json"},
                               timeout_s=3.0, max_read=4096, retry_after_cap_s=60)
    finally:
        await session.close()


ANSWERS = [
    ["127.0.0.1"],
    ["::1"],
    ["10.0.0.1"],
    ["192.168.0.10"],
    ["169.254.169.254"],
    ["100.64.0.1"],
    ["::ffff:127.0.0.1"],
    ["fd00:ec2::254"],
    ["10.0.0.1", "127.0.0.1", "::1"],  # every answer private: none may be tried
]


@pytest.mark.parametrize("answers", ANSWERS, ids=["+".join(a) for a in ANSWERS])
async def test_a_public_name_whose_dns_answer_is_private_is_refused_at_connect_time(
    listener: Listener, answers: list[str]
) -> None:
    resolver = FixedResolver(answers)
    out = await _post(f"http://hooks.example.com:{listener.port}/ssrf", allow_private=False, resolver=resolver)
    assert resolver.asked == ["hooks.example.com"]  # the name went through our resolver
    assert out.status is None and not out.ok
    assert out.error_kind == "address_not_allowed", out
    assert out.error is not None and out.error.startswith("address not allowed: ")
    assert any(a in out.error for a in answers), out.error  # names the address it refused
    assert listener.paths == []


@pytest.mark.parametrize("host", ["127.0.0.1", "[::ffff:127.0.0.1]", "localhost"])
async def test_a_private_address_in_the_url_is_refused_at_connect_time(listener: Listener, host: str) -> None:
    out = await _post(f"http://{host}:{listener.port}/ssrf", allow_private=False)
    assert out.error_kind == "address_not_allowed", out
    assert out.error is not None and ("127.0.0.1" in out.error or "7f00:1" in out.error), out.error
    assert listener.paths == []


async def test_with_private_targets_allowed_the_same_request_reaches_the_receiver(listener: Listener) -> None:
    """The control: the probes above would have been seen had they connected."""
    resolver = FixedResolver(["127.0.0.1"])
    out = await _post(f"http://hooks.example.com:{listener.port}/allowed", allow_private=True, resolver=resolver)
    assert out.ok and out.status == 200 and out.body_excerpt == "reached", out
    assert resolver.asked == ["hooks.example.com"]
    out = await _post(f"http://127.0.0.1:{listener.port}/literal", allow_private=True)
    assert out.ok, out
    assert listener.paths == ["/allowed", "/literal"]
