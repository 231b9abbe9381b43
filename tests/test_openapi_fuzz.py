"""Schemathesis against the live app, plus hand-made malformed requests.

The fuzzer loads /openapi.json from the running server and, for every documented
operation (but sign-out, tested on its own below), sends schemathesis' deterministic
coverage cases and then positive and negative Hypothesis-generated requests, mostly
with valid credentials, the tenant's real business id and ids of things that exist,
so that they get past authentication into the handlers' own validation (a path id that a
negative case broke on purpose, against the prefix and shape the document gives every id,
goes out as generated). Query parameters are typed (integers with bounds, enums, date-times),
so positive cases are valid requests and negative ones are invalid for a reason. Every
response must be below 500, every 4xx a problem+json with the contract's keys, and
every response must match the document (status code, media type, headers, body
schema); data the document calls invalid must be refused (the limits it states
included: event_types' maxItems and uniqueItems, for one). Every operation that
takes a body also gets bodies nested past the 64-level limit, which must be a 422.
Afterwards the database must hold exactly the writes the API acknowledged.
"""

from __future__ import annotations

import asyncio
import base64
import http.cookiejar
import io
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

import asyncpg
import hypothesis
import orjson
import pytest
import requests
import schemathesis
from aiohttp.test_utils import TestServer
from hypothesis import strategies as st
from schemathesis.core.failures import FailureGroup
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation.meta import negated_parameters
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from shared import ids
from shared.apikeys import SCOPES
from shared.errors import CODES
from tests.helpers import INTERNAL_TOKEN, Api, Resp, Tenant, ago, create_business

SESSION_COOKIE = "kaihooks_session"
PROBLEM_KEYS = {"type", "title", "status", "detail", "code"}
MAX_EXAMPLES = 30  # Hypothesis examples per operation and generation mode (positive, negative)
# Every sign-in attempt costs an argon2 verification (about 0.25 s): fewer of them keep the file fast.
EXAMPLES = {"POST /v1/auth/login": 20}
# Signing out would end the session the fuzzer relies on: it is tested on its own below.
NOT_FUZZED = {"POST /v1/auth/logout"}
PUBLISH = "POST /internal/v1/events"
ENDPOINTS = "/v1/businesses/{business_id}/webhook-endpoints"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # Over a thousand requests with one key in a few seconds: keep the per-key rate limit out of the
    # way so generated requests reach the handlers rather than a 429.
    return {"rate_limit_per_s": 10_000.0, "rate_limit_burst": 100_000}


@pytest.fixture(autouse=True)
def _clear_login_throttle(clear_login_throttle: None) -> None:
    """The fuzzer signs in with wrong passwords from 127.0.0.1: leave no failures counted for other tests."""


@pytest.fixture(autouse=True)
def _leave_no_work(database_url: str) -> Iterator[None]:
    """Test sends, retries and events made here would go to made-up URLs if a later test ran a worker:
    settle every delivery this test made due (as failed) once it ends."""

    async def settle(since: datetime | None) -> datetime:
        conn = await asyncpg.connect(database_url)
        try:
            if since is not None:
                await conn.execute(
                    """UPDATE deliveries SET status = 'failed', next_attempt_at = NULL, lease_until = NULL,
                              lease_owner = NULL, last_error = 'test ended'
                       WHERE status = 'pending' AND (created_at >= $1 OR updated_at >= $1)""", since)
            return await conn.fetchval("SELECT now()")  # type: ignore[no-any-return]
        finally:
            await conn.close()

    started = asyncio.run(settle(None))
    yield
    asyncio.run(settle(started))


# ---- the fuzzer ---------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    base_url: str
    business_id: str
    other_business_id: str  # exists, but the owner is no member of it
    api_key: str  # every scope
    session_cookie: str  # the owner's
    csrf_token: str
    # Ids that exist in the tenant's business, by the path segment before the id ("api-keys", "agents", ...).
    known_ids: dict[str, tuple[str, ...]]


@dataclass
class FuzzReport:
    failures: dict[tuple[str, str], str] = field(default_factory=dict)
    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    events_accepted: int = 0  # not duplicates, per the 202 answers

    def fail(self, operation: str, kind: str, detail: str) -> None:
        # One report per operation and kind of failure: the first one found.
        self.failures.setdefault((operation, kind), detail)

    def count(self, label: str, status: int) -> int:
        return self.statuses.get(label, Counter())[status]


def _session_cookie(client: Api) -> str:
    for cookie in client.http.cookie_jar:
        if cookie.key == SESSION_COOKIE:
            return cookie.value
    raise AssertionError("not signed in")


def _describe(case: schemathesis.Case, response: schemathesis.Response) -> str:
    body = response.content[:400].decode("utf-8", "replace")
    ctype = ",".join(response.headers.get("content-type", []))
    curl = case.as_curl_command(headers=dict(response.request.headers))
    return f"{curl}\n-> {response.status_code} [{ctype}] {body}"


HTTP_LINE_LIMIT = 8190  # aiohttp's max_line_size: longer request lines are refused by its parser


def _check_problem(report: FuzzReport, label: str, case: schemathesis.Case, response: schemathesis.Response,
                   tag: str) -> None:
    """No 5xx, and the contract's error shape, beyond what the document can say."""
    status = response.status_code
    kind = None
    if status >= 500:
        kind = f"server error {status}"
    elif status >= 400:
        ctype = ",".join(response.headers.get("content-type", []))
        try:
            body = json.loads(response.content)
        except ValueError:
            body = None
        if not ctype.startswith("application/problem+json"):
            kind = f"{status} is not application/problem+json"
        elif not isinstance(body, dict) or not PROBLEM_KEYS <= set(body) or body.get("status") != status:
            kind = f"{status} problem lacks one of {sorted(PROBLEM_KEYS)} or has the wrong status"
        elif body["code"] not in CODES or body["type"] != CODES[body["code"]].type:
            kind = f"{status} problem's code {body['code']!r} is not registered or its type is not the code's"
    if kind is not None:
        report.fail(label, kind, f"found by: {tag}\n{_describe(case, response)}")


# 5xx are reported by _check_problem (schemathesis' not_a_server_error would say the same again).
_CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,  # what the document calls invalid is refused with a 4xx
    unsupported_method,  # an undocumented method: 405 with Allow
    allow_header_conformance,
]
_DOCUMENT_CHECKS = [status_code_conformance, content_type_conformance, response_headers_conformance,
                    response_schema_conformance]
_AUTH_PARAMETERS = {"authorization", SESSION_COOKIE}


def _security(operation: schemathesis.APIOperation) -> set[str]:
    return {name for requirement in operation.definition.raw.get("security", []) for name in requirement}


