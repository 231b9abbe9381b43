"""Where webhooks may go: ``https://`` to public addresses only (unless private targets are allowed).

Checked when an endpoint is saved and again for the address actually connected to,
since DNS can change after saving (see ``dispatcher.send``).
"""

from __future__ import annotations

import ipaddress
import socket
import unicodedata
import urllib.parse

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Non-global blocks that Python's is_global does not (or not everywhere) cover, plus
# the metadata addresses named explicitly so the reason is clear.
_METADATA = {
    ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, ...
    ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
    ipaddress.ip_address("192.0.0.192"),  # Oracle Cloud (older); Python counts it as global
}
_SITE_LOCAL = ipaddress.ip_network("fec0::/10")  # deprecated, still routed privately; not flagged by ipaddress
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_MAX_URL_LENGTH = 2048


class UrlRefused(ValueError):
    """The URL or address may not be used as a webhook target; the message says why."""


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside an IPv4-mapped, IPv4-compatible, NAT64 or 6to4 IPv6 address."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64 or ip in _NAT64_LOCAL:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if int(ip) >> 32 == 0 and int(ip) > 1:  # deprecated IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(int(ip))
    return None


def address_problem(ip: IPAddress) -> str | None:
    """Why this address is not allowed as a webhook target, or None if it is public."""
    if ip in _METADATA:
        return "a cloud metadata address"
    if isinstance(ip, ipaddress.IPv6Address):
        inner = embedded_ipv4(ip)
        if inner is not None:
            why = address_problem(inner)
            return f"an IPv6 form of {why}" if why else None
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_unspecified:
        return "an unspecified address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in ipaddress.ip_network("100.64.0.0/10"):
        return "a carrier-grade NAT address"
    if isinstance(ip, ipaddress.IPv6Address) and ip in _SITE_LOCAL:
        return "a site-local address"
    if ip.is_private or ip.is_reserved or not ip.is_global:
        return "a private or reserved address"
    return None


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address a host names directly, including decimal/octal/hex IPv4 spellings (``2130706433``,
    ``0177.0.0.1``) that resolvers accept; None for a name."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    try:
        packed = socket.inet_aton(host)  # the BSD parser: accepts 0x7f.1, 017700000001, 127.1 ...
    except OSError:
        return None
    return ipaddress.IPv4Address(packed)


# Full stops that host parsing (WHATWG, UTS #46) reads as "." besides NFKC's own mapping: ideographic,
# full-width and half-width ideographic.
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})


def host_as_resolved(host: str) -> str:
    """The host as a URL parser hands it to the resolver, for checking: percent-decoded, then mapped as UTS #46
    (IDNA) does: ideographic and full-width full stops to ".", compatibility forms to ASCII by NFKC (full-width
    and circled digits and letters), lower-cased, invisible format characters (soft hyphen, zero-width space)
    dropped; a full-width "127" with ideographic stops is 127.0.0.1. Python's ``idna`` codec implements the
    older IDNA 2003: this mapping is the part both agree on, and all a check for addresses and local names
    needs. The URL is stored as given (the delivery client maps it the same way when it connects)."""
    host = urllib.parse.unquote(host)
    if host.isascii():
        return host.lower()
    host = unicodedata.normalize("NFKC", host.translate(_DOTS)).translate(_DOTS)
    return "".join(c for c in host if unicodedata.category(c) != "Cf").lower()


def check_url(url: str, allow_private: bool) -> str:
    """The URL normalised, or UrlRefused with a reason a person can act on."""
    if len(url) > _MAX_URL_LENGTH:
        raise UrlRefused(f"the URL is longer than {_MAX_URL_LENGTH} characters")
    try:
        parts = urllib.parse.urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise UrlRefused(f"not a valid URL ({exc})") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise UrlRefused("the URL must start with https:// and name a host")
    if parts.scheme != "https" and not allow_private:
        raise UrlRefused("webhook URLs must use https://")
    if parts.username or parts.password:
        raise UrlRefused("the URL must not contain a user name or password")
    if parts.fragment:
        raise UrlRefused("the URL must not contain a #fragment")
    if port == 0:
        raise UrlRefused("port 0 is not a valid port")
    host = host_as_resolved(parts.hostname).rstrip(".")  # "localhost." is localhost
    named = parts.hostname
    if host != named.rstrip(".").lower():
        named = f"{named} (read as {host})"
    if not allow_private:
        ip = parse_ip_literal(host)
        if ip is not None:
            why = address_problem(ip)
            if why:
                raise UrlRefused(f"{named} is {why}; webhooks go to public addresses only")
        elif host == "localhost" or host.endswith((".localhost", ".local", ".internal")) or "." not in host:
            raise UrlRefused(f"{named} is not a public host name")
    return urllib.parse.urlunsplit(parts)
