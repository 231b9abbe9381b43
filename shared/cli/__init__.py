"""The ``kaihooks`` command: presentation only.

It turns a command line into calls of the services in ``shared`` (the ones the API calls) and their results
into text or JSON for a terminal (``terminal``). The fence: this package imports services, repositories and
settings; nothing outside it imports this package. Importing it and building the parser loads the standard
library alone; a command's own module is imported when it runs (``app``).
"""

from shared.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
