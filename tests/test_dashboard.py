"""The dashboard in a real browser: the help page's steps followed literally, against the real API, a real
worker and a local receiver. Assertions wait (Playwright's expect) instead of sleeping."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, Locator, Page, expect

from shared.settings import Settings
from tests.browser import launched_browser, screenshot, sign_in, watched_page
from tests.helpers import Api, Tenant, create_business, create_user
from tests.receiver import Received, running_receiver
from tests.test_publishing import call, event, publish
from tests.worker import running_worker
from tests.world import FAST, World

SETTINGS_PAGE = "/dashboard/settings/api-keys"
NEW_KEY = "Copy your new key now"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return dict(FAST)


@pytest.fixture(autouse=True)
def _clear_login_throttle(clear_login_throttle: None) -> None:
    """These tests sign in from 127.0.0.1 (one of them with a wrong password first)."""


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launched_browser() as b:
        yield b


@pytest.fixture
def base_url(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
async def page(browser: Browser, base_url: str) -> AsyncIterator[Page]:
    async with watched_page(browser, base_url) as p:
        yield p


def keys_panel(page: Page) -> Locator:
    return page.get_by_role("tabpanel", name="API Keys")


def hooks_panel(page: Page) -> Locator:
    return page.get_by_role("tabpanel", name="Outbound Webhooks")


def endpoint_card(page: Page, url: str) -> Locator:
    return hooks_panel(page).get_by_role("article", name=url, exact=True)


async def open_settings_via_dashboard(page: Page, email: str, password: str) -> None:
    """Sign in at /dashboard, then Dashboard > Settings > API Keys."""
    await page.goto("/dashboard")
    await sign_in(page, email, password)
    await expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    await page.get_by_role("navigation", name="Settings").get_by_role("link", name="API Keys").click()
    await expect(page).to_have_url(re.compile(re.escape(SETTINGS_PAGE)))
    await expect(page.get_by_role("heading", name="API Keys", level=1)).to_be_visible()


def signed_by(received: Received, secret: str) -> bool:
    """Whether a received webhook carries a valid Standard Webhooks signature made with this secret."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{received.headers['webhook-id']}.{received.headers['webhook-timestamp']}.".encode() + received.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(part.split(",", 1)[1] == expected for part in received.headers["webhook-signature"].split())


# ---- headers and markup -----------------------------------------------------------------------------


class _Markup(HTMLParser):
    """What a strict CSP would break: inline scripts, inline styles, event-handler attributes, other origins."""

    def __init__(self) -> None:
        super().__init__()
        self.inline: list[str] = []
        self.loads: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        self.inline += [f"{tag} {name}=" for name, _ in attrs if name == "style" or name.startswith("on")]
        if tag == "style":
            self.inline.append("<style>")
        if tag == "script":
            self._in_script = "src" not in named
        for attr in ("src", "href"):
            if tag in ("script", "link") and named.get(attr):
                self.loads.append(named[attr] or "")

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append("inline <script>")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False


def _directives(policy: str) -> dict[str, list[str]]:
    return {name: values for name, *values in (part.split() for part in policy.split(";") if part.strip())}


