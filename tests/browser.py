"""A real browser for the dashboard tests: Debian's chromium driven by Playwright (its own download is not used)."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

from playwright.async_api import Browser, Page, async_playwright, expect

CHROMIUM = os.environ.get("KAIHOOKS_CHROMIUM", "/usr/bin/chromium")
# Screenshots of each run go here (ignored by git).
OUTPUT = Path(__file__).resolve().parent.parent / "test-output" / "dashboard"
# Auto-waiting assertions wait this long (a test send goes through a real worker and receiver).
expect.set_options(timeout=15_000)
# A failed fetch (a 4xx the page expects and shows) is logged by chromium; anything else is a fault.
_EXPECTED_CONSOLE = re.compile(r"^Failed to load resource: the server responded with a status of 4\d\d")


@contextlib.asynccontextmanager
async def launched_browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


@contextlib.asynccontextmanager
async def watched_page(browser: Browser, base_url: str, width: int = 1100) -> AsyncIterator[Page]:
    """A page in a fresh context (its own cookies) that fails the test on a script error or a CSP violation."""
    context = await browser.new_context(
        base_url=base_url, viewport={"width": width, "height": 900},
        permissions=["clipboard-read", "clipboard-write"],
    )
    faults: list[str] = []
    page = await context.new_page()
    page.on("console", lambda m: faults.append(m.text)
            if m.type == "error" and not _EXPECTED_CONSOLE.match(m.text) else None)
    page.on("pageerror", lambda e: faults.append(f"uncaught: {e}"))
    try:
        yield page
    finally:
        await context.close()
    assert not faults, faults


async def sign_in(page: Page, email: str, password: str) -> None:
    """Fill in the sign-in form the page shows (at /dashboard, or after a redirect to it)."""
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()


async def screenshot(page: Page, name: str) -> Path:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    path = OUTPUT / name
    await page.screenshot(path=str(path), full_page=True)
    return path
