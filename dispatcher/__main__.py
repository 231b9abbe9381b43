"""``python -m dispatcher``: run the worker, the delivery engine and its crons (the Procfile's ``worker``)."""

from __future__ import annotations

import asyncio
import signal

from dispatcher.worker import serve
from shared.logs import configure_logging
from shared.runtime import new_event_loop, tune_process
from shared.settings import Settings, load_settings


def main() -> None:
    settings = load_settings()
    configure_logging(settings.dev, settings.log_level)
    tune_process()
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(_run(settings))


async def _run(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(settings, stop)


if __name__ == "__main__":
    main()