async def test_dashboard_pages_send_a_strict_csp_and_hold_no_inline_code(api: Api) -> None:
    for path in ("/dashboard", SETTINGS_PAGE, "/dashboard/assets/dashboard.js", "/dashboard/assets/dashboard.css"):
        r = await api.get(path)
        assert r.status == 200, path
        policy = r.headers["Content-Security-Policy"]
        csp = _directives(policy)
        assert csp["default-src"] == ["'self'"]
        assert csp["script-src"] == ["'self'"] and csp["style-src"] == ["'self'"]
        assert csp["frame-ancestors"] == ["'none'"] and csp["object-src"] == ["'none'"]
        assert "unsafe" not in policy and "http" not in policy
        assert r.headers["X-Frame-Options"] == "DENY"
        assert r.headers["Referrer-Policy"] == "no-referrer"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
    for path in ("/dashboard", SETTINGS_PAGE):
        r = await api.get(path)
        assert r.headers["Content-Type"] == "text/html; charset=utf-8"
        markup = _Markup()
        markup.feed(r.raw.decode())
        assert markup.inline == []
        assert markup.loads and all(url.startswith("/dashboard/assets/") for url in markup.loads), markup.loads
    # Only the named assets are served; API answers get a policy that allows nothing at all.
    for path in ("/dashboard/assets/routes.py", "/dashboard/assets/..%2Froutes.py", "/dashboard/nothing"):
        r = await api.get(path)
        assert r.status == 404 and r.problem["code"] == "not_found"
        assert r.headers["X-Frame-Options"] == "DENY"
    r = await api.get("/v1/me")
    assert r.headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"


# ---- the help page: Create an API Key ---------------------------------------------------------------


async def test_create_an_api_key_as_the_help_page_says(page: Page, tenant: Tenant, api: Api) -> None:
    # Signing in: a wrong password gets the API's own answer on the page.
    wrong = await api.post("/v1/auth/login", json={"email": tenant.owner_email, "password": "not it"})
    await page.goto("/dashboard")
    await sign_in(page, tenant.owner_email, "not it")
    await expect(page.get_by_role("alert")).to_have_text(wrong.problem["detail"])
    await screenshot(page, "sign-in.png")
    await page.get_by_label("Password").fill(tenant.password)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("banner")).to_contain_text(tenant.owner_email)

    # 1. Go to Dashboard > Settings > API Keys.
    await expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    await screenshot(page, "dashboard-home.png")
    await page.get_by_role("navigation", name="Settings").get_by_role("link", name="API Keys").click()
    await expect(page).to_have_url(re.compile(re.escape(SETTINGS_PAGE)))
    # 2. Open the API Keys tab.
    tab = page.get_by_role("tab", name="API Keys")
    await tab.click()
    await expect(tab).to_have_attribute("aria-selected", "true")
    # 3. Select the business the key should belong to.
    await page.get_by_label("Business").select_option(label="Acme Plumbing")
    panel = keys_panel(page)
    await expect(panel.get_by_text("No API keys yet")).to_be_visible()
    # 4. Create the key and copy it immediately.
    await panel.get_by_role("button", name="Create key").click()
    await panel.get_by_label("Name").fill("CRM sync")
    await panel.get_by_role("checkbox", name="webhooks:write").check()
    await panel.get_by_role("button", name="Create key").click()
    shown = page.get_by_role("region", name=NEW_KEY)
    await expect(shown).to_contain_text("only time the key is shown")
    await expect(shown).to_contain_text("secret manager")
    value = shown.get_by_label("API key")
    await expect(value).to_have_value(re.compile(r"^kc_live_\w{49}$"))
    secret = await value.input_value()
    await shown.get_by_role("button", name="Copy").click()
    await expect(shown.get_by_role("status")).to_contain_text("Copied")
    await screenshot(page, "api-keys-tab-new-key.png")
    assert await page.evaluate("navigator.clipboard.readText()") == secret

    # 5. The key works from server-side code, for this business.
    r = await api.get("/v1/me", key=secret)
    assert r.status == 200, r.body
    assert r.body["api_key"]["name"] == "CRM sync"
    assert r.body["business"]["id"] == tenant.business_id
    assert "webhooks:write" in r.body["api_key"]["scopes"]
    row = panel.get_by_role("row", name=re.compile("CRM sync"))
    await expect(row).to_contain_text(f"{secret[:12]}…{secret[-4:]}")
    await expect(row).to_contain_text("webhooks:write")

    # The secret was shown once: after a reload it is nowhere, not in the page, the URL or storage.
    await page.reload()
    await expect(row).to_be_visible()
    await expect(page.get_by_role("region", name=NEW_KEY)).to_be_hidden()
    assert secret not in await page.content()
    assert secret not in page.url
    assert await page.evaluate("[localStorage.length, sessionStorage.length]") == [0, 0]

    # Delete, with a confirmation that names the key: cancelling keeps it, confirming ends it at once.
    await row.get_by_role("button", name="Delete key “CRM sync”").click()
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_contain_text("“CRM sync”")
    await dialog.get_by_role("button", name="Cancel").click()
    await expect(dialog).to_be_hidden()
    assert (await api.get("/v1/me", key=secret)).status == 200
    await row.get_by_role("button", name="Delete key “CRM sync”").click()
    await dialog.get_by_role("button", name="Delete “CRM sync”").click()
    await expect(panel.get_by_text("No API keys yet")).to_be_visible()
    await expect(panel.get_by_role("status").filter(has_text="Deleted")).to_contain_text("CRM sync")
    r = await api.get("/v1/me", key=secret)
    assert r.status == 401 and r.problem["code"] == "unauthorized"


