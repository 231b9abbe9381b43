"""Domain, storage and configuration shared by the API, the dispatcher and the CLI."""

__version__ = "0.1.0"
