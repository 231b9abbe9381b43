"""``python -m api``: serve the API on $PORT (the Procfile's ``web``)."""

from __future__ import annotations

import logging

from aiohttp import web

from api.app import create_app, runner_options
from shared.logs import configure_logging
from shared.runtime import new_event_loop, tune_process
from shared.settings import load_settings


def main() -> None:
    settings = load_settings()
    configure_logging(settings.dev, settings.log_level)
    tune_process()
    logging.getLogger("kaihooks.api").info("listening", extra={"port": settings.port})
    web.run_app(create_app(settings), host=settings.listen_host, port=settings.port, shutdown_timeout=10,
                print=None, loop=new_event_loop(), **runner_options(settings))


if __name__ == "__main__":
    main()