async def test_key_form_shows_the_apis_validation_errors_at_their_fields(page: Page, tenant: Tenant) -> None:
    await open_settings_via_dashboard(page, tenant.owner_email, tenant.password)
    panel = keys_panel(page)
    await panel.get_by_role("button", name="Create key").click()
    for scope in ("agents:read", "calls:read", "leads:read", "events:read", "webhooks:read"):
        await panel.get_by_role("checkbox", name=scope).uncheck()
    await panel.get_by_label("Expires on (optional)").fill("2001-01-01")
    await panel.get_by_role("button", name="Create key").click()
    # Three problems from one 422: an empty name, no scope, a date in the past; each at its own field.
    name = panel.get_by_label("Name")
    await expect(name).to_have_attribute("aria-invalid", "true")
    await expect(name).to_be_focused()
    await expect(name).to_have_accessible_description(re.compile("at least 1 character"))
    await expect(panel.get_by_role("group", name="Scopes")).to_contain_text("give at least one scope")
    await expect(panel.get_by_label("Expires on (optional)")).to_have_accessible_description(
        re.compile("must be in the future"))
    await expect(panel.get_by_text("No API keys yet")).to_be_visible()


async def test_tabs_work_from_the_keyboard_and_focus_is_visible(page: Page, tenant: Tenant) -> None:
    # Opening the page signed out leads to sign-in, and back to the page (and tab) asked for.
    await page.goto(SETTINGS_PAGE + "#outbound-webhooks")
    await expect(page).to_have_url(re.compile(r"/dashboard\?next="))
    await sign_in(page, tenant.owner_email, tenant.password)
    await expect(page).to_have_url(re.compile(re.escape(SETTINGS_PAGE) + r".*#outbound-webhooks$"))
    keys_tab, hooks_tab = page.get_by_role("tab", name="API Keys"), page.get_by_role("tab", name="Outbound Webhooks")
    await expect(hooks_tab).to_have_attribute("aria-selected", "true")
    await expect(hooks_panel(page).get_by_text("No webhook endpoints yet")).to_be_visible()

    await hooks_tab.focus()
    await page.keyboard.press("ArrowLeft")
    await expect(keys_tab).to_be_focused()
    await expect(keys_tab).to_have_attribute("aria-selected", "true")
    await expect(keys_panel(page)).to_be_visible()
    await expect(hooks_panel(page)).to_be_hidden()
    await page.keyboard.press("ArrowRight")
    await expect(hooks_tab).to_be_focused()
    await expect(hooks_panel(page)).to_be_visible()
    await page.keyboard.press("Home")
    await expect(keys_tab).to_have_attribute("aria-selected", "true")
    await page.keyboard.press("End")
    await expect(hooks_tab).to_have_attribute("aria-selected", "true")
    # Only the selected tab is in the tab order; Tab moves on into its panel.
    assert await keys_tab.get_attribute("tabindex") == "-1"
    await page.keyboard.press("Tab")
    await expect(hooks_panel(page)).to_be_focused()
    await page.keyboard.press("Shift+Tab")
    await expect(hooks_tab).to_be_focused()
    outline = await hooks_tab.evaluate("el => [getComputedStyle(el).outlineStyle, getComputedStyle(el).outlineWidth]")
    assert outline[0] == "solid" and outline[1] != "0px", outline


