"""Client IP addresses as text: parsing what proxies write, and the bucket a per-address limit counts in."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, IPv6Network, ip_address

Address = IPv4Address | IPv6Address

# One IPv6 subscriber is usually given a whole /64 (RFC 6177): counting per address would give an attacker
# 2^64 fresh budgets, so a per-address limit counts per /64.
IPV6_BUCKET_PREFIX = 64


def parse(text: str) -> Address | None:
    """An address as a proxy or socket writes it (``1.2.3.4``, ``1.2.3.4:5678``, ``[2001:db8::1]:443``,
    ``::ffff:1.2.3.4``), or None. IPv4-mapped IPv6 becomes IPv4, so one client has one spelling."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        found = ip_address(text)
    except ValueError:
        return None
    if isinstance(found, IPv6Address):
        if found.ipv4_mapped is not None:
            return found.ipv4_mapped
        if found.scope_id is not None:  # fe80::1%eth0: the zone says nothing about who the client is
            return IPv6Address(found.packed)
    return found


def bucket(address: str) -> str:
    """What a per-address limit counts: the address itself for IPv4, its /64 for IPv6."""
    found = parse(address)
    if isinstance(found, IPv6Address):
        return str(IPv6Network((found, IPV6_BUCKET_PREFIX), strict=False))
    return str(found) if found is not None else address
