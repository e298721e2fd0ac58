"""Header hygiene: forwarding headers come from the real connection, hop-by-hop headers stop at the proxy."""

from __future__ import annotations

import aiohttp
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict

from tests.proxy.conftest import ProxyFactory, seen

SPOOFED = {
    "X-Forwarded-For": "6.6.6.6, 7.7.7.7",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "evil.example",
    "X-Forwarded-Port": "1",
    "X-Forwarded-Prefix": "/evil",
    "Forwarded": "for=6.6.6.6;proto=https;host=evil.example",
    "X-Real-IP": "6.6.6.6",
}


def _upstream_headers(upstream: TestServer) -> CIMultiDict[str]:
    (request,) = seen(upstream)
    return CIMultiDict(request.headers)


async def test_spoofed_forwarding_headers_are_replaced(
    make_proxy: ProxyFactory, upstream: TestServer, session: aiohttp.ClientSession
) -> None:
    """Client-sent X-Forwarded-*, Forwarded and X-Real-IP never reach Keycloak; the real values do, once."""
    proxy = await make_proxy()
    headers = {**SPOOFED, "Host": "auth.example.org:8443"}
    async with session.get(proxy.make_url("/headers"), headers=headers) as resp:
        assert resp.status == 200
    got = _upstream_headers(upstream)
    assert got.getall("X-Forwarded-For") == ["127.0.0.1"]
    assert got.getall("X-Forwarded-Proto") == ["http"]
    assert got.getall("X-Forwarded-Host") == ["auth.example.org:8443"]
    assert got.getall("X-Forwarded-Port") == ["8443"]
    assert got.getall("Host") == ["auth.example.org:8443"]
    for name in ("Forwarded", "X-Real-IP", "X-Forwarded-Prefix"):
        assert name not in got
    assert "6.6.6.6" not in repr(list(got.items()))
    assert "evil" not in repr(list(got.items()))


async def test_forwarded_port_falls_back_to_the_listening_port(
    make_proxy: ProxyFactory, upstream: TestServer, session: aiohttp.ClientSession
) -> None:
    """Without a port in Host, X-Forwarded-Port is the port the client connected to."""
    proxy = await make_proxy()
    async with session.get(proxy.make_url("/headers"), headers={"Host": "auth.example.org"}):
        pass
    got = _upstream_headers(upstream)
    assert got.getall("X-Forwarded-Port") == [str(proxy.port)]
    assert got.getall("X-Forwarded-Host") == ["auth.example.org"]


async def test_ipv6_host_port_is_parsed(
    make_proxy: ProxyFactory, upstream: TestServer, session: aiohttp.ClientSession
) -> None:
    """A bracketed IPv6 Host keeps its port for X-Forwarded-Port."""
    proxy = await make_proxy()
    async with session.get(proxy.make_url("/headers"), headers={"Host": "[::1]:9443"}):
        pass
    assert _upstream_headers(upstream).getall("X-Forwarded-Port") == ["9443"]


async def test_hop_by_hop_request_headers_are_stripped(
    make_proxy: ProxyFactory, upstream: TestServer, session: aiohttp.ClientSession
) -> None:
    """Connection, the headers it names, and the fixed hop-by-hop set never reach Keycloak."""
    proxy = await make_proxy()
    headers = {
        "Connection": "keep-alive, X-Hop-Secret",
        "X-Hop-Secret": "do-not-forward",
        "Keep-Alive": "timeout=5",
        "TE": "trailers",
        "Trailer": "X-Checksum",
        "Proxy-Authorization": "Basic cHJveHk6c2VjcmV0",
        "Proxy-Connection": "keep-alive",
        "X-Kept": "yes",
        "Authorization": "Bearer end-to-end",
    }
    async with session.get(proxy.make_url("/headers"), headers=headers) as resp:
        assert resp.status == 200
    got = _upstream_headers(upstream)
    for name in (
        "Connection",
        "X-Hop-Secret",
        "Keep-Alive",
        "TE",
        "Trailer",
        "Proxy-Authorization",
        "Proxy-Connection",
    ):
        assert name not in got, name
    assert got["X-Kept"] == "yes"
    assert got["Authorization"] == "Bearer end-to-end"


async def test_hop_by_hop_response_headers_are_stripped(
    make_proxy: ProxyFactory, upstream: TestServer, session: aiohttp.ClientSession
) -> None:
    """Upstream's Connection-named and hop-by-hop response headers stop at the proxy; the rest pass."""
    proxy = await make_proxy()
    async with session.get(upstream.make_url("/hop")) as direct:
        assert direct.headers["X-Hop-Secret"] == "internal"  # the upstream really sends them
    async with session.get(proxy.make_url("/hop")) as resp:
        assert await resp.read() == b"hop"
        for name in ("X-Hop-Secret", "Keep-Alive", "Proxy-Authenticate", "Trailer"):
            assert name not in resp.headers, name
        assert resp.headers.get("Connection") in (None, "keep-alive")
        assert resp.headers["X-Kept"] == "yes"


async def test_proxy_adds_no_headers_to_the_response(
    make_proxy: ProxyFactory, upstream: TestServer, session: aiohttp.ClientSession
) -> None:
    """The proxied response carries exactly the upstream's header names: no request id, no Via."""
    proxy = await make_proxy()
    async with session.get(upstream.make_url("/page")) as direct:
        direct_names = [k.lower() for k in direct.headers]
    async with session.get(proxy.make_url("/page")) as resp:
        assert [k.lower() for k in resp.headers] == direct_names
        assert "x-request-id" not in resp.headers
        assert "via" not in resp.headers


async def test_no_auto_headers_are_added_upstream(make_proxy: ProxyFactory, upstream: TestServer) -> None:
    """A request without Accept, Accept-Encoding or User-Agent reaches Keycloak without them too."""
    proxy = await make_proxy()
    skip = ("Accept", "Accept-Encoding", "User-Agent")
    async with aiohttp.ClientSession(skip_auto_headers=skip) as bare, bare.get(proxy.make_url("/headers")):
        pass
    got = _upstream_headers(upstream)
    for name in skip:
        assert name not in got, name
