"""Which URLs the bot may fetch or reply to, and a DNS resolver that never hands out a private address.

A URL from a chat message is chosen by whoever sent it. Outside the local (Emulator) mode, a Teams file must come
over https from a host Teams hands files from (SharePoint, OneDrive), and the address that name resolves to must be
public: a name on the allow-list that resolves to 127.0.0.1, 10.x or 169.254.169.254 (cloud metadata) is refused.
The check is made by the resolver the connection itself uses, so a second DNS answer cannot slip past it.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(host: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_loopback_host(host: str) -> bool:
    """`localhost` or a loopback address (127.0.0.0/8, ::1)."""
    name = host.strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    address = _address(name)
    return address is not None and address.is_loopback


def is_loopback_url(url: str) -> bool:
    """An http(s) URL whose host is loopback."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and is_loopback_host(parts.hostname or "")


def is_public_address(address: IPAddress) -> bool:
    """Routable on the internet: not private, loopback, link-local, multicast, reserved or unspecified."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not (address.is_multicast or address.is_reserved or address.is_unspecified)


def host_matches(host: str, patterns: tuple[str, ...]) -> bool:
    """`*.example.com` matches subdomains of example.com (not example.com itself); other patterns match exactly."""
    name = host.lower().rstrip(".")
    for pattern in patterns:
        pattern = pattern.lower().strip()
        if pattern.startswith("*.") and name.endswith(pattern[1:]) and len(name) > len(pattern) - 1:
            return True
        if name == pattern:
            return True
    return False


def parse_hosts(setting: str) -> tuple[str, ...]:
    return tuple(h.strip().lower() for h in setting.split(",") if h.strip())


@dataclass(frozen=True)
class UrlPolicy:
    """What a fetched URL (and every redirect it leads to) must be."""

    schemes: frozenset[str]
    hosts: tuple[str, ...]
    """Allowed host patterns; empty: any host."""
    public_only: bool
    """Refuse private, loopback and link-local addresses (literal or after DNS resolution)."""
    loopback_only: bool = False
    """The local mode: nothing but loopback."""

    def problem(self, url: str) -> str | None:
        """Why `url` may not be fetched (None when it may, as far as can be told before resolving its host)."""
        try:
            parts = urlsplit(url)
            host = parts.hostname or ""
        except ValueError:
            return "it is not a valid URL"
        if parts.scheme not in self.schemes:
            return f"{parts.scheme or 'no'} scheme (only {', '.join(sorted(self.schemes))})"
        if not host:
            return "it names no host"
        if self.loopback_only:
            return None if is_loopback_host(host) else f"{host} is not loopback (the local mode)"
        if self.hosts and not host_matches(host, self.hosts):
            return f"{host} is not a host files are shared from"
        address = _address(host)
        if self.public_only and address is not None and not is_public_address(address):
            return f"{host} is not a public address"
        return None


def local_policy() -> UrlPolicy:
    return UrlPolicy(frozenset({"http", "https"}), (), public_only=False, loopback_only=True)


def teams_download_policy(hosts: str) -> UrlPolicy:
    return UrlPolicy(frozenset({"https"}), parse_hosts(hosts), public_only=True)


class PublicResolver(AbstractResolver):
    """Resolves like aiohttp's default resolver, then drops every non-public address (refusing when none is left)."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        public = [r for r in results if (a := _address(r["host"])) is not None and is_public_address(a)]
        if not public:
            raise OSError(f"{host} resolves only to private, loopback or link-local addresses")
        return public

    async def close(self) -> None:
        await self._inner.close()


__all__ = [
    "PublicResolver",
    "UrlPolicy",
    "host_matches",
    "is_loopback_host",
    "is_loopback_url",
    "is_public_address",
    "local_policy",
    "parse_hosts",
    "teams_download_policy",
]
