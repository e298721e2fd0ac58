"""The proxy keeps no cookie jar: a cookie Keycloak sets for one client never reaches another."""

from __future__ import annotations

import aiohttp
from aiohttp.test_utils import TestServer

from tests.proxy.conftest import ProxyFactory, seen


async def test_no_cookie_leaks_between_clients(make_proxy: ProxyFactory, upstream: TestServer) -> None:
    """Alice's session cookie goes back only to Alice; Bob, on the same proxy, never sees it."""
    proxy = await make_proxy()
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as alice,
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as bob,
    ):
        async with alice.get(proxy.make_url("/cookie/set"), params={"v": "alice-session"}) as resp:
            assert resp.headers["Set-Cookie"] == "KEYCLOAK_IDENTITY=alice-session; Path=/"
        async with bob.get(proxy.make_url("/cookie/echo")) as resp:
            assert await resp.text() == "<none>"
        async with alice.get(proxy.make_url("/cookie/echo")) as resp:
            assert await resp.text() == "KEYCLOAK_IDENTITY=alice-session"
        async with bob.get(proxy.make_url("/cookie/set"), params={"v": "bob-session"}) as resp:
            assert resp.status == 200
        async with alice.get(proxy.make_url("/cookie/echo")) as resp:
            assert await resp.text() == "KEYCLOAK_IDENTITY=alice-session"
        async with bob.get(proxy.make_url("/cookie/echo")) as resp:
            assert await resp.text() == "KEYCLOAK_IDENTITY=bob-session"
    cookies = [dict(s.headers).get("Cookie") for s in seen(upstream)]
    assert cookies == [
        None,
        None,
        "KEYCLOAK_IDENTITY=alice-session",
        None,
        "KEYCLOAK_IDENTITY=alice-session",
        "KEYCLOAK_IDENTITY=bob-session",
    ]


async def test_cookie_header_passes_verbatim(
    make_proxy: ProxyFactory, upstream: TestServer, session: aiohttp.ClientSession
) -> None:
    """A Cookie header with several, oddly formed cookies reaches Keycloak byte for byte."""
    proxy = await make_proxy()
    raw = 'AUTH_SESSION_ID=YWJj.ZGVm; KC_RESTART="a,b"; KEYCLOAK_SESSION=a%2Fb+c==;flag'
    async with session.get(proxy.make_url("/cookie/echo"), headers={"Cookie": raw}) as resp:
        assert await resp.text() == raw
    assert [v for k, v in seen(upstream)[0].headers if k.lower() == "cookie"] == [raw]
