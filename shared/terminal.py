"""Text the CLI did not write, made safe for the operator's terminal.

A receiver chooses its response bodies, the names in its TLS certificate and (its owner) its URL; an
error message may quote any of them. Printed raw, an escape sequence in them could retitle the window,
clear the screen, rewrite what was printed before or, on some terminals, answer back as typed input.
Every control character (C0, DEL, C1), the Unicode line and paragraph separators and the bidirectional
overrides (which reorder what is shown) are therefore printed as escapes: ``\\x1b``, ``\\u202e``.
"""

from __future__ import annotations

import re

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