async def test_the_business_selector_switches_between_memberships(
    page: Page, tenant: Tenant, base_url: str, database_url: str
) -> None:
    # The tenant's owner is also a member of a second business, which has a key of its own.
    other = await create_business(base_url, "Bayside Electric")
    await create_user(database_url, tenant.owner_email, tenant.password, [other], "member")
    other_owner = f"owner-{secrets.token_hex(4)}@example.test"
    await create_user(database_url, other_owner, tenant.password, [other], "owner")
    async with Api(base_url) as bayside:
        assert (await bayside.login(other_owner, tenant.password)).status == 200
        assert (await bayside.post(f"/v1/businesses/{other}/api-keys", json={"name": "Bayside key"})).status == 201
    await tenant.create_key(name="Acme key")

    await open_settings_via_dashboard(page, tenant.owner_email, tenant.password)
    business, panel = page.get_by_label("Business"), keys_panel(page)
    await business.select_option(label="Acme Plumbing")
    await expect(panel.get_by_role("row", name=re.compile("Acme key"))).to_be_visible()
    await expect(panel.get_by_role("button", name="Create key")).to_be_visible()
    await business.select_option(label="Bayside Electric")
    await expect(panel.get_by_role("row", name=re.compile("Bayside key"))).to_be_visible()
    await expect(panel.get_by_role("row", name=re.compile("Acme key"))).to_have_count(0)
    await expect(panel.get_by_role("button", name="Create key")).to_have_count(0)
    await expect(page.get_by_text("Your role: member")).to_be_visible()
    # The choice is in the URL (an id, not a secret), so a reload keeps it.
    await expect(page).to_have_url(re.compile(f"business={other}"))
    await page.reload()
    await expect(business).to_have_value(other)
    await expect(panel.get_by_role("row", name=re.compile("Bayside key"))).to_be_visible()


# ---- the help page: Configure Outbound Webhooks -----------------------------------------------------


