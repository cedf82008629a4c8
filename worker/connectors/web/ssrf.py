"""The address guard: a crawl only reaches globally routable addresses, and connects to exactly those it checked.

Every request (pages, robots.txt, sitemaps, each redirect hop) is checked: the host is resolved
and *every* address it resolves to must be global in the standard library's sense
(``ipaddress``' ``is_global``: IANA's special-purpose registries, so loopback, private, link-local
and cloud metadata, shared address space 100.64.0.0/10 with Alibaba Cloud's 100.100.100.200,
benchmarking, documentation, reserved ... are all refused), not multicast, not IPv6 site-local
``fec0::/10`` and not Azure's wire server ``168.63.129.16`` (both of which the standard library calls
global), unless it falls in an allowed network. IPv6 forms that carry an IPv4 address (IPv4-mapped,
IPv4-compatible, 6to4, Teredo, NAT64 64:ff9b::/96) are judged by the IPv4 address they carry. IP
literals are checked without DNS.

Addresses are pinned: the HTTP client resolves host names only through the guard (:class:`PinnedResolver`,
given to aiohttp's ``TCPConnector``, whose own DNS cache is off), so a host is resolved once, checked, and
connected to at exactly the addresses that passed; a DNS answer that changes between the check and the
connection (rebinding) is checked again before any connection is made. A verdict is reused for
``cache_s`` (60 s) with the addresses it was given for, so a cached verdict never admits an address it did
not see. Run crawlers in a network that also blocks egress to internal ranges, for defence in depth.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult

from worker.errors import BlockedAddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the event loop's getaddrinfo)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
SHARED = ipaddress.IPv4Network("100.64.0.0/10")
#: Deprecated IPv6 site-local addresses (RFC 3879): still routed inside some networks, and global to ``ipaddress``.
SITE_LOCAL = ipaddress.IPv6Network("fec0::/10")
#: Azure's wire server (instance metadata, agent and DNS endpoints), a public address only reachable from inside.
WIRE_SERVER = ipaddress.IPv4Address("168.63.129.16")


def embedded_ipv4(address: IPAddress) -> tuple[ipaddress.IPv4Address, str] | None:
    """The IPv4 address an IPv6 address carries, and the form that carries it."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    forms = (
        ("IPv4-mapped", address.ipv4_mapped),
        ("6to4", address.sixtofour),
        ("Teredo", address.teredo[1] if address.teredo else None),
        ("NAT64", low32 if address in NAT64 else None),
        ("IPv4-compatible", low32 if 1 < int(address) < 2**32 else None),
    )
    return next(((inner, form) for form, inner in forms if inner is not None), None)


def forbidden_reason(address: IPAddress) -> str | None:
    """Why ``address`` may not be reached, or None."""
    carried = embedded_ipv4(address)
    if carried is not None:
        inner, form = carried
        reason = forbidden_reason(inner)
        return f"{reason} ({form} {inner})" if reason else None
    checks = (
        ("loopback", address.is_loopback),
        ("link-local (cloud metadata)", address.is_link_local),
        ("shared address space 100.64.0.0/10 (cloud metadata)", address in SHARED),
        ("private", address.is_private),
        ("unspecified", address.is_unspecified),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("site-local fec0::/10", address in SITE_LOCAL),
        ("Azure wire server 168.63.129.16 (cloud metadata)", address == WIRE_SERVER),
        ("not globally routable", not address.is_global),
    )
    return next((name for name, hit in checks if hit), None)


class AddressGuard:
    """Checks URLs against the rule above; ``allowed`` networks are exempt (e.g. 127.0.0.0/8 in tests)."""

    #: A host's verdict is reused this long: every page, robots.txt and redirect hop asks again.
    CACHE_S = 60.0

    def __init__(
        self, allowed: Sequence[str] = (), resolver: Resolver = system_resolver, cache_s: float | None = None
    ) -> None:
        self.allowed: list[IPNetwork] = [ipaddress.ip_network(n, strict=False) for n in allowed]
        self.resolver = resolver
        self.cache_s = self.CACHE_S if cache_s is None else cache_s
        #: (host, port) -> (expires at, the addresses that passed, or why the host was refused)
        self._verdicts: dict[tuple[str, int], tuple[float, tuple[str, ...] | str]] = {}

    def _check(self, host: str, address: str) -> None:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        carried = embedded_ipv4(ip)
        if any(ip in net or (carried is not None and carried[0] in net) for net in self.allowed):
            return
        reason = forbidden_reason(ip)
        if reason:
            shown = host if host == address else f"{host} ({address})"
            raise BlockedAddress(f"refused {shown}: {reason} address")

    async def check(self, url: str) -> None:
        """Raise BlockedAddress unless every address of ``url``'s host may be reached."""
        parts = urlsplit(url)
        await self.addresses(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))

    async def addresses(self, host: str, port: int) -> tuple[str, ...]:
        """The addresses ``host`` resolves to, every one checked; raise BlockedAddress if any is refused."""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            self._check(host, host)
            return (host,)
        now = time.monotonic()
        cached = self._verdicts.get((host, port))
        if cached is not None and cached[0] > now:
            if isinstance(cached[1], str):
                raise BlockedAddress(cached[1])
            return cached[1]
        try:
            addresses = await self._resolve_and_check(host, port)
        except BlockedAddress as exc:
            self._remember(host, port, now, str(exc))
            raise
        self._remember(host, port, now, addresses)
        return addresses

    def _remember(self, host: str, port: int, now: float, verdict: tuple[str, ...] | str) -> None:
        if self.cache_s > 0:
            self._verdicts[(host, port)] = (now + self.cache_s, verdict)

    async def _resolve_and_check(self, host: str, port: int) -> tuple[str, ...]:
        try:
            addresses = await self.resolver(host, port)
        except OSError as exc:
            raise BlockedAddress(f"cannot resolve {host}: {exc}") from exc
        if not addresses:
            raise BlockedAddress(f"{host} resolves to no address")
        for address in addresses:
            self._check(host, address)
        return tuple(addresses)


class PinnedResolver(AbstractResolver):
    """aiohttp's resolver that asks the guard: a connection goes to an address the guard checked, or is
    not made (BlockedAddress)."""

    def __init__(self, guard: AddressGuard) -> None:
        self.guard = guard

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The guard's checked addresses of ``host`` (of ``family`` unless it is AF_UNSPEC)."""
        out: list[ResolveResult] = []
        for address in await self.guard.addresses(host, port):
            ip = ipaddress.ip_address(address.split("%", 1)[0])
            kind = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            if family in (socket.AF_UNSPEC, kind):
                flags = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
                out.append(
                    {"hostname": host, "host": str(ip), "port": port, "family": kind, "proto": 0, "flags": flags}
                )
        if not out:
            raise BlockedAddress(f"{host} resolves to no {family.name} address")
        return out

    async def close(self) -> None:
        """Nothing to release."""
