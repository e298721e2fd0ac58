"""The proxy adds no Date or Server header that Keycloak did not send (Keycloak sends neither)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from sidecar.core.exchange import PASS_THROUGH, CapturePlan, RequestHead
from sidecar.proxy.forward import HANDLER_ARGS, ProxyLimits, ReverseProxy


async def _bare_upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An HTTP/1.1 server that, like Keycloak's Vert.x, sends neither Date nor Server."""
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        if not head:
            break
        body = b'{"ok":true}'
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\nX-Up: 1\r\n\r\n"
            + body
        )
        await writer.drain()


class _CaptureAll:
    def plan(self, head: RequestHead) -> CapturePlan:
        return CapturePlan(True, True) if head.path.startswith("/captured") else PASS_THROUGH

    async def before_forward(self, request: object) -> object:
        return None

    async def after_response(self, request: object, response: object, token: object) -> None:
        return None

    async def abandoned(self, request: object, token: object, reason: str) -> None:
        return None


@pytest.fixture
async def proxy_url(unused_tcp_port_factory) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    up_port, port = unused_tcp_port_factory(), unused_tcp_port_factory()
    server = await asyncio.start_server(_bare_upstream, "127.0.0.1", up_port)
    proxy = ReverseProxy(f"http://127.0.0.1:{up_port}", _CaptureAll(), ProxyLimits())
    app = web.Application(handler_args=HANDLER_ARGS)
    proxy.add_routes(app)
    app.cleanup_ctx.append(proxy.lifespan)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("path", ["/streamed", "/captured"])
async def test_no_date_or_server_is_added(proxy_url: str, path: str) -> None:
    """Streamed and captured responses carry exactly the upstream's headers: no Date, no Server added."""
    async with aiohttp.ClientSession() as http, http.get(proxy_url + path) as resp:
        assert resp.status == 200 and await resp.read() == b'{"ok":true}'
        assert "Date" not in resp.headers and "Server" not in resp.headers
        assert resp.headers["X-Up"] == "1"