def _authenticate(case: schemathesis.Case, schemes: set[str], creds: Credentials, how: str) -> None:
    """Replace whatever credentials were generated with ``how``: valid ones, none, or the generated ones."""
    if how == "generated" or not schemes:
        return
    case.headers.pop("Authorization", None)
    case.headers.pop("X-CSRF-Token", None)
    case.cookies.pop(SESSION_COOKIE, None)
    if how == "none":
        return
    if how == "key" and "apiKey" not in schemes:
        how = "session"
    if how == "session" and "session" not in schemes:
        how = "key"
    if "internal" in schemes:
        case.headers["Authorization"] = f"Bearer {INTERNAL_TOKEN}"
    elif how == "key":
        case.headers["Authorization"] = f"Bearer {creds.api_key}"
    else:
        case.cookies[SESSION_COOKIE] = creds.session_cookie
        case.headers["X-CSRF-Token"] = creds.csrf_token


def _aim_body(case: schemathesis.Case, business_id: str) -> None:
    """A string ``business_id`` in the body (an event, each event of a batch) becomes the tenant's."""
    body = case.body
    if not isinstance(body, dict):
        return
    batch = body.get("events")
    for item in [body, *(batch if isinstance(batch, list) else [])]:
        if not isinstance(item, dict):
            continue
        if isinstance(item.get("business_id"), str):
            item["business_id"] = business_id


def _collection(path: str, parameter: str) -> str:
    """The path segment before ``{parameter}``: what kind of thing it names."""
    segments = path.split("/")
    return segments[segments.index("{" + parameter + "}") - 1]


# Mostly valid credentials (of each kind the operation takes), now and then none or the generated ones.
_HOW = ["key", "session"] * 4 + ["none", "generated"]


class Fuzzer:
    """Sends cases to the live app and records what the checks say (blocking: runs in a thread)."""

    def __init__(self, creds: Credentials) -> None:
        self.creds = creds
        self.report = FuzzReport()
        self.http = requests.Session()
        # Never keep a cookie the app sets (a sign-in that happens to succeed): each case says its own.
        self.http.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))

    def send(self, case: schemathesis.Case, tag: str) -> None:
        label = case.operation.label
        response = case.call(base_url=self.creds.base_url, session=self.http, timeout=15)
        self.report.statuses.setdefault(label, Counter())[response.status_code] += 1
        if label == PUBLISH and response.status_code == 202:
            accepted = json.loads(response.content).get("events", [])
            self.report.events_accepted += sum(1 for e in accepted if e.get("duplicate") is False)
        if response.status_code == 400 and len(response.request.url or "") > HTTP_LINE_LIMIT:
            # A request line over the HTTP parser's limit never reaches the app: aiohttp answers a plain 400
            # itself (docs/security.md, "Input that used to reach a 500"). Counted above, not judged.
            return
        _check_problem(self.report, label, case, response, tag)
        if response.status_code >= 500:
            return  # reported above; that it is also undocumented would say nothing more
        try:
            case.validate_response(response, checks=_CHECKS,
                                   transport_kwargs={"base_url": self.creds.base_url, "session": self.http})
        except FailureGroup as group:
            for failure in group.exceptions:
                detail = f"found by: {tag}\n{failure.message}\n{_describe(case, response)}"
                self.report.fail(label, failure.title, detail)

    def coverage(self, schema: BaseSchema, operation: schemathesis.APIOperation) -> None:
        """Schemathesis' deterministic edge cases: boundaries, wrong types, media types, missing parts, methods."""
        schemes = _security(operation)
        cases = schema.iter_coverage_cases(
            operation, generation_modes=list(schemathesis.GenerationMode),
            generation_config=schema.config.generation_for(operation=operation, phase="coverage"),
        )
        for number, case in enumerate(cases):
            data = case.meta.phase.data if case.meta is not None else None
            about = (getattr(data, "parameter", None) or "").lower()
            if about not in _AUTH_PARAMETERS:  # a case about the credentials keeps them as generated
                _authenticate(case, schemes, self.creds, "key" if number % 2 else "session")
            if "business_id" in case.path_parameters and about != "business_id":
                case.path_parameters["business_id"] = self.creds.business_id
            _aim_body(case, self.creds.business_id)
            self.send(case, "coverage")

    def fuzz(self, operation: schemathesis.APIOperation, mode: schemathesis.GenerationMode) -> None:
        """Hypothesis-generated requests, mostly authenticated and aimed at the tenant's own business."""
        schemes = _security(operation)
        creds = self.creds
        existing = {name: creds.known_ids.get(_collection(operation.path, name), ())
                    for name in (p.name for p in operation.path_parameters) if name != "business_id"}

        @hypothesis.settings(
            max_examples=EXAMPLES.get(operation.label, MAX_EXAMPLES),
            deadline=None,
            database=None,
            derandomize=True,  # the same requests every run: what fails here fails again
            phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
            suppress_health_check=list(hypothesis.HealthCheck),
            verbosity=hypothesis.Verbosity.quiet,
            print_blob=False,
        )
        @hypothesis.given(case=operation.as_strategy(generation_mode=mode), data=st.data())
        def run(case: schemathesis.Case, data: st.DataObject) -> None:
            # A path id made invalid on purpose (the ids' patterns) goes out as generated: it must be refused.
            negated = {name for name, location in negated_parameters(case.meta) if location == ParameterLocation.PATH}
            _authenticate(case, schemes, creds, data.draw(st.sampled_from(_HOW)))
            if "business_id" in case.path_parameters and "business_id" not in negated:
                pick = data.draw(st.integers(0, 9))
                if pick < 8:  # mostly the tenant's own business, so the handler's validation is fuzzed
                    case.path_parameters["business_id"] = creds.business_id
                elif pick == 8:  # a real business the owner is no member of
                    case.path_parameters["business_id"] = creds.other_business_id
            for name, known in existing.items():  # now and then, something that exists
                if known and name not in negated and data.draw(st.integers(0, 2)) == 0:
                    case.path_parameters[name] = data.draw(st.sampled_from(known))
            if data.draw(st.integers(0, 4)):
                _aim_body(case, creds.business_id)
            self.send(case, mode.value)

        run()


    def deep(self, operation: schemathesis.APIOperation) -> None:
        """Bodies nested past the 64-level limit, authenticated and aimed at the tenant's own things: a
        documented 422 every time (it was a 500 from a RecursionError), checked against the document too."""
        schemes = _security(operation)
        for depth in (65, 300):
            nested: Any = "x"
            for _ in range(depth - 1):
                nested = [nested]
            case = operation.Case(body={"nested": nested}, media_type="application/json")
            _authenticate(case, schemes, self.creds, "key" if depth % 2 else "session")
            for name in (p.name for p in operation.path_parameters):
                known = self.creds.known_ids.get(_collection(operation.path, name), ())
                case.path_parameters[name] = self.creds.business_id if name == "business_id" else \
                    (known[0] if known else "x")
            response = case.call(base_url=self.creds.base_url, session=self.http, timeout=15)
            self.report.statuses.setdefault(operation.label, Counter())[response.status_code] += 1
            _check_problem(self.report, operation.label, case, response, f"nested {depth} levels")
            if response.status_code == 422:
                detail = json.loads(response.content).get("detail", "")
                if "64" not in detail:  # refused for something else: the nesting was not what stopped it
                    self.report.fail(operation.label, f"a body nested {depth} levels: the 422 names no limit",
                                     _describe(case, response))
            elif response.status_code not in (401, 403, 404):
                self.report.fail(operation.label, f"a body nested {depth} levels answered {response.status_code}",
                                 _describe(case, response))
            if response.status_code < 500:
                try:
                    case.validate_response(response, checks=_DOCUMENT_CHECKS)
                except FailureGroup as group:
                    for failure in group.exceptions:
                        self.report.fail(operation.label, failure.title, f"nested {depth} levels\n{failure.message}")


