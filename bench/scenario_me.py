"""Scenario ``me``: authenticated ``GET /v1/me`` on one API process vs a bare aiohttp handler (P6 style).

Three processes: the API (``python -m api``, as the Procfile runs it), the baseline
(``bench/bare_server.py``, serving the very bytes the API answered, re-encoded with
orjson per request), and the load generator (the runner). Both servers get the same
load at the same concurrency, in alternating rounds (bare, app, bare, app, ...) so
drift on a shared box hits both alike. The figure is app requests/s / bare requests/s.
The comparison itself is ``common.get_vs_bare`` (P6 runs the same one on ``/calls``).
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import common
from setup_env import Context

ID = "me"
TITLE = "Authenticated GET /v1/me on one API process vs a bare aiohttp handler (P6 style)"
TARGET_RATIO = 0.5  # P6's target, which is for /calls; /v1/me is reported the same way


def run(ctx: Context) -> dict[str, Any]:
    with ExitStack() as stack:  # this scenario's processes stop when it ends
        api, api_port = common.start_api(ctx, stack)
        return common.get_vs_bare(
            ctx, stack, scenario_id=ID, title=TITLE, target_ratio=TARGET_RATIO, api=api, api_port=api_port,
            path="/v1/me", query="", headers={"Authorization": f"Bearer {ctx.api_key}"},
            app_name="kaihooks GET /v1/me (API key)", raw=False)
