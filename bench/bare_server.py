"""The baseline: a bare aiohttp handler answering a fixed JSON document from memory.

``python bench/bare_server.py --port N --body FILE --path /v1/me`` serves, on
127.0.0.1, the JSON object read once from FILE, encoded with orjson on every request
exactly as ``api.render.json`` does (same options, same content type), under the same
event loop (uvloop) and server settings as ``python -m api``; no middleware, no
database, no Redis. With ``--raw`` it sends FILE's bytes as they are, encoding nothing
(P6: the API passes stored JSON through, so the baseline is the bytes themselves).
It does not import the project.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import orjson
from aiohttp import web

from shared.runtime import new_event_loop

_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC  # as in api/render.py


def build(path: str, document: object) -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(document, option=_OPTIONS), content_type="application/json")

    app = web.Application()
    app.router.add_get(path, handler)
    return app


def build_raw(path: str, body: bytes) -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get(path, handler)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body", type=Path, required=True, help="a file holding the JSON document")
    parser.add_argument("--path", default="/v1/me")
    parser.add_argument("--raw", action="store_true", help="send the file's bytes as they are (no re-encoding)")
    args = parser.parse_args()
    raw = args.body.read_bytes()
    app = build_raw(args.path, raw) if args.raw else build(args.path, orjson.loads(raw))
    web.run_app(app, loop=new_event_loop(), host="127.0.0.1", port=args.port, access_log=None, shutdown_timeout=2,
                print=None)


if __name__ == "__main__":
    main()
