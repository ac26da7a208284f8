"""Safe egress: every outbound request is checked before it leaves and capped when it returns.

* Scheme: https only; plain http only to a loopback host, and only when `allow_plain_http` is set.
* Addresses: after DNS resolution (and for IP literals, which skip the resolver), loopback, private,
  link-local, multicast and reserved addresses are refused unless `allow_private_addresses` is set;
  cloud-metadata endpoints always. IPv6 forms that embed an IPv4 address (mapped, compatible, NAT64,
  6to4) are judged by that address. Checking the resolved address, not the name, defeats DNS tricks.
* Redirects are never followed (`allow_redirects=False` is forced).
* Response bodies larger than `max_response_bytes` are refused (`ResponseTooLarge`, retriable later).
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from relay.exceptions import ResponseTooLarge, RetriableAdapterError, UnsafeURL, scrub

METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, ... instance metadata
        "169.254.170.2",  # AWS ECS task metadata and credentials
        "100.100.100.200",  # Alibaba Cloud metadata
        "fd00:ec2::254",  # AWS instance metadata over IPv6
    )
)
"""Cloud metadata endpoints: refused even with `allow_private_addresses` (they hand out credentials)."""

NAT64_PREFIXES = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
"""RFC 6052 well-known and RFC 8215 local-use NAT64 prefixes: the IPv4 address is the last 32 bits."""


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address reaches: IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible
    (::a.b.c.d, deprecated), NAT64 (64:ff9b::a.b.c.d, 64:ff9b:1::/48) or 6to4 (2002:AABB:CCDD::/48)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    value = int(ip)
    if any(ip in net for net in NAT64_PREFIXES) or (value >> 32 == 0 and value > 1):  # not :: or ::1
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    return None


def address_allowed(address: str, *, allow_private: bool) -> bool:
    """True if an outbound connection to this IP address is allowed.

    An IPv6 address that embeds an IPv4 one (`embedded_ipv4`) is judged by that IPv4 address, and both
    must pass: a NAT64 or 6to4 form of 10.0.0.1 or 169.254.169.254 is as private as the address itself.
    """
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(address.split("%", 1)[0])
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address) and (v4 := embedded_ipv4(ip)) is not None:
        candidates = [v4] if ip.ipv4_mapped is not None else [ip, v4]
    return all(_allowed(c, allow_private=allow_private) for c in candidates)


def _allowed(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, *, allow_private: bool) -> bool:
    if ip in METADATA_ADDRESSES:
        return False
    if allow_private:
        return not (ip.is_multicast or ip.is_unspecified)
    if isinstance(ip, ipaddress.IPv6Address) and (
        any(ip in net for net in NAT64_PREFIXES) or ip.sixtofour is not None
    ):
        return True  # the translation prefix itself is not private; the embedded IPv4 is judged
    return ip.is_global


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, *, allow_plain_http: bool, allow_private: bool) -> None:
    """Raise `UnsafeURL` if a configured URL can never be used under the egress policy."""
    parsed = URL(url)
    host = parsed.host or ""
    # Messages quote the URL without its userinfo or query string (scrubbed only for a message: every
    # outbound request is checked here).
    if parsed.scheme not in ("https", "http") or not host:
        raise UnsafeURL(f"{scrub(url)!r}: must be an absolute https URL")
    if parsed.scheme == "http" and not (allow_plain_http and is_loopback_host(host)):
        raise UnsafeURL(f"{scrub(url)!r}: plain http is only allowed to loopback with allow_plain_http")
    if parsed.user or parsed.password:
        raise UnsafeURL(f"{scrub(url)!r}: credentials in URLs are not allowed; use the adapter's secret keys")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return
    if not address_allowed(host, allow_private=allow_private):
        raise UnsafeURL(f"{scrub(url)!r}: address not allowed (set egress.allow_private_addresses)")


class SafeResolver(AbstractResolver):
    """Resolves names, then refuses any address the policy forbids."""

    def __init__(self, *, allow_private: bool) -> None:
        self._allow_private = allow_private
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed = [r for r in results if address_allowed(r["host"], allow_private=self._allow_private)]
        if not allowed:
            raise UnsafeURL(f"{host!r} resolves only to addresses the egress policy forbids")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def egress_middleware(*, allow_plain_http: bool, allow_private: bool, max_response_bytes: int) -> Any:
    """An aiohttp client middleware enforcing scheme, IP-literal, redirect and body-size rules."""

    # (scheme, host, user, password) of URLs that passed `check_url`, all it depends on: a session talks
    # to one or two peers, so each is checked once, not on every request (~50 µs each; issue 15).
    passed: set[tuple[str, str | None, str | None, str | None]] = set()

    async def middleware(request: aiohttp.ClientRequest, handler: Any) -> aiohttp.ClientResponse:
        url = request.url
        origin = (url.scheme, url.host, url.user, url.password)
        if origin not in passed:
            check_url(str(url), allow_plain_http=allow_plain_http, allow_private=allow_private)
            if len(passed) >= 64:
                passed.clear()
            passed.add(origin)
        response: aiohttp.ClientResponse = await handler(request)
        if 300 <= response.status < 400:
            # Raised here, not returned, so the session can never follow it whatever the caller asked.
            location = scrub(response.headers.get("Location", ""))
            response.close()
            raise RetriableAdapterError(
                f"HTTP {response.status}: redirect to {location!r} not followed", status=response.status
            )
        declared = response.content_length
        if declared is not None and declared > max_response_bytes:
            response.close()
            raise ResponseTooLarge(f"response of {declared} bytes exceeds the {max_response_bytes}-byte cap")
        chunks: list[bytes] = []
        size = 0
        while chunk := await response.content.read(65536):  # read(n) returns what has arrived, <= n
            size += len(chunk)
            if size > max_response_bytes:
                response.close()
                raise ResponseTooLarge(f"response exceeds the {max_response_bytes}-byte cap")
            chunks.append(chunk)
        body = b"".join(chunks)
        # aiohttp serves read()/json()/text() from _body once set; the cap needs the body read here.
        response._body = body
        return response

    return middleware
