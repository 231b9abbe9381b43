"""Process-wide tuning for the long-running processes (web and worker)."""

from __future__ import annotations

import gc


def tune_process() -> None:
    """uvloop when available, and a garbage collector sized for request/batch churn.

    A 500-event publish allocates tens of thousands of short-lived objects; with the default
    generation-0 threshold (700) the collector ran several full passes per batch (about a
    quarter of the API's CPU under load). Objects alive after start-up are frozen out of it.
    """
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - Windows
        pass
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)
