"""The one middleware every request passes through. What it does, outermost first:

1. counts the request (``api.observe``: metrics by route template and status), with the status the client
   gets, problem answers included;
2. adds the security headers (``api.security``) to every answer it returns;
3. turns every error into problem details (``api.problems``);
4. refuses a body declared larger than the route takes (``api.parsing.body_limit``) before any handler runs.

One layer rather than one per concern: a request costs one more coroutine and frame, not four, and the
headers come from lists made once for the app's settings.
"""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from api import observe, problems
from api.parsing import body_limit, too_large
from api.security import SecurityHeaders
from shared.settings import Settings


def middleware(settings: Settings) -> Middleware:
    security = SecurityHeaders(settings)
    clock = time.perf_counter

    @web.middleware
    async def every_request(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = clock()
        try:
            try:
                length = request.content_length
                if length is not None and length > (limit := body_limit(request)):
                    raise too_large(limit)
                response = await handler(request)
            except Exception as exc:
                response = problems.answer(request, exc)  # raises a redirect again, for aiohttp to send
            security.add(request, response)
        except web.HTTPException as exc:  # a redirect
            observe.record(request, exc.status, clock() - started)
            raise
        except Exception:  # problems.answer failed: aiohttp answers 500
            observe.record(request, 500, clock() - started)
            raise
        observe.record(request, response.status, clock() - started)
        return response

    return every_request