async def test_configure_outbound_webhooks_as_the_help_page_says(page: Page, world: World) -> None:
    tenant, receiver = world.tenant, world.receiver
    # 1. Open Dashboard > Settings > API Keys.
    await open_settings_via_dashboard(page, tenant.owner_email, tenant.password)
    # 2. Switch to the Outbound Webhooks tab.
    await page.get_by_role("tab", name="Outbound Webhooks").click()
    panel = hooks_panel(page)
    await expect(panel.get_by_text("No webhook endpoints yet")).to_be_visible()

    # 3. Add the destination URL. A bad one gets the API's own message at the URL field.
    await panel.get_by_role("button", name="Add endpoint").click()
    form = panel.get_by_role("form", name="Add an endpoint")
    bad = "ftp://crm.example.com/hooks"
    refused = await world.api.post(f"{tenant.path}/webhook-endpoints", key=world.key, json={"url": bad})
    assert refused.status == 422 and refused.problem["errors"][0]["loc"] == ["body", "url"]
    url_field = form.get_by_label("Destination URL")
    await url_field.fill(bad)
    await form.get_by_role("button", name="Save").click()
    await expect(url_field).to_have_attribute("aria-invalid", "true")
    await expect(url_field).to_have_accessible_description(
        re.compile(re.escape(refused.problem["errors"][0]["msg"])))
    await expect(url_field).to_be_focused()
    # 4. Save the webhook configuration.
    url = receiver.url("/ok")
    await url_field.fill(url)
    await form.get_by_label("Description (optional)").fill("CRM")
    await form.get_by_role("button", name="Save").click()
    card = endpoint_card(page, url)
    await expect(card).to_contain_text("Enabled")
    await expect(card).to_contain_text("All event types")
    secret_field = card.get_by_label("Signing secret")
    await expect(secret_field).to_have_value(re.compile(r"^whsec_"))
    secret = await secret_field.input_value()

    # 5. Trigger a test event and confirm the endpoint received it.
    await card.get_by_role("button", name="Send test event").click()
    result = card.locator(".result")
    await expect(result).to_contain_text("Test event: delivered")
    await expect(result).to_contain_text("HTTP 200")
    await expect(result).to_contain_text("Response: ok")
    arrived = await receiver.wait_for(1, "/ok")
    assert arrived[0].headers["webhook-id"].startswith("evt_")
    assert signed_by(arrived[0], secret)
    row = card.get_by_role("row", name=re.compile("webhook.test"))
    await expect(row).to_contain_text("Delivered")
    await row.get_by_role("button", name=re.compile("^Attempts")).click()
    attempts = card.locator(".attempts")
    await expect(attempts).to_contain_text("#1")
    await expect(attempts).to_contain_text("test")
    await expect(attempts).to_contain_text(url)
    await expect(card).to_contain_text("100 % of 1 attempt succeeded")

    # Update the destination URL and the event types; Save.
    await card.get_by_role("button", name="Edit").click()
    edit = card.get_by_role("form", name="Edit endpoint")
    new_url = receiver.url("/ok/v2")
    await edit.get_by_label("Destination URL").fill(new_url)
    await edit.get_by_label("Only the types checked below").check()
    await edit.get_by_role("button", name="Save").click()
    await expect(edit.get_by_role("group", name="Event types")).to_contain_text("List should have at least 1 item")
    await edit.get_by_role("checkbox", name="call.completed").check()
    await edit.get_by_role("button", name="Save").click()
    card = endpoint_card(page, new_url)
    await expect(card).to_contain_text("call.completed")

    # Disable: a test send is refused with the API's reason; enable again and it arrives at the new URL.
    await card.get_by_role("button", name="Disable").click()
    await expect(card).to_contain_text("Disabled")
    await card.get_by_role("button", name="Send test event").click()
    await expect(card.locator(".result")).to_contain_text("disabled")
    await card.get_by_role("button", name="Enable").click()
    await expect(card.get_by_role("button", name="Disable")).to_be_visible()
    await card.get_by_role("button", name="Send test event").click()
    await expect(card.locator(".result")).to_contain_text("Test event: delivered")
    await receiver.wait_for(1, "/ok/v2")

    # Reveal, then rotate with a grace period: both secrets sign the next webhook.
    await card.get_by_role("button", name="Reveal signing secret").click()
    await expect(card.get_by_label("Signing secret")).to_have_value(secret)
    await card.get_by_role("button", name="Rotate secret").click()
    dialog = page.get_by_role("dialog")
    await dialog.get_by_label("Keep the old secret signing beside the new one for").select_option(label="1 hour")
    await dialog.get_by_role("button", name="Rotate secret").click()
    await expect(card).to_contain_text("The new signing secret")
    await expect(card.get_by_label("Signing secret")).not_to_have_value(secret)
    rotated = await card.get_by_label("Signing secret").input_value()
    assert rotated.startswith("whsec_")
    await card.get_by_role("button", name="Send test event").click()
    await expect(card.locator(".result")).to_contain_text("Test event: delivered")
    last = (await receiver.wait_for(2, "/ok/v2"))[-1]
    assert signed_by(last, rotated) and signed_by(last, secret)