def _cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(value)).rstrip(b"=").decode()


# A fuzz dictionary: strings that break code which trusts the schema's "type: string", mixed into the
# generated values of every string parameter and body field (schemathesis keeps to the schema's limits
# for positive cases).
TROUBLE = [
    "\x00", "Acme\x00Plumbing",  # Postgres text and jsonb cannot hold U+0000
    "²", "①", "٣", "9" * 5000,  # isdigit() but int() refuses; an Arabic-Indic 3 int() takes; too many digits
    "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+14:00",  # RFC 3339, but past year 9999 / before year 1 in UTC
    _cursor(["0001-01-01T00:00:00+14:00", "0" * 32]), _cursor(["2026-01-01T00:00:00+00:00", 1]),  # odd cursors
    "\u202eevil", "🚀" * 50, "a\u0301", " ", "%", "../../etc/passwd", "key_" + "z" * 26,
]


def _properties(schema: Any, components: dict[str, Any], seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """An object schema's properties, through $ref and anyOf/oneOf/allOf."""
    if not isinstance(schema, dict):
        return {}
    if isinstance(schema.get("$ref"), str):
        name = schema["$ref"].rsplit("/", 1)[-1]
        return {} if name in seen else _properties(components.get(name), components, (*seen, name))
    found = dict(schema.get("properties", {}))
    for keyword in ("anyOf", "oneOf", "allOf"):
        for branch in schema.get(keyword, []):
            found.update(_properties(branch, components, seen))
    return found


def _takes_strings(schema: Any, components: dict[str, Any]) -> bool:
    if not isinstance(schema, dict):
        return False
    if isinstance(schema.get("$ref"), str):
        return _takes_strings(components.get(schema["$ref"].rsplit("/", 1)[-1]), components)
    return schema.get("type") == "string" or any(
        _takes_strings(branch, components) for keyword in ("anyOf", "oneOf") for branch in schema.get(keyword, []))


def _config(document: dict[str, Any]) -> schemathesis.Config:
    """Schemathesis settings (explicit: no schemathesis.toml is looked for), with TROUBLE bound to every
    string parameter and body field the document has."""
    components = document.get("components", {}).get("schemas", {})
    use = {"dictionary": "trouble", "probability": 0.25}
    bindings: dict[str, Any] = {}
    for operations in document["paths"].values():
        for op in operations.values():
            for parameter in op.get("parameters", []):
                if parameter["in"] in ("path", "query"):  # not headers: requests refuses a NUL there
                    bindings[f"{parameter['in']}.{parameter['name']}"] = use
            for media in op.get("requestBody", {}).get("content", {}).values():
                for name, field_schema in _properties(media.get("schema"), components).items():
                    if _takes_strings(field_schema, components):
                        bindings[f"body.{name}"] = use
                    items = field_schema.get("items") if isinstance(field_schema, dict) else None
                    for inner, inner_schema in _properties(items, components).items():
                        if _takes_strings(inner_schema, components):
                            bindings[f"body.{name}[*].{inner}"] = use
    return schemathesis.Config.from_dict({"dictionaries": {"trouble": {"values": TROUBLE}}, "parameters": bindings})


def fuzz(creds: Credentials) -> FuzzReport:
    """Load the live document and exercise every operation in it (but sign-out)."""
    document = requests.get(creds.base_url + "/openapi.json", timeout=10).json()
    # from_dict rather than from_url: from_url leaves out the operation that serves the document itself.
    schema = schemathesis.openapi.from_dict(document, config=_config(document))
    fuzzer = Fuzzer(creds)
    operations = [result.ok() for result in schema.get_all_operations()]
    # Deletions last, so that the things they may delete are still there for the other operations.
    operations.sort(key=lambda operation: operation.method.upper() == "DELETE")
    try:
        for operation in operations:
            if operation.label in NOT_FUZZED:
                continue
            modes = [schemathesis.GenerationMode.POSITIVE]
            if list(operation.iter_parameters()) or len(operation.body):
                modes.append(schemathesis.GenerationMode.NEGATIVE)  # there is something to make invalid
            steps = [("coverage", partial(fuzzer.coverage, schema, operation))]
            steps += [(mode.value, partial(fuzzer.fuzz, operation, mode)) for mode in modes]
            if len(operation.body):
                steps.append(("deep nesting", partial(fuzzer.deep, operation)))
            for name, step in steps:
                try:
                    step()
                except Exception as exc:  # an error of the harness rather than a finding: report it all the same
                    fuzzer.report.errors.append(f"{operation.label} ({name}): {type(exc).__name__}: {exc}")
    finally:
        fuzzer.http.close()
    return fuzzer.report


async def _count(db: asyncpg.Connection, table: str, where: str = "TRUE", *args: Any) -> int:
    if await db.fetchval("SELECT to_regclass($1)", table) is None:
        return 0
    return await db.fetchval(f"SELECT count(*) FROM {table} WHERE {where}", *args)  # type: ignore[no-any-return]


async def _openapi(base_url: str) -> dict[str, Any]:
    async with Api(base_url) as api:
        return (await api.get("/openapi.json")).body  # type: ignore[no-any-return]


async def _seed(tenant: Tenant, documented: set[str]) -> dict[str, tuple[str, ...]]:
    """Things that exist in the tenant's business, for path parameters to name now and then."""
    spare = [await tenant.create_key(name=f"spare {i}") for i in range(3)]
    known = {"api-keys": tuple(k["id"] for k in spare)}
    if PUBLISH in documented:
        events = [
            {"type": "agent.created", "data": {"id": "agent-fuzz-1", "name": "Fuzz Agent"}},
            {"type": "call.started", "data": {"id": "call-fuzz-1", "direction": "inbound", "from": "+15550000001",
                                              "to": "+15550000002", "status": "ringing",
                                              "started_at": "2026-01-01T00:00:00Z", "agent_id": "agent-fuzz-1"}},
            {"type": "lead.created", "data": {"id": "lead-fuzz-1", "name": "Fuzz Lead", "call_id": "call-fuzz-1"}},
        ]
        async with Api(tenant.base_url) as internal:
            r = await internal.post("/internal/v1/events", key=INTERNAL_TOKEN,
                                    json={"events": [{**e, "business_id": tenant.business_id} for e in events]})
        assert r.status == 202, (r.status, r.body)
        known |= {"agents": ("agent-fuzz-1",), "calls": ("call-fuzz-1",), "leads": ("lead-fuzz-1",),
                  "events": tuple(e["id"] for e in r.body["events"])}
    if f"POST {ENDPOINTS}" in documented:
        endpoints = []
        for i in range(3):  # no receiver and no worker: nothing is ever sent to these
            r = await tenant.owner.post(f"{tenant.path}/webhook-endpoints",
                                        json={"url": f"https://hooks.example.com/fuzz/{i}"})
            assert r.status == 201, (r.status, r.body)
            endpoints.append(r.body["id"])
        known["webhook-endpoints"] = tuple(endpoints)
        if f"POST {ENDPOINTS}/{{endpoint_id}}/test" in documented:
            r = await tenant.owner.post(f"{tenant.path}/webhook-endpoints/{endpoints[0]}/test")
            assert r.status == 202, (r.status, r.body)
            known["deliveries"] = (r.body["delivery_id"],)
    return known


_WRITES = {
    "businesses": "TRUE",
    "api_keys": "TRUE",
    "sessions": "TRUE",
    "events": "type <> 'webhook.test'",  # published ones; a test send stores its own webhook.test event
    "endpoints": "TRUE",
    "audit_log": "action = 'api_key.created'",
}


async def test_every_operation_survives_generated_requests(
    server: TestServer, tenant: Tenant, db: asyncpg.Connection
) -> None:
    base_url = str(server.make_url("")).rstrip("/")
    paths = (await _openapi(base_url))["paths"]
    documented = {f"{method.upper()} {path}" for path, ops in paths.items() for method in ops}
    key = await tenant.create_key(name="fuzzer", scopes=list(SCOPES))
    creds = Credentials(
        base_url=base_url,
        business_id=tenant.business_id,
        other_business_id=await create_business(base_url, "Someone Else"),
        api_key=key["key"],
        session_cookie=_session_cookie(tenant.owner),
        csrf_token=tenant.owner.csrf or "",
        known_ids=await _seed(tenant, documented),
    )
    before = {table: await _count(db, table, where) for table, where in _WRITES.items()}
    deletes_before = await _count(db, "audit_log", "action = 'api_key.deleted'")

    report = await asyncio.to_thread(fuzz, creds)

    summary = "\n".join(f"  {label}: {dict(sorted(counts.items()))}" for label, counts in report.statuses.items())
    trouble = [f"harness error: {error}" for error in report.errors]
    if missing := sorted(documented - NOT_FUZZED - set(report.statuses)):
        trouble.append(f"operations never exercised: {missing}")
    # Credentials and ids were real: generated requests reached every handler, not only the 401.
    if only_401 := sorted(label for label, counts in report.statuses.items() if set(counts) == {401}):
        trouble.append(f"operations that answered nothing but 401: {only_401}")

    # The database holds exactly the writes the API acknowledged: nothing half-done, nothing unreported.
    created = report.count("POST /v1/businesses/{business_id}/api-keys", 201)
    deleted = report.count("DELETE /v1/businesses/{business_id}/api-keys/{key_id}", 204)
    after = {table: await _count(db, table, where) for table, where in _WRITES.items()}
    written = {table: after[table] - before[table] for table in _WRITES}
    acknowledged = {
        "businesses": report.count("POST /internal/v1/businesses", 201),
        "api_keys": created - deleted,
        "sessions": report.count("POST /v1/auth/login", 200),
        "events": report.events_accepted,
        "endpoints": report.count(f"POST {ENDPOINTS}", 201) - report.count(f"DELETE {ENDPOINTS}/{{endpoint_id}}", 204),
        "audit_log": created,
    }
    if written != acknowledged:
        trouble.append(f"rows written {written} but acknowledged {acknowledged}")
    if (gone := await _count(db, "audit_log", "action = 'api_key.deleted'") - deletes_before) != deleted:
        trouble.append(f"{gone} key deletions audited, {deleted} acknowledged")

    trouble += [f"{op}: {kind}\n{detail}" for (op, kind), detail in sorted(report.failures.items())]
    assert not trouble, "\n\n".join(["status codes seen:\n" + summary, *trouble])


# ---- hand-made malformed requests ---------------------------------------------
# Each case asserts the exact status and problem code, and that no row was written anywhere. A test
# runs its cases in a loop and reports every case that answered otherwise (one app per test keeps
# the file fast).

_TABLES = ("businesses", "users", "memberships", "sessions", "api_keys", "audit_log",
           "events", "agents", "calls", "leads", "endpoints", "endpoint_secrets", "deliveries", "attempts")
MIB = 1024 * 1024


async def _rows(db: asyncpg.Connection) -> dict[str, int]:
    return {table: await _count(db, table) for table in _TABLES}


class Expect:
    """Checks answers against the problem each should be, and that no row changed; collects the misses."""

    def __init__(self, db: asyncpg.Connection) -> None:
        self.db = db
        self.before: dict[str, int] = {}
        self.wrong: list[str] = []

    async def start(self) -> Expect:
        self.before = await _rows(self.db)
        return self

    async def problem(self, what: str, r: Resp, status: int, code: str, *, writes: bool = True) -> dict[str, Any]:
        faults = []
        if writes:
            after = await _rows(self.db)
            if after != self.before:
                changed = ", ".join(f"{t} {self.before[t]}->{n}" for t, n in after.items() if n != self.before[t])
                faults.append(f"rows changed ({changed})")
                self.before = after
        body = r.body if isinstance(r.body, dict) else {}
        ctype = r.headers.get("Content-Type", "")
        if (r.status != status or not ctype.startswith("application/problem+json") or not PROBLEM_KEYS <= set(body)
                or body["status"] != status or body["code"] != code or not body["detail"]
                or body["type"] != CODES[code].type):
            faults.append(f"answered {r.status} [{ctype}] {r.raw[:200]!r}")
        if faults:
            self.wrong.append(f"{what}: expected {status} {code}, but " + "; ".join(faults))
        return body

    def verify(self) -> None:
        assert not self.wrong, f"{len(self.wrong)} case(s) went otherwise:\n" + "\n".join(self.wrong)


async def _chunks(payload: bytes, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    """A body sent with Transfer-Encoding: chunked, so without a Content-Length to refuse early."""
    for start in range(0, len(payload), size):
        yield payload[start:start + size]


def _big(payload: bytes, chunked: bool) -> Any:
    # A file-like body: aiohttp warns (an error here) when given megabytes as raw bytes.
    return _chunks(payload) if chunked else io.BytesIO(payload)


def _json_targets(tenant: Tenant) -> list[tuple[str, dict[str, str]]]:
    """Routes that read a JSON object, with the credentials each needs (the owner's client adds the CSRF token)."""
    return [
        ("/internal/v1/businesses", {"Authorization": f"Bearer {INTERNAL_TOKEN}"}),
        (f"{tenant.path}/api-keys", {}),
        ("/v1/auth/login", {}),
        ("/internal/v1/events", {"Authorization": f"Bearer {INTERNAL_TOKEN}"}),
        (f"{tenant.path}/webhook-endpoints", {}),
    ]


async def test_malformed_json_is_400_bad_request(tenant: Tenant, db: asyncpg.Connection) -> None:
    expect = await Expect(db).start()
    for what, raw in [
        ("invalid JSON", b'{"name": "Acme", }'),
        ("truncated JSON", b'{"name": "Ac'),
        ("single quotes", b"{'name': 'Acme'}"),
        ("a lone surrogate", b'{"name": "\\ud800"}'),
        ("bytes that are not UTF-8", b'{"name": "\xff\xfe"}'),
        ("an empty body", b""),
        ("only whitespace", b"   \n"),
        ("two objects", b'{"name": "a"} {"name": "b"}'),
    ]:
        for path, headers in _json_targets(tenant):
            r = await tenant.owner.post(path, data=raw, headers={**headers, "Content-Type": "application/json"})
            await expect.problem(f"POST {path} with {what}", r, 400, "bad_request")
    expect.verify()


async def test_json_that_is_not_an_object_is_422(tenant: Tenant, db: asyncpg.Connection) -> None:
    expect = await Expect(db).start()
    for raw in [b"[]", b'[{"name": "Acme"}]', b"42", b"null", b'"Acme"', b"true"]:
        for path, headers in _json_targets(tenant):
            r = await tenant.owner.post(path, data=raw, headers={**headers, "Content-Type": "application/json"})
            problem = await expect.problem(f"POST {path} with {raw!r}", r, 422, "validation_error")
            if r.status == 422 and not all({"loc", "msg"} <= set(e) for e in problem.get("errors") or [{}]):
                expect.wrong.append(f"POST {path} with {raw!r}: no errors [{{loc, msg}}] in {problem}")
    expect.verify()


def _nested(depth: int, inner: bytes = b"1", opener: bytes = b"[", closer: bytes = b"]") -> bytes:
    return opener * depth + inner + closer * depth


def _deep_bodies() -> list[tuple[str, bytes]]:
    """JSON nested past the 64-level limit, in the shapes that used to reach a RecursionError (a 500)."""
    return [
        ("65 nested arrays", _nested(65)),
        ("65 nested objects", _nested(65, b"1", b'{"a":', b"}")),
        ("an object holding 70 nested arrays", b'{"name": ' + _nested(70) + b"}"),
        ("10,000 [", b"[" * 10_000),
        ("10,000 [ closed", _nested(10_000)),
        ("1,000 nested arrays around a \\u0000", _nested(1000, b'"\\u0000"')),
        ("an object with 1,000 nested arrays around a \\u0000", b'{"name": ' + _nested(1000, b'"\\u0000"') + b"}"),
    ]


async def test_json_nested_past_64_levels_is_422_on_every_route(tenant: Tenant, db: asyncpg.Connection) -> None:
    """Sign-in included, without signing in: a clear 422 naming the limit, never a 500, nothing written."""
    endpoint = (await tenant.owner.post(f"{tenant.path}/webhook-endpoints",
                                        json={"url": "https://hooks.example.com/deep"})).body["id"]
    one = f"{tenant.path}/webhook-endpoints/{endpoint}"
    expect = await Expect(db).start()
    targets = [*[("POST", path, headers) for path, headers in _json_targets(tenant)],
               ("PATCH", one, {}), ("POST", f"{one}/secret/rotate", {}), ("POST", f"{one}/recover", {})]
    async with Api(tenant.base_url) as anonymous:
        for what, raw in _deep_bodies():
            for method, path, headers in targets:
                client = anonymous if path == "/v1/auth/login" else tenant.owner
                r = await client.request(method, path, data=raw,
                                         headers={**headers, "Content-Type": "application/json"})
                problem = await expect.problem(f"{method} {path} with {what}", r, 422, "validation_error")
                if r.status == 422 and "64" not in problem.get("detail", ""):
                    expect.wrong.append(f"{method} {path} with {what}: the detail does not name the limit: {problem}")
    expect.verify()


async def test_event_data_nested_deep_is_422_and_64_levels_are_accepted(api: Api, db: asyncpg.Connection) -> None:
    business_id = await create_business(api.base_url)

    def body(depth: int) -> bytes:
        # The body is level 1 and data level 2: ``depth`` levels in all.
        return (b'{"business_id": "' + business_id.encode() + b'", "type": "agent.created", "data": '
                b'{"id": "agent-deep", "name": "Deep", "x": ' + _nested(depth - 2) + b"}}")

    expect = await Expect(db).start()
    for depth in (65, 400, 1000):
        r = await api.post("/internal/v1/events", data=body(depth), key=INTERNAL_TOKEN,
                           headers={"Content-Type": "application/json"})
        await expect.problem(f"an event whose body nests {depth} levels", r, 422, "validation_error")
    expect.verify()
    r = await api.post("/internal/v1/events", data=body(64), key=INTERNAL_TOKEN,
                       headers={"Content-Type": "application/json"})
    assert r.status == 202, (r.status, r.body)


async def test_a_body_that_is_not_json_is_415(tenant: Tenant, db: asyncpg.Connection) -> None:
    expect = await Expect(db).start()
    body = b'{"name": "Acme", "email": "a@b.c", "password": "x", "url": "https://hooks.example.com/x"}'
    for content_type in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", "text/json"]:
        for path, headers in _json_targets(tenant):
            r = await tenant.owner.post(path, data=body, headers={**headers, "Content-Type": content_type})
            await expect.problem(f"POST {path} as {content_type}", r, 415, "unsupported_media_type")
    expect.verify()


async def test_bodies_over_the_route_limit_are_413(tenant: Tenant, db: asyncpg.Connection) -> None:
    """/v1 takes at most 1 MiB, /internal 8 MiB, whether the client says the length first or not."""
    expect = await Expect(db).start()
    for chunked in (False, True):
        sent = "chunked" if chunked else "with Content-Length"
        for path, headers in _json_targets(tenant):
            limit = 8 * MIB if path.startswith("/internal/") else MIB
            body = orjson.dumps({"name": "x" * (limit + 10)})
            r = await tenant.owner.post(path, data=_big(body, chunked),
                                        headers={**headers, "Content-Type": "application/json"})
            await expect.problem(f"POST {path}, {len(body)} bytes {sent}", r, 413, "payload_too_large")
    # Within /internal's 8 MiB, 2 MiB is read, and refused for what it says rather than for its size.
    r = await tenant.owner.post("/internal/v1/businesses", data=io.BytesIO(orjson.dumps({"name": "x" * 2 * MIB})),
                                headers={"Authorization": f"Bearer {INTERNAL_TOKEN}",
                                         "Content-Type": "application/json"})
    await expect.problem("POST /internal/v1/businesses, 2 MiB", r, 422, "validation_error")
    expect.verify()


async def test_unknown_routes_and_wrong_methods_are_problems(tenant: Tenant, db: asyncpg.Connection) -> None:
    expect = await Expect(db).start()
    for method, path in [
        ("GET", "/"),
        ("GET", "/v1/nope"),
        ("GET", "/v1/businesses"),
        ("POST", "/internal/v1/nope"),
        ("GET", f"{tenant.path}/api-keys/extra/segments"),
        ("DELETE", f"{tenant.path}/api-keys/"),
        ("GET", "/V1/ME"),
    ]:
        r = await tenant.owner.request(method, path, json={"name": "Acme"})
        await expect.problem(f"{method} {path}", r, 404, "not_found")
    for method, path, allowed in [
        ("PUT", "/v1/me", {"GET"}),
        ("DELETE", "/v1/auth/login", {"POST"}),
        ("GET", "/internal/v1/businesses", {"POST"}),
        ("PATCH", f"{tenant.path}/api-keys", {"GET", "POST"}),
        ("GET", f"{tenant.path}/api-keys/key_{'0' * 26}", {"DELETE"}),
        ("POST", "/healthz", {"GET"}),
        ("PUT", f"{tenant.path}/webhook-endpoints", {"GET", "POST"}),
    ]:
        r = await tenant.owner.request(method, path, json={"name": "Acme"})
        await expect.problem(f"{method} {path}", r, 405, "method_not_allowed")
        if r.status == 405 and {m.strip() for m in r.headers.get("Allow", "").split(",")} - {"HEAD"} != allowed:
            expect.wrong.append(f"{method} {path}: Allow is {r.headers.get('Allow')!r}, expected {sorted(allowed)}")
    expect.verify()


async def test_oversized_request_lines_and_headers_are_refused_and_logged_redacted(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp's HTTP parser refuses these before the application sees them (a plain 400, outside the
    problem middleware's reach: a known limitation). What we own: never a 5xx, and no credential in
    the service's log lines (the formatter redacts what aiohttp's error log repeats)."""
    from shared.logs import JsonFormatter

    secret = "kc_live_" + "s" * 9000
    caplog.set_level(logging.DEBUG)
    for path, headers in [
        ("/v1/me?x=" + "9" * 9000, {}),
        ("/healthz", {"X-Big": "a" * 9000}),
        ("/v1/me", {"Authorization": f"Bearer {secret}"}),
    ]:
        r = await api.get(path, headers=headers)
        assert r.status == 400, (path[:40], r.status)
    formatter = JsonFormatter()
    for record in caplog.records:
        assert secret[:20] not in formatter.format(record)


async def test_a_business_id_that_is_not_an_id(tenant: Tenant, api: Api, db: asyncpg.Connection) -> None:
    key = (await tenant.create_key(name="reader", scopes=list(SCOPES)))["key"]
    expect = await Expect(db).start()
    for business_id in [
        "not-an-id",
        "biz_",
        "biz_" + "0" * 25,
        "biz_" + "0" * 27,
        "biz_" + "u" * 26,  # 'u' is not in the Crockford alphabet
        "biz_" + "z" * 26,  # more than 128 bits
        "key_" + "0" * 26,  # an id, of another type
        "BIZ_" + "0" * 26,
        "biz_%00",
        "biz_%E2%80%AE",
        "biz_" + "0" * 26,  # well formed, but no such business
    ]:
        base = f"/v1/businesses/{business_id}"
        # A signed-in user: no such business, whatever the route.
        for method, path in [("GET", "/api-keys"), ("POST", "/api-keys"), ("DELETE", f"/api-keys/key_{'0' * 26}"),
                             ("GET", "/agents"), ("GET", "/webhook-endpoints"), ("POST", "/webhook-endpoints")]:
            r = await tenant.owner.request(method, base + path, json={"name": "x", "url": "https://a.example.com"})
            await expect.problem(f"owner: {method} {base}{path}", r, 404, "not_found")
        # A key: the same 401 as a wrong key, on every route.
        for path in ["/api-keys", "/agents", "/webhook-endpoints"]:
            r = await api.get(base + path, key=key)
            await expect.problem(f"key: GET {base}{path}", r, 401, "unauthorized")
            if r.status == 401 and r.headers.get("WWW-Authenticate") != "Bearer":
                expect.wrong.append(f"key: GET {base}{path}: WWW-Authenticate {r.headers.get('WWW-Authenticate')!r}")
    expect.verify()


async def test_a_key_id_that_is_not_one_is_404(tenant: Tenant, db: asyncpg.Connection) -> None:
    await tenant.create_key(name="survivor")
    expect = await Expect(db).start()
    for key_id in ["not-an-id", "key_" + "z" * 26, "biz_" + "0" * 26, "key_%00", "key_" + "0" * 26, "key_%20"]:
        r = await tenant.owner.delete(f"{tenant.path}/api-keys/{key_id}")
        await expect.problem(f"DELETE api-keys/{key_id}", r, 404, "not_found")
    expect.verify()


_BAD_NAMES = [
    ("empty", ""),
    ("only whitespace", "   \t\n "),
    ("201 characters", "x" * 201),
    ("100k characters", "x" * 100_000),
    ("201 emoji", "🚀" * 201),
    ("a NUL inside", "Acme\x00Plumbing"),
    ("only a NUL", "\x00"),
    ("a number", 42),
    ("null", None),
]


async def test_bad_names_are_422_and_write_nothing(tenant: Tenant, db: asyncpg.Connection) -> None:
    expect = await Expect(db).start()
    for what, name in _BAD_NAMES:
        r = await tenant.owner.post("/internal/v1/businesses", json={"name": name},
                                    headers={"Authorization": f"Bearer {INTERNAL_TOKEN}"})
        problem = await expect.problem(f"business name {what}", r, 422, "validation_error")
        if r.status == 422 and problem["errors"][0]["loc"][:2] != ["body", "name"]:
            expect.wrong.append(f"business name {what}: errors {problem['errors']}")
    for what, name in [*_BAD_NAMES[:2], ("101 characters", "x" * 101), ("500k characters", "x" * 500_000),
                       *_BAD_NAMES[5:]]:
        r = await tenant.owner.post(f"{tenant.path}/api-keys", json={"name": name})
        problem = await expect.problem(f"key name {what}", r, 422, "validation_error")
        if r.status == 422 and problem["errors"][0]["loc"][:2] != ["body", "name"]:
            expect.wrong.append(f"key name {what}: errors {problem['errors']}")
    expect.verify()


async def test_unicode_business_names_round_trip(api: Api, db: asyncpg.Connection) -> None:
    for name in [
        "Café Zürich — Ünïcödé",
        "北京水管工 🚀🔧",
        "\u202eevil\u202c right-to-left",
        "a\u0301" * 100,  # 200 code points, 100 graphemes
        "🚀" * 200,  # exactly 200 code points, 800 bytes
        "x" * 200,
    ]:
        r = await api.post("/internal/v1/businesses", json={"name": name}, key=INTERNAL_TOKEN)
        assert (r.status, r.body["name"]) == (201, name), (name, r.status, r.body)
        assert await db.fetchval("SELECT name FROM businesses WHERE id = $1", ids.decode("biz", r.body["id"])) == name


async def test_bad_key_requests_are_422_and_write_nothing(tenant: Tenant, db: asyncpg.Connection) -> None:
    expect = await Expect(db).start()
    for what, body in [
        ("expiry past year 9999 in UTC", {"name": "k", "expires_at": "9999-12-31T23:59:59-23:59"}),
        ("expiry without an offset", {"name": "k", "expires_at": "2999-01-01T00:00:00"}),
        ("expiry in the past", {"name": "k", "expires_at": "2000-01-01T00:00:00Z"}),
        ("expiry that is not a time", {"name": "k", "expires_at": "tomorrow"}),
        ("no scopes", {"name": "k", "scopes": []}),
        ("an unknown scope", {"name": "k", "scopes": ["admin"]}),
        ("scopes not a list", {"name": "k", "scopes": "agents:read"}),
        ("an unknown field", {"name": "k", "owner": "me"}),
        ("a name that is a list", {"name": ["k"]}),
        ("no name", {"scopes": ["agents:read"]}),
    ]:
        r = await tenant.owner.post(f"{tenant.path}/api-keys", json=body)
        await expect.problem(what, r, 422, "validation_error")
    expect.verify()


async def test_bad_webhook_requests_are_422_and_write_nothing(tenant: Tenant, db: asyncpg.Connection) -> None:
    endpoint = (await tenant.owner.post(f"{tenant.path}/webhook-endpoints",
                                        json={"url": "https://hooks.example.com/bad"})).body["id"]
    one = f"{tenant.path}/webhook-endpoints/{endpoint}"
    expect = await Expect(db).start()
    for what, method, path, body in [
        ("a URL with a NUL", "POST", f"{tenant.path}/webhook-endpoints", {"url": "https://hooks.example.com/\x00"}),
        ("a description with a NUL", "POST", f"{tenant.path}/webhook-endpoints",
         {"url": "https://hooks.example.com/x", "description": "a\x00b"}),
        ("a loopback URL", "POST", f"{tenant.path}/webhook-endpoints", {"url": "https://127.0.0.1/hook"}),
        ("a plain-http URL", "POST", f"{tenant.path}/webhook-endpoints", {"url": "http://hooks.example.com/x"}),
        ("a URL with a NUL, changed", "PATCH", one, {"url": "https://hooks.example.com/\x00"}),
        ("a description with a NUL, changed", "PATCH", one, {"description": "a\x00b"}),
        ("enabled: null", "PATCH", one, {"enabled": None}),
        ("a grace period over 7 days", "POST", f"{one}/secret/rotate", {"grace_seconds": 7 * 86400 + 1}),
        ("a grace period of 10**30 s", "POST", f"{one}/secret/rotate", b'{"grace_seconds": 1' + b"0" * 30 + b"}"),
        ("a recovery since before year 1 in UTC", "POST", f"{one}/recover", {"since": "0001-01-01T00:00:00+14:00"}),
        ("a recovery until after year 9999 in UTC", "POST", f"{one}/recover",
         {"since": "2026-01-01T00:00:00Z", "until": "9999-12-31T23:59:59-23:59"}),
        ("a recovery without since", "POST", f"{one}/recover", {"dry_run": True}),
        # Limits on what a business can grow (docs/security.md).
        ("10,000 copies of one event type", "POST", f"{tenant.path}/webhook-endpoints",
         {"url": "https://hooks.example.com/x", "event_types": ["call.completed"] * 10_000}),
        ("an event type listed twice", "POST", f"{tenant.path}/webhook-endpoints",
         {"url": "https://hooks.example.com/x", "event_types": ["lead.created", "lead.created"]}),
        ("9 event types, changed", "PATCH", one, {"event_types": ["lead.created"] * 9}),
        ("a recovery window longer than retention", "POST", f"{one}/recover", {"since": ago(days=31)}),
        ("a recovery window longer than retention, dry run", "POST", f"{one}/recover",
         {"since": "2026-01-01T00:00:00Z", "until": "2026-03-01T00:00:00Z", "dry_run": True}),
    ]:
        if isinstance(body, bytes):  # what the test client's JSON encoder will not write
            r = await tenant.owner.request(method, path, data=body, headers={"Content-Type": "application/json"})
        else:
            r = await tenant.owner.request(method, path, json=body)
        await expect.problem(what, r, 422, "validation_error")
    expect.verify()


def _malformed_list_queries() -> list[tuple[str, str]]:
    return [
        ("limit 0", "limit=0"),
        ("limit 101", "limit=101"),
        ("a negative limit", "limit=-1"),
        ("a limit in words", "limit=abc"),
        ("an empty limit", "limit="),
        ("limit '²' ('²'.isdigit() but not int('²'))", "limit=%C2%B2"),
        ("limit '①'", "limit=%E2%91%A0"),
        ("a limit of 5000 digits", "limit=" + "9" * 5000),
        ("a NUL cursor", "cursor=%00"),
        ("a cursor that is not base64", "cursor=!!!"),
        ("a cursor of one element", "cursor=" + _cursor(["2026-01-01T00:00:00+00:00"])),
        ("a cursor with a naive time", "cursor=" + _cursor(["2026-01-01T00:00:00", "0" * 32])),
        ("a cursor whose id is a number", "cursor=" + _cursor(["2026-01-01T00:00:00+00:00", 1])),
        ("a cursor that is an object", "cursor=" + _cursor({"a": 1, "b": 2})),
        ("a cursor before year 1 in UTC", "cursor=" + _cursor(["0001-01-01T00:00:00+14:00", "0" * 32])),
        ("a cursor after year 9999 in UTC", "cursor=" + _cursor(["9999-12-31T23:59:59-23:59", "0" * 32])),
    ]


async def test_bad_list_parameters_are_422(tenant: Tenant, db: asyncpg.Connection) -> None:
    endpoint = (await tenant.owner.post(f"{tenant.path}/webhook-endpoints",
                                        json={"url": "https://hooks.example.com/lists"})).body["id"]
    lists = ["api-keys", "agents", "calls", "leads", "events", "webhook-endpoints",
             f"webhook-endpoints/{endpoint}/deliveries"]
    expect = await Expect(db).start()
    for what, query in _malformed_list_queries():
        for name in lists:
            r = await tenant.owner.get(f"{tenant.path}/{name}?{query}")
            problem = await expect.problem(f"GET {name} with {what}", r, 422, "validation_error", writes=False)
            if r.status == 422 and problem["errors"][0]["loc"][0] != "query":
                expect.wrong.append(f"GET {name} with {what}: errors {problem['errors']}")
    for what, query in [
        ("since in words", "calls?since=yesterday"),
        ("since without an offset", "calls?since=2026-01-01T00:00:00"),
        ("since before year 1 in UTC", "calls?since=0001-01-01T00:00:00%2B14:00"),
        ("until after year 9999 in UTC", "calls?until=9999-12-31T23:59:59-23:59"),
        ("an unknown call status", "calls?status=bogus"),
        ("an agent_id of 201 characters", "calls?agent_id=" + "x" * 201),
        ("an unknown event type", "events?type=bogus.type"),
        ("an unknown delivery status", f"webhook-endpoints/{endpoint}/deliveries?status=bogus"),
    ]:
        r = await tenant.owner.get(f"{tenant.path}/{query}")
        await expect.problem(f"GET {what}", r, 422, "validation_error", writes=False)
    expect.verify()


async def test_sign_in_with_strange_strings(api: Api, db: asyncpg.Connection) -> None:
    """Strings no account can have are a clean 401 (or 422 where the schema limits them), and set no cookie."""
    expect = await Expect(db).start()
    for what, body, status, code in [
        ("a NUL in the email", {"email": "nobody\x00@example.test", "password": "x"}, 422, "validation_error"),
        ("a NUL in the password", {"email": "nobody@example.test", "password": "x\x00"}, 422, "validation_error"),
        ("an emoji email", {"email": "🚀" * 300 + "@example.test", "password": "x"}, 401, "unauthorized"),
        ("an email of 321 characters", {"email": "x" * 321, "password": "x"}, 422, "validation_error"),
        ("a password of 1025 characters", {"email": "a@b.c", "password": "x" * 1025}, 422, "validation_error"),
        ("no password", {"email": "a@b.c"}, 422, "validation_error"),
        ("an unknown field", {"email": "a@b.c", "password": "x", "remember": True}, 422, "validation_error"),
    ]:
        r = await api.post("/v1/auth/login", json=body)
        await expect.problem(f"sign-in with {what}", r, status, code)
        if "Set-Cookie" in r.headers:
            expect.wrong.append(f"sign-in with {what}: set a cookie")
    expect.verify()


def _agent_event(business_id: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"business_id": business_id, "type": "agent.created", "data": data}


async def test_bad_events_are_refused_and_write_nothing(api: Api, db: asyncpg.Connection) -> None:
    business_id = await create_business(api.base_url)
    expect = await Expect(db).start()
    for what, data in [
        ("a NUL in the agent's name", {"id": "agent-1", "name": "Agent\x00Smith"}),
        ("a NUL in the agent's id", {"id": "agent-1\x00", "name": "Agent"}),
        ("a NUL in a field the table does not name", {"id": "agent-1", "name": "Agent", "notes": "kept\x00"}),
        ("a NUL in a key", {"id": "agent-1", "name": "Agent", "x\x00y": 1}),
        ("a name of 100k characters", {"id": "agent-1", "name": "x" * 100_000}),
        ("an empty id", {"id": "", "name": "Agent"}),
        ("no id", {"name": "Agent"}),
    ]:
        r = await api.post("/internal/v1/events", json=_agent_event(business_id, data), key=INTERNAL_TOKEN)
        await expect.problem(f"an event with {what}", r, 422, "validation_error")
    # One event's data is capped at 256 KiB.
    data = {"id": "agent-1", "name": "Agent", "blob": "x" * (256 * 1024)}
    r = await api.post("/internal/v1/events", json=_agent_event(business_id, data), key=INTERNAL_TOKEN)
    await expect.problem("an event with data over 256 KiB", r, 413, "payload_too_large")
    # A batch is all or nothing: three good events and a bad one store nothing.
    good = [_agent_event(business_id, {"id": f"agent-{i}", "name": f"Agent {i}"}) for i in range(3)]
    for what, bad in [("a NUL", {"id": "agent-x", "name": "Bad\x00"}), ("no name", {"id": "agent-x"})]:
        r = await api.post("/internal/v1/events", json={"events": [*good, _agent_event(business_id, bad)]},
                           key=INTERNAL_TOKEN)
        problem = await expect.problem(f"a batch whose last event has {what}", r, 422, "validation_error")
        if r.status == 422 and problem["errors"][0]["loc"][:3] != ["body", "events", 3]:
            expect.wrong.append(f"a batch whose last event has {what}: errors {problem['errors']}")
    expect.verify()


# ---- sign-out, outside the fuzzer (it would end the fuzzer's session) -----------


async def test_sign_out_answers_as_documented(tenant: Tenant, api: Api, db: asyncpg.Connection) -> None:
    """Each answer of POST /v1/auth/logout, checked by schemathesis against the document too."""
    key = (await tenant.create_key(name="k"))["key"]
    async with Api(tenant.base_url) as other:  # a session of its own: the tenant's stays signed in
        assert (await other.login(tenant.owner_email, tenant.password)).status == 200
        cookie, csrf = _session_cookie(other), other.csrf or ""
    base_url = tenant.base_url.rstrip("/")
    document = (await api.get("/openapi.json")).body
    sessions = await _count(db, "sessions")

    def sign_out(headers: dict[str, str], cookies: dict[str, str]) -> tuple[int, str, str]:
        schema = schemathesis.openapi.from_dict(document, config=schemathesis.Config())
        case = schema["/v1/auth/logout"]["POST"].Case(headers=headers, cookies=cookies)
        with requests.Session() as client:
            response = case.call(base_url=base_url, session=client, timeout=10)
            case.validate_response(response, checks=_DOCUMENT_CHECKS)
        report = FuzzReport()
        _check_problem(report, "POST /v1/auth/logout", case, response, "sign-out")
        assert not report.failures, report.failures
        problem = json.loads(response.content) if response.content else {}
        return response.status_code, problem.get("code", ""), ",".join(response.headers.get("set-cookie", []))

    async def call(headers: dict[str, str], cookies: dict[str, str]) -> tuple[int, str, str]:
        return await asyncio.to_thread(sign_out, headers, cookies)

    assert (await call({}, {}))[:2] == (401, "unauthorized")
    assert (await call({"Authorization": f"Bearer {key}"}, {}))[:2] == (401, "unauthorized")
    assert (await call({"Authorization": f"Bearer {key}", "X-CSRF-Token": csrf},
                       {SESSION_COOKIE: cookie}))[:2] == (401, "unauthorized")
    assert (await call({}, {SESSION_COOKIE: cookie}))[:2] == (403, "forbidden")
    assert (await call({"X-CSRF-Token": csrf + "x"}, {SESSION_COOKIE: cookie}))[:2] == (403, "forbidden")
    assert (await call({"X-CSRF-Token": csrf}, {SESSION_COOKIE: "x" * 5000}))[:2] == (401, "unauthorized")
    assert await _count(db, "sessions") == sessions  # nothing so far ended the session

    status, _, set_cookie = await call({"X-CSRF-Token": csrf}, {SESSION_COOKIE: cookie})
    assert status == 204
    assert f"{SESSION_COOKIE}=" in set_cookie
    assert await _count(db, "sessions") == sessions - 1
    assert (await call({"X-CSRF-Token": csrf}, {SESSION_COOKIE: cookie}))[:2] == (401, "unauthorized")
    # The tenant's own session was untouched.
    assert (await tenant.owner.get("/v1/me")).status == 200
