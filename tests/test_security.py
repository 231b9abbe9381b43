"""Response headers every answer carries (api/security.py)."""

from __future__ import annotations

import pytest

from tests.helpers import Api

HSTS = "max-age=31536000; includeSubDomains"


@pytest.mark.parametrize("settings_overrides", [{"dev": False}])
async def test_every_response_asks_for_https_only_outside_dev(api: Api) -> None:
    answers = [
        await api.get("/healthz"),
        await api.get("/v1/me"),  # a 401 problem
        await api.get("/no/such/route"),  # a 404 from the router
        await api.post("/v1/auth/login", data=b"{", headers={"Content-Type": "application/json"}),  # a 400
        await api.get("/dashboard"),
    ]
    for r in answers:
        assert r.headers.get("Strict-Transport-Security") == HSTS, (r.status, dict(r.headers))


async def test_dev_sends_no_hsts(api: Api) -> None:
    """KAIHOOKS_DEV serves plain http on localhost: pinning the browser to https there would break it."""
    assert "Strict-Transport-Security" not in (await api.get("/healthz")).headers
