"""Safe egress: every outbound request is checked before it leaves and capped when it returns.

* Scheme: https only; plain http only to a loopback host, and only when `allow_plain_http` is set.
* Addresses: after DNS resolution (and for IP literals, which skip the resolver), loopback, private,
  link-local, multicast, reserved and cloud-metadata addresses are refused unless
  `allow_private_addresses` is set. Checking the resolved address, not the name, defeats DNS tricks.
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

from relay.exceptions import ResponseTooLarge, RetriableAdapterError, UnsafeURL

METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)


def address_allowed(address: str, *, allow_private: bool) -> bool:
    """True if an outbound connection to this IP address is allowed."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES:
        return False
    if allow_private:
        return not (ip.is_multicast or ip.is_unspecified)
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
    if parsed.scheme not in ("https", "http") or not host:
        raise UnsafeURL(f"{url!r}: must be an absolute https URL")
    if parsed.scheme == "http" and not (allow_plain_http and is_loopback_host(host)):
        raise UnsafeURL(f"{url!r}: plain http is only allowed to loopback with allow_plain_http")
    if parsed.user or parsed.password:
        raise UnsafeURL(f"{url!r}: credentials in URLs are not allowed; use the adapter's secret keys")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return
    if not address_allowed(host, allow_private=allow_private):
        raise UnsafeURL(f"{url!r}: address not allowed (set egress.allow_private_addresses)")


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

    async def middleware(request: aiohttp.ClientRequest, handler: Any) -> aiohttp.ClientResponse:
        check_url(str(request.url), allow_plain_http=allow_plain_http, allow_private=allow_private)
        response: aiohttp.ClientResponse = await handler(request)
        if 300 <= response.status < 400:
            # Raised here, not returned, so the session can never follow it whatever the caller asked.
            location = response.headers.get("Location", "")
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
