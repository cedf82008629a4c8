"""The address guard: the ranges it refuses, its verdict cache, and addresses pinned from the check to the
connection (a rebinding DNS answer never reaches a refused address), against real loopback servers."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from tests.connectors.site import Site, html, serve
from tests.connectors.test_web import crawl
from worker.connectors.base import ConnectorContext
from worker.connectors.web.connector import WebConfig, WebConnector
from worker.connectors.web.fetch import Fetcher, Politeness, pinned_client
from worker.connectors.web.ssrf import AddressGuard, PinnedResolver, Resolver, forbidden_reason
from worker.errors import BlockedAddress

#: The guard's first answer for a name: an address the tests allow (allowed_networks = 127.0.0.2/32 only).
ALLOWED = "127.0.0.2"
#: Every later answer, and what the system resolver says ``localhost`` is: refused (loopback).
REFUSED = "127.0.0.1"


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("fec0::1", "site-local"),
        ("fef0::abcd", "site-local"),
        ("feff:ffff::1", "site-local"),
        ("168.63.129.16", "Azure wire server"),
        ("::ffff:168.63.129.16", "Azure wire server"),  # judged by the IPv4 address it carries
        ("64:ff9b::a83f:8110", "Azure wire server"),  # NAT64 of 168.63.129.16
    ],
)
def test_site_local_and_the_azure_wire_server_are_refused(address: str, reason: str) -> None:
    """Two ranges the standard library calls global are refused."""
    found = forbidden_reason(ipaddress.ip_address(address))
    assert found is not None
    assert reason in found


@pytest.mark.parametrize("address", ["168.63.129.15", "168.63.129.17", "2606:4700::1", "8.8.8.8"])
def test_their_global_neighbours_stay_allowed(address: str) -> None:
    """The new ranges are exact: neighbouring global addresses pass."""
    assert forbidden_reason(ipaddress.ip_address(address)) is None


def rebinding(calls: list[str], first: str = ALLOWED, later: str = REFUSED) -> Resolver:
    """A DNS server that rebinds: its first answer is ``first``, every later one ``later``."""

    async def resolve(host: str, _: int) -> list[str]:
        calls.append(host)
        return [first if len(calls) == 1 else later]

    return resolve


async def test_a_verdict_is_reused_with_the_addresses_it_checked() -> None:
    """Within cache_s the guard answers from its verdict: the addresses it checked, never a new answer."""
    calls: list[str] = []
    guard = AddressGuard([f"{ALLOWED}/32"], rebinding(calls))
    assert await guard.addresses("site.test", 80) == (ALLOWED,)
    assert await guard.addresses("site.test", 80) == (ALLOWED,)
    await guard.check("http://site.test/page")
    assert calls == ["site.test"]


async def test_an_expired_verdict_checks_the_new_answer() -> None:
    """Once the verdict expires the new answer is checked like the first: a rebinding to loopback is refused."""
    calls: list[str] = []
    guard = AddressGuard([f"{ALLOWED}/32"], rebinding(calls), cache_s=0)
    assert await guard.addresses("site.test", 80) == (ALLOWED,)
    with pytest.raises(BlockedAddress, match=r"refused site\.test \(127\.0\.0\.1\): loopback"):
        await guard.addresses("site.test", 80)


async def test_a_refused_verdict_is_reused_too() -> None:
    """A refused host is not asked again within cache_s (and a later harmless answer does not unblock it)."""
    calls: list[str] = []
    guard = AddressGuard([f"{ALLOWED}/32"], rebinding(calls, first=REFUSED, later=ALLOWED))
    for _ in range(2):
        with pytest.raises(BlockedAddress, match="loopback"):
            await guard.addresses("site.test", 80)
    assert calls == ["site.test"]


async def test_the_pinned_resolver_hands_aiohttp_only_checked_addresses() -> None:
    """aiohttp gets the guard's addresses as numeric results (of the family it asks for), or BlockedAddress."""

    async def two(host: str, _: int) -> list[str]:
        return {"dual.test": [ALLOWED, "::1"], "bad.test": [ALLOWED, REFUSED]}[host]

    resolver = PinnedResolver(AddressGuard([f"{ALLOWED}/32", "::1/128"], two))
    results = await resolver.resolve("dual.test", 8080, socket.AF_UNSPEC)
    assert [(r["host"], r["port"], r["family"]) for r in results] == [
        (ALLOWED, 8080, socket.AF_INET),
        ("::1", 8080, socket.AF_INET6),
    ]
    assert all(r["hostname"] == "dual.test" and r["flags"] & socket.AI_NUMERICHOST for r in results)
    assert [r["host"] for r in await resolver.resolve("dual.test", 8080, socket.AF_INET6)] == ["::1"]
    with pytest.raises(BlockedAddress, match=r"127\.0\.0\.1"):  # one refused address refuses the host
        await resolver.resolve("bad.test", 8080, socket.AF_UNSPEC)


