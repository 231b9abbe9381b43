"""Structured logs: one JSON object per line on stderr, with the ids bound via ``extra=``."""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime

import orjson

# Credentials never reach a log line, whoever logged them (aiohttp echoes bad request lines).
_SECRETS = re.compile(r"(kc_live_|whsec_)[A-Za-z0-9+/=_-]+|(?i:bearer\s+)[^\s'\"]+")


def redact(text: str) -> str:
    return _SECRETS.sub(lambda m: (m.group(1) or m.group(0).split()[0] + " ") + "[redacted]", text)


# Attributes every LogRecord has; anything else came from ``extra=`` and is logged as a field.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(entry, default=str).decode()


class PlainFormatter(logging.Formatter):
    """One line for a person (KAIHOOKS_DEV=1): the message, then the ids and figures it is about, as the JSON
    lines carry them (``listening port=8080``, ``delivery attempt failed delivery_id=… reason=timeout``)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = " ".join(f"{k}={v}" for k, v in record.__dict__.items() if k not in _STANDARD)
        if context:
            head, sep, rest = text.partition("\n")  # a traceback stays below the line
            text = f"{head} {context}{sep}{rest}"
        return redact(text)


def configure_logging(dev: bool = False, level: str = "info") -> None:
    """JSON lines on stderr (plain text with KAIHOOKS_DEV=1), from ``level`` up (KAIHOOKS_LOG_LEVEL)."""
    handler = logging.StreamHandler(sys.stderr)
    if dev:
        handler.setFormatter(PlainFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
