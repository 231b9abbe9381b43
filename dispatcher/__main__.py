"""``python -m dispatcher``: run the arq worker (the Procfile's ``worker``)."""

from __future__ import annotations

import asyncio

from arq.worker import Worker

from dispatcher.worker import worker_options
from shared.logs import configure_logging
from shared.settings import load_settings


def main() -> None:
    settings = load_settings()
    configure_logging(settings.dev)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - Windows
        pass
    asyncio.set_event_loop(asyncio.new_event_loop())
    Worker(**worker_options(settings)).run()


if __name__ == "__main__":
    main()