@contextmanager
def twins(allowed: Site, internal: Site) -> Iterator[int]:
    """``allowed`` on 127.0.0.2 and ``internal`` on 127.0.0.1, on one port (which ``localhost:<port>`` names)."""
    for _ in range(20):
        with ExitStack() as stack:
            stack.enter_context(serve(allowed, host=ALLOWED))
            port = int(allowed.base.rsplit(":", 1)[1])
            try:
                stack.enter_context(serve(internal, host=REFUSED, port=port))
            except OSError:  # that port is taken on 127.0.0.1: try another
                continue
            yield port
            return
    raise RuntimeError("no port free on both 127.0.0.1 and 127.0.0.2")


def internal_site() -> Site:
    """The address a crawl must never reach: it answers every path."""
    return Site(fallback=lambda path: html("internal", body=path))


async def test_a_crawl_connects_only_to_the_addresses_the_guard_checked(tmp_path: Path) -> None:
    """The guard resolves localhost to 127.0.0.2 (allowed); the system would say 127.0.0.1 (refused). robots.txt,
    every page and every redirect hop go to 127.0.0.2, none to 127.0.0.1, and the name is resolved once."""
    allowed, internal = Site(), internal_site()
    allowed.routes["/"] = html("Home", links=("/a", "/moved"))
    allowed.routes["/a"] = html("A")
    allowed.routes["/moved"] = (302, {"Location": "/b"}, b"")
    allowed.routes["/b"] = html("B")
    calls: list[str] = []
    with twins(allowed, internal) as port:
        conn = WebConnector(
            WebConfig(start_urls=[f"http://localhost:{port}/"], allowed_networks=[f"{ALLOWED}/32"], timeout_s=5),
            ConnectorContext(connector_id="pin", org_id="o", data_dir=tmp_path, resolver=rebinding(calls)),
        )
        _, docs, failures, _ = await crawl(conn.config, tmp_path, connector=conn)
    assert internal.log == [], "a request reached the refused address"
    assert sorted(allowed.log) == ["/", "/a", "/b", "/moved", "/robots.txt"]
    assert sorted(doc.title or "" for doc in docs) == ["A", "B", "Home"]
    assert failures == []
    assert calls == ["localhost"]


async def test_an_answer_that_changes_after_the_check_is_refused_before_connecting() -> None:
    """The verdict expires between the guard's check (127.0.0.2) and the connection; the connection asks the guard
    again, gets 127.0.0.1, and no connection is made to either address."""
    allowed, internal = Site(), internal_site()
    allowed.routes["/"] = html("Home")
    calls: list[str] = []
    guard = AddressGuard([f"{ALLOWED}/32"], rebinding(calls), cache_s=0)
    with twins(allowed, internal) as port:
        async with pinned_client(guard, "test") as client:
            fetcher = Fetcher(client, guard, Politeness(retries=0, timeout_s=5))
            with pytest.raises(BlockedAddress, match=r"refused localhost \(127\.0\.0\.1\): loopback"):
                await fetcher.get(f"http://localhost:{port}/")
    assert calls == ["localhost", "localhost"]  # the check, then the connection
    assert internal.log == []
    assert allowed.log == []


async def test_a_page_whose_host_rebinds_is_skipped_as_a_refused_address(tmp_path: Path) -> None:
    """In a crawl whose guard forgets at once, the start page is fetched from 127.0.0.2; its link, whose host name
    now answers 127.0.0.1, is skipped as blocked:address with a failure naming the refused address."""
    allowed, internal = Site(), internal_site()
    allowed.routes["/"] = html("Home", links=("/a",))
    allowed.routes["/a"] = html("A")

    async def resolver(host: str, _: int) -> list[str]:
        return [REFUSED if allowed.log else ALLOWED]  # rebinds once the first page was served

    with twins(allowed, internal) as port, pytest.MonkeyPatch.context() as patch:
        patch.setattr(AddressGuard, "CACHE_S", 0.0)
        conn = WebConnector(
            WebConfig(
                start_urls=[f"http://localhost:{port}/"],
                allowed_networks=[f"{ALLOWED}/32"],
                obey_robots=False,
                timeout_s=5,
            ),
            ConnectorContext(connector_id="pin", org_id="o", data_dir=tmp_path, resolver=resolver),
        )
        _, docs, failures, stats = await crawl(conn.config, tmp_path, connector=conn)
    assert internal.log == []
    assert allowed.log == ["/"]
    assert [doc.title for doc in docs] == ["Home"]
    assert [f.source for f in failures] == [f"http://localhost:{port}/a"]
    assert "refused localhost (127.0.0.1): loopback" in failures[0].reason
    assert stats["skipped_blocked"] == 1
