"""What the CLI prints: tables, JSON and times, with text the CLI did not write made safe for the
operator's terminal.

A receiver chooses its response bodies, the names in its TLS certificate and (its owner) its URL; an
error message may quote any of them. Printed raw, an escape sequence in them could retitle the window,
clear the screen, rewrite what was printed before or, on some terminals, answer back as typed input.
Every control character (C0, DEL, C1), the Unicode line and paragraph separators and the bidirectional
overrides (which reorder what is shown) are therefore printed as escapes: ``\\x1b``, ``\\u202e``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

_BEYOND_ASCII = "\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069"
_UNSAFE = re.compile(f"[\x00-\x1f{_BEYOND_ASCII}]")
# A JSON encoder already escapes C0 inside strings; outside them it writes only newlines and spaces.
_UNSAFE_IN_JSON = re.compile(f"[{_BEYOND_ASCII}]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(value: object) -> str:
    """``str(value)`` with every character a terminal could act on written as an escape."""
    return _UNSAFE.sub(_escaped, str(value))


def safe_json(text: str) -> str:
    """JSON text with the same characters as JSON escapes (``\\u001b``): still valid JSON, decoding to the
    same data, and inert in a terminal (a JSON encoder leaves DEL, C1 and the Unicode ones raw)."""
    return _UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def timestamp(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if value else "-"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns padded to their widest cell, headers in capitals; every cell through ``safe``."""
    cells = [[safe(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    line = "  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line.rstrip()]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(out)


def print_json(data: Any) -> None:
    """``--json`` output: indented, times in UTC with a Z, and inert in a terminal (``safe_json``)."""
    print(safe_json(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_UTC_Z, default=str).decode()))
