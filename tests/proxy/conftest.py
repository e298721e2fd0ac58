"""A fake Keycloak upstream, a proxy factory and a raw client, shared by the proxy tests.

The upstream records every request it receives (method, raw target, headers, body), so
tests can prove what Keycloak saw, or that it saw nothing.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict

from sidecar.proxy.forward import HANDLER_ARGS, NO_HOOKS, CaptureHooks, ProxyLimits, ReverseProxy


@dataclass(frozen=True)
class Seen:
    """One request as the upstream received it."""

    method: str
    raw_path: str
    headers: list[tuple[str, str]]
    body: bytes
    remote: str | None


SEEN = web.AppKey("seen", list[Seen])
DRIP_STOPPED = web.AppKey("drip_stopped", asyncio.Event)

BIG = bytes(range(256)) * (5 * 1024 * 1024 // 256)  # 5 MiB
PAGE = ("<html><body>" + "login form " * 400 + "</body></html>").encode()
GZIPPED_JSON = gzip.compress(b'{"access_token":"eyJ.fake.token","token_type":"Bearer"}')
REDIRECT_HEADERS = [
    ("Location", "https://app.example/cb?state=xyz&session_state=s1&code=abc.def.ghi"),
    (
        "Set-Cookie",
        "AUTH_SESSION_ID=YWJj.ZGVm; Version=1; Path=/realms/test/; SameSite=None; Secure; HttpOnly",
    ),
    (
        "Set-Cookie",
        'KC_RESTART=""; Version=1; Expires=Thu, 01-Jan-1970 00:00:10 GMT; Max-Age=0; Path=/realms/test/',
    ),
    ("Set-Cookie", "KEYCLOAK_SESSION=a%2Fb+c==; Version=1; Path=/realms/test/; Max-Age=36000"),
]
LARGE = b"0123456789abcdef" * 200  # 3200 bytes


@web.middleware
async def _record(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    body = await request.read()
    request.app[SEEN].append(
        Seen(request.method, request.raw_path, list(request.headers.items()), body, request.remote)
    )
    return await handler(request)


async def _echo(request: web.Request) -> web.Response:
    resp = web.Response(body=await request.read(), headers={"X-Echo-Method": request.method})
    if "Content-Type" in request.headers:
        resp.headers["Content-Type"] = request.headers["Content-Type"]
    return resp


async def _target(request: web.Request) -> web.Response:
    return web.json_response({"raw_path": request.raw_path, "path": request.path, "query": list(request.query.items())})


async def _page(request: web.Request) -> web.Response:
    return web.Response(body=PAGE, content_type="text/html", charset="utf-8")


async def _redirect(request: web.Request) -> web.Response:
    return web.Response(status=302, headers=CIMultiDict(REDIRECT_HEADERS))


async def _no_content(request: web.Request) -> web.Response:
    return web.Response(status=204, headers={"X-Kept": "yes"})


async def _not_modified(request: web.Request) -> web.Response:
    return web.Response(status=304, headers={"ETag": '"v1"'})


async def _missing(request: web.Request) -> web.Response:
    return web.json_response({"error": "User not found"}, status=404)


async def _gzipped(request: web.Request) -> web.Response:
    return web.Response(body=GZIPPED_JSON, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})


async def _big_echo(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    resp = web.StreamResponse()  # no length: chunked
    resp.content_type = "application/octet-stream"
    await resp.prepare(request)
    for i in range(0, len(body), 256 * 1024):
        await resp.write(body[i : i + 256 * 1024])
    await resp.write_eof()
    return resp


async def _big_download(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    resp.content_length = len(BIG)
    resp.content_type = "application/octet-stream"
    await resp.prepare(request)
    for i in range(0, len(BIG), 256 * 1024):
        await resp.write(BIG[i : i + 256 * 1024])
    await resp.write_eof()
    return resp


async def _large(request: web.Request) -> web.Response:
    return web.Response(body=LARGE, content_type="text/plain")


async def _headers(request: web.Request) -> web.Response:
    return web.json_response({"headers": list(request.headers.items()), "remote": request.remote})


async def _hop(request: web.Request) -> web.Response:
    return web.Response(
        text="hop",
        headers=CIMultiDict(
            [
                ("Connection", "X-Hop-Secret"),
                ("X-Hop-Secret", "internal"),
                ("Keep-Alive", "timeout=5"),
                ("Proxy-Authenticate", 'Basic realm="internal"'),
                ("Trailer", "X-Checksum"),
                ("X-Kept", "yes"),
            ]
        ),
    )


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(1.0)
    return web.Response(text="late")


async def _drip(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    resp.content_type = "application/octet-stream"
    await resp.prepare(request)
    try:
        for _ in range(1000):  # ~10 s at most, in case nobody hangs up
            await resp.write(b"x" * 1024)
            await asyncio.sleep(0.01)
    except ConnectionError:
        pass
    finally:
        request.app[DRIP_STOPPED].set()
    return resp


async def _cut(request: web.Request) -> web.StreamResponse:
    declared = int(request.query.get("size", "1000"))
    resp = web.StreamResponse(headers={"Content-Length": str(declared)})
    await resp.prepare(request)
    await resp.write(b"y" * (declared // 10))
    assert request.transport is not None
    request.transport.close()  # dies 90% short
    return resp


async def _cookie_set(request: web.Request) -> web.Response:
    resp = web.Response(text="set")
    resp.headers.add("Set-Cookie", f"KEYCLOAK_IDENTITY={request.query['v']}; Path=/")
    return resp


async def _cookie_echo(request: web.Request) -> web.Response:
    return web.Response(text=request.headers.get("Cookie", "<none>"))


async def _login(request: web.Request) -> web.Response:
    form = await request.post()
    body = gzip.compress(f'{{"user":"{form.get("username", "")}","outcome":"ok"}}'.encode())
    resp = web.Response(body=body, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    resp.headers.add("Set-Cookie", "KEYCLOAK_IDENTITY=eyJ.id.sig; Path=/realms/test/; HttpOnly")
    return resp


def make_upstream() -> web.Application:
    """A stand-in for Keycloak with one route per behaviour under test."""
    # Bodies are recorded as they arrived on the wire (no gzip inflation): what Keycloak's socket would get.
    app = web.Application(
        middlewares=[_record], client_max_size=16 * 1024 * 1024, handler_args={"auto_decompress": False}
    )
    app[SEEN] = []
    app[DRIP_STOPPED] = asyncio.Event()
    app.router.add_route("*", "/echo", _echo)
    app.router.add_get("/page", _page)
    app.router.add_get("/redirect", _redirect)
    app.router.add_get("/no-content", _no_content)
    app.router.add_get("/not-modified", _not_modified)
    app.router.add_get("/missing", _missing)
    app.router.add_get("/gzip", _gzipped)
    app.router.add_post("/big", _big_echo)
    app.router.add_get("/big", _big_download)
    app.router.add_get("/large", _large)
    app.router.add_get("/headers", _headers)
    app.router.add_get("/hop", _hop)
    app.router.add_get("/slow", _slow)
    app.router.add_get("/drip", _drip)
    app.router.add_get("/cut", _cut)
    app.router.add_get("/cookie/set", _cookie_set)
    app.router.add_get("/cookie/echo", _cookie_echo)
    app.router.add_post("/realms/test/login-actions/authenticate", _login)
    app.router.add_route("*", "/{tail:.*}", _target)
    return app


@pytest.fixture
async def upstream(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> TestServer:
    """The fake Keycloak, listening on loopback."""
    return await aiohttp_server(make_upstream())


ProxyFactory = Callable[..., Awaitable[TestServer]]


@pytest.fixture
def make_proxy(aiohttp_server: Callable[..., Awaitable[TestServer]], upstream: TestServer) -> ProxyFactory:
    """Start a proxy in front of ``upstream`` (or another URL) with the given hooks and limits."""

    async def go(
        hooks: CaptureHooks = NO_HOOKS,
        limits: ProxyLimits | None = None,
        upstream_url: str | None = None,
    ) -> TestServer:
        proxy = ReverseProxy(upstream_url or str(upstream.make_url("/")), hooks, limits or ProxyLimits())
        app = web.Application(handler_args=HANDLER_ARGS)
        proxy.add_routes(app)
        app.cleanup_ctx.append(proxy.lifespan)
        return await aiohttp_server(app)

    return go


def new_session() -> aiohttp.ClientSession:
    """A client that shows bytes as sent: no decompression, no cookie jar."""
    return aiohttp.ClientSession(auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar())


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A raw client session, closed after the test."""
    async with new_session() as s:
        yield s


def seen(server: TestServer) -> list[Seen]:
    """What the upstream behind ``server`` has received so far."""
    return server.app[SEEN]