async def test_a_failing_endpoint_shows_why_and_can_be_retried(page: Page, world: World) -> None:
    # The receiver answers 500 to the first two requests of each webhook: the test send and its one automatic
    # retry (FAST replay schedule) fail, a manual retry succeeds.
    endpoint = await world.endpoint("/flaky/2")
    await page.goto(SETTINGS_PAGE + "#outbound-webhooks")
    await sign_in(page, world.tenant.owner_email, world.tenant.password)
    card = endpoint_card(page, endpoint["url"])
    await card.get_by_role("button", name="Send test event").click()
    result = card.locator(".result")
    await expect(result).to_contain_text("Test event: not delivered")
    await expect(result).to_contain_text("HTTP 500")
    await expect(result).to_contain_text(re.compile(r"Response: try [12]"))
    row = card.get_by_role("row", name=re.compile("webhook.test"))
    await expect(row).to_contain_text("Failed")
    await expect(row).to_contain_text("HTTP 500")
    await row.get_by_role("button", name=re.compile("^Attempts")).click()
    await expect(card.locator(".attempts li")).to_have_count(2)
    await expect(card.locator(".attempts")).to_contain_text("Why: HTTP 500")

    await row.get_by_role("button", name=re.compile("^Retry")).click()
    await expect(result).to_contain_text("Retry of webhook.test: delivered")
    await expect(row).to_contain_text("Delivered")
    await expect(card.locator(".attempts li")).to_have_count(3)
    await expect(card.locator(".attempts li").last).to_contain_text("retry")
    assert len(world.receiver.at("/flaky/2")) == 3


# ---- members ------------------------------------------------------------------------------------------


async def _status_of(page: Page, method: str, path: str, body: Any = None) -> int:
    """Call the API from inside the page with the session and its CSRF token, as a tampered page could."""
    status: int = await page.evaluate(
        """async ([method, path, body]) => {
            const me = await (await fetch("/v1/me")).json();
            const init = {method, headers: {"X-CSRF-Token": me.csrf_token, "Content-Type": "application/json"}};
            if (body !== null) init.body = JSON.stringify(body);
            return (await fetch(path, init)).status;
        }""",
        [method, path, body],
    )
    return status


async def test_a_member_sees_keys_and_endpoints_read_only(page: Page, tenant: Tenant, api: Api) -> None:
    key = await tenant.create_key(name="Reporting")
    r = await tenant.owner.post(f"{tenant.path}/webhook-endpoints", json={"url": "http://127.0.0.1:9/hooks"})
    assert r.status == 201
    endpoint = r.body
    email = f"member-{secrets.token_hex(4)}@example.test"
    await create_user(tenant.database_url, email, tenant.password, [tenant.business_id], "member")

    await page.goto(SETTINGS_PAGE)
    await sign_in(page, email, tenant.password)
    panel = keys_panel(page)
    await expect(panel.get_by_role("row", name=re.compile("Reporting"))).to_be_visible()
    await expect(panel.get_by_text("Only an owner or admin can create or delete them")).to_be_visible()
    await expect(page.get_by_text("Your role: member")).to_be_visible()
    await expect(panel.get_by_role("button", name="Create key")).to_have_count(0)
    await expect(panel.get_by_role("button", name=re.compile("Delete"))).to_have_count(0)

    await page.get_by_role("tab", name="Outbound Webhooks").click()
    card = endpoint_card(page, endpoint["url"])
    await expect(card).to_be_visible()
    await expect(card.get_by_text("No deliveries yet.")).to_be_visible()
    await expect(hooks_panel(page).get_by_role("button", name="Add endpoint")).to_have_count(0)
    await expect(card.get_by_role("button")).to_have_count(0)

    # Forced from the page, with the session and its CSRF token, the API still refuses.
    assert await _status_of(page, "POST", f"{tenant.path}/api-keys", {"name": "sneaky"}) == 403
    assert await _status_of(page, "DELETE", f"{tenant.path}/api-keys/{key['id']}") == 403
    assert await _status_of(page, "POST", f"{tenant.path}/webhook-endpoints/{endpoint['id']}/test") == 403
    assert await _status_of(page, "GET", f"{tenant.path}/webhook-endpoints/{endpoint['id']}/secret") == 403
    assert (await api.get("/v1/me", key=key["key"])).status == 200
    listed = await tenant.owner.get(f"{tenant.path}/api-keys")
    assert [k["name"] for k in listed.body["data"]] == ["Reporting"]

    # Signing out ends the session: the sign-in form again, and the API answers 401.
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert await page.evaluate("fetch('/v1/me').then(r => r.status)") == 401


