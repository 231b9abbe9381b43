"""The errors page: ``GET /docs/errors`` (HTML) and docs/errors.md, both rendered from ``shared.errors.CODES``.

Regenerate the Markdown after changing the registry: ``python -m api.errors_page > docs/errors.md``
(tests/test_errors.py fails while it differs).
"""

from __future__ import annotations

import functools
from html import escape

from shared.errors import CODES, ERRORS_PATH, ErrorCode

TITLE = "API errors"
# Paragraphs before the list, shared by both renderings: plain text, with `code` spans.
_INTRO = [
    "Every error the HTTP API answers is RFC 9457 problem details, Content-Type `application/problem+json`: "
    '`{"type", "title", "status", "detail", "code"}`, plus `errors: [{"loc", "msg"}]` on a validation error, '
    '`limit: {"name", "max"}` on a limit that was reached, `job_id` on a recover that is running already and '
    "`checks` on a failed readiness check. `code` is a stable word to switch on; `detail` is for people and "
    "may change.",
    f"`type` is `{ERRORS_PATH}#<code>`: this page's anchor for the code. It is a full-path reference, resolved "
    "against the API's own address (RFC 9457 allows a relative `type` and asks that it be a full path). It is "
    "not an absolute URL on purpose: it reads the same from every host, process and proxy, so a client can "
    "compare it as it is, and it never repeats a Host header the client sent.",
    "Headers that go with some codes: `WWW-Authenticate: Bearer` on every 401, `Retry-After` (seconds) on "
    "429 and 503, `Allow` on 405.",
]


def inline_html(text: str) -> str:
    """Escaped, with `code` spans."""
    parts = escape(text, quote=False).split("`")
    return "".join(f"<code>{part}</code>" if i % 2 else part for i, part in enumerate(parts))


def _html_entry(entry: ErrorCode) -> str:
    code = escape(entry.code)
    return (
        f'<section class="card" id="{code}">\n'
        f"<h2><code>{code}</code> · {entry.status} {escape(entry.title)}</h2>\n"
        f"<p><strong>When:</strong> {inline_html(entry.when)}</p>\n"
        f"<p><strong>What to do:</strong> {inline_html(entry.todo)}</p>\n"
        "</section>"
    )


@functools.cache
def html() -> bytes:
    """The page, rendered once per process (the registry changes only with a deploy)."""
    rows = "\n".join(
        f'<tr><td><a href="#{escape(e.code)}"><code>{escape(e.code)}</code></a></td>'
        f"<td>{e.status}</td><td>{escape(e.title)}</td></tr>"
        for e in CODES.values()
    )
    intro = "\n".join(f'<p class="lead">{inline_html(p)}</p>' for p in _INTRO)
    entries = "\n".join(_html_entry(e) for e in CODES.values())
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{TITLE} · kaihooks</title>
<link rel="icon" href="/dashboard/assets/icon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/dashboard/assets/dashboard.css">
</head>
<body>
<header class="topbar"><a class="brand" href="/dashboard">KaiCalls <span>API errors</span></a></header>
<main id="main">
<h1>{TITLE}</h1>
{intro}
<div class="table-wrap">
<table>
<thead><tr><th scope="col">code</th><th scope="col">status</th><th scope="col">title</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
</div>
{entries}
<p class="muted">The machine-readable description of the API: <a href="/openapi.json">/openapi.json</a>.</p>
</main>
</body>
</html>
""".encode()


def markdown() -> str:
    """docs/errors.md."""
    lines = [
        f"# {TITLE}",
        "",
        "<!-- Rendered from shared/errors.py by `python -m api.errors_page > docs/errors.md`; the API serves the",
        f"     same at {ERRORS_PATH}. tests/test_errors.py fails while the two differ. -->",
        "",
    ]
    for paragraph in _INTRO:
        lines += [paragraph, ""]
    lines += ["| code | status | title |", "|---|---|---|"]
    lines += [f"| [`{e.code}`](#{e.code}) | {e.status} | {e.title} |" for e in CODES.values()]
    for e in CODES.values():
        lines += ["", f"## {e.code}", "", f"**{e.status} {e.title}.** {e.when}", "", f"**What to do:** {e.todo}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
