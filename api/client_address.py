"""Who is on the other end of a request: the one client address that the access log, the per-address
sign-in throttle, sessions and the audit log all use.

``X-Forwarded-For`` is believed only from a peer in ``KAIHOOKS_TRUSTED_PROXIES``, and then only as far as
it was written by trusted hops: the list is read from the right (each proxy appends the address it saw),
and the first address that is not a trusted proxy is the client. Anything further left was written by
the client itself and could say anything.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from ipaddress import IPv4Network, IPv6Network

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from api.context import SETTINGS
from api.observe import KEY_ID, USER_ID, route_of
from shared import addresses, ids
from shared.addresses import Address
from shared.logs import redact

Network = IPv4Network | IPv6Network
_CLIENT = web.RequestKey("client_address", str)  # "" when there is none (a unix socket)


def _trusted(address: Address, trusted: Sequence[Network]) -> bool:
    return any(address.version == net.version and address in net for net in trusted)


def resolve(peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> Address | None:
    """The client's address: the peer's, unless the peer is a trusted proxy; then the right-most entry of
    the forwarded list that is not a trusted proxy. An entry a trusted hop wrote that is not an address
    stops the walk at that hop (the nearest address we can vouch for)."""
    nearest = addresses.parse(peer) if peer else None
    if nearest is None or not _trusted(nearest, trusted):
        return nearest
    hops = [hop for header in forwarded_for for hop in header.split(",")]
    for text in reversed(hops):
        hop = addresses.parse(text)
        if hop is None:
            return nearest
        if not _trusted(hop, trusted):
            return hop
        nearest = hop
    return nearest


def client_address(request: web.BaseRequest) -> str | None:
    """This request's client address as text (worked out once per request)."""
    if _CLIENT in request:
        return request[_CLIENT] or None
    trusted: Sequence[Network] = ()
    if isinstance(request, web.Request):
        trusted = request.app[SETTINGS].trusted_proxies
    found = resolve(request.remote, request.headers.getall("X-Forwarded-For", []) if trusted else [], trusted)
    request[_CLIENT] = str(found) if found is not None else ""
    return request[_CLIENT] or None


class ClientAccessLogger(AbstractAccessLogger):
    """One structured line per request (at info), naming the client as the rest of the service does: method,
    route template, path (never the query string, which may carry anything), status, duration, and who
    authenticated it by public id (``key_id``, or a dashboard session's ``user_id``), never a credential."""

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        try:
            client = client_address(request)
        except Exception:  # a request that never reached the application (malformed): the socket's peer
            client = request.remote
        key_id, user_id = request.get(KEY_ID), request.get(USER_ID)
        self.logger.info("request", extra={
            "method": request.method, "route": route_of(request), "path": redact(request.path),
            "status": response.status, "duration_ms": round(time * 1000, 1), "client": client,
            "key_id": ids.encode("key", key_id) if key_id is not None else None,
            "user_id": ids.encode("usr", user_id) if user_id is not None else None,
        })