# ---- screenshots with demo-like data, and a narrow screen ---------------------------------------------

DEMO_EMAIL = "owner@demo.kaicalls.test"  # as `make run` seeds it (scripts/seed_demo.py)


async def test_both_tabs_with_data_and_on_a_narrow_screen(
    browser: Browser, base_url: str, api: Api, settings: Settings, database_url: str
) -> None:
    business_id = await create_business(base_url, "Demo Plumbing Co.")
    password = secrets.token_urlsafe(12)
    await create_user(database_url, DEMO_EMAIL, password, [business_id], "owner")
    path = f"/v1/businesses/{business_id}"
    async with Api(base_url) as owner:
        assert (await owner.login(DEMO_EMAIL, password)).status == 200
        for body in ({"name": "Demo key"},
                     {"name": "CRM sync", "scopes": ["calls:read", "leads:read", "webhooks:read", "webhooks:write"]},
                     {"name": "Nightly reporting", "scopes": ["calls:read"], "expires_at": "2031-01-01T00:00:00Z"}):
            assert (await owner.post(f"{path}/api-keys", json=body)).status == 201
        async with running_receiver() as receiver, running_worker(settings):
            legacy = await owner.post(f"{path}/webhook-endpoints", json={
                "url": receiver.url("/status/503"), "description": "Old automation server",
                "event_types": ["lead.created"]})
            crm = await owner.post(f"{path}/webhook-endpoints", json={
                "url": receiver.url("/hooks/kaicalls"), "description": "CRM: new leads and finished calls",
                "event_types": ["call.completed", "lead.created"]})
            assert crm.status == legacy.status == 201
            done = call("call_1", status="completed", ended_at="2026-11-27T09:05:00Z", duration_seconds=300)
            for type_, data in (("call.completed", done), ("lead.created", {"id": "lead_1", "name": "Dana"})):
                assert (await publish(api, event(business_id, type_, data))).status == 202
            await receiver.wait_for(2, "/hooks/kaicalls")

            async with watched_page(browser, base_url) as page:
                await page.goto(SETTINGS_PAGE)
                await sign_in(page, DEMO_EMAIL, password)
                await expect(keys_panel(page).get_by_role("row")).to_have_count(4)  # a heading row and three keys
                await screenshot(page, "api-keys-tab.png")
                await page.get_by_role("tab", name="Outbound Webhooks").click()
                crm_card = endpoint_card(page, crm.body["url"])
                await crm_card.get_by_role("button", name="Send test event").click()
                await expect(crm_card.locator(".result")).to_contain_text("Test event: delivered")
                legacy_card = endpoint_card(page, legacy.body["url"])
                await expect(legacy_card.get_by_role("row", name=re.compile("lead.created"))).to_contain_text("Failed")
                await expect(legacy_card).to_contain_text("HTTP 503: answer 503")
                await expect(page.locator("main")).not_to_contain_text(re.compile(r"\b(null|undefined|NaN)\b"))
                await screenshot(page, "outbound-webhooks-tab.png")

                # Narrow: nothing is wider than the screen; tables become labelled rows.
                await page.set_viewport_size({"width": 360, "height": 800})
                for tab in ("API Keys", "Outbound Webhooks"):
                    await page.get_by_role("tab", name=tab).click()
                    overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                    assert overflow <= 0, (tab, overflow)
                    await screenshot(page, f"{tab.lower().replace(' ', '-')}-tab-narrow.png")
