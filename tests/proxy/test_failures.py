"""When Keycloak or the client fails: short generic answers, precise log lines, nothing left dangling."""

from __future__ import annotations

import asyncio
import logging
import socket

import aiohttp
import pytest
from aiohttp.test_utils import TestServer, make_mocked_request

from sidecar.errors import ConfigError
from sidecar.proxy.forward import NO_HOOKS, ProxyLimits, ReverseProxy
from tests.proxy.conftest import DRIP_STOPPED, ProxyFactory
from tests.proxy.test_hooks import LOGIN, RecordingHooks


def _suspended_in(task: asyncio.Task[object], filename: str) -> bool:
    """Whether any coroutine in the task's await chain belongs to ``filename``."""
    coro: object = task.get_coro()
    while coro is not None:
        code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
        if code is not None and code.co_filename.endswith(filename):
            return True
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return False


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_upstream_down_gives_502(
    make_proxy: ProxyFactory, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """A refused upstream connection becomes 502 with a short plain body and a log line with the reason."""
    proxy = await make_proxy(upstream_url=f"http://127.0.0.1:{_closed_port()}")
    with caplog.at_level(logging.WARNING, logger="sidecar.proxy"):
        async with session.get(proxy.make_url("/realms/test/account?token=SECRET")) as resp:
            assert resp.status == 502
            assert resp.headers["Content-Type"] == "text/plain"
            assert await resp.read() == b"upstream Keycloak unreachable\n"
    (record,) = [r for r in caplog.records if r.name == "sidecar.proxy"]
    message = record.getMessage()
    assert "/realms/test/account" in message and "502" in message
    assert "ClientConnectorError" in message
    assert "SECRET" not in message


async def test_upstream_down_on_a_captured_path_gives_502(
    make_proxy: ProxyFactory, session: aiohttp.ClientSession
) -> None:
    """A captured request whose upstream is down gets 502, after before_forward; the hooks hear abandoned, not after_response."""
    hooks = RecordingHooks()
    proxy = await make_proxy(hooks, upstream_url=f"http://127.0.0.1:{_closed_port()}")
    async with session.post(proxy.make_url(LOGIN), data={"username": "alice"}) as resp:
        assert resp.status == 502
    assert len(hooks.before) == 1
    assert hooks.after == []
    assert [reason for _, _, reason in hooks.gone] == ["upstream_unreachable"]


async def test_upstream_timeout_gives_504(make_proxy: ProxyFactory, session: aiohttp.ClientSession) -> None:
    """An upstream that does not answer within the read timeout becomes 504."""
    proxy = await make_proxy(limits=ProxyLimits(upstream_read_timeout=0.1))
    async with session.get(proxy.make_url("/slow")) as resp:
        assert resp.status == 504
        assert await resp.read() == b"upstream Keycloak unreachable\n"


async def test_upstream_dying_in_a_small_body_gives_502(
    make_proxy: ProxyFactory, session: aiohttp.ClientSession
) -> None:
    """A small body is read whole before the client gets anything, so its loss is still a clean 502."""
    proxy = await make_proxy()
    async with session.get(proxy.make_url("/cut?size=1000")) as resp:
        assert resp.status == 502


async def test_upstream_dying_mid_body_cuts_the_client(
    make_proxy: ProxyFactory, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """If Keycloak dies mid-stream, the client connection is cut: a short body never looks whole."""
    proxy = await make_proxy()
    with caplog.at_level(logging.WARNING, logger="sidecar.proxy"):
        async with session.get(proxy.make_url("/cut?size=1000000")) as resp:
            assert resp.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
    assert any("mid-body" in r.getMessage() for r in caplog.records)


async def test_client_disconnect_releases_the_upstream(make_proxy: ProxyFactory, upstream: TestServer) -> None:
    """A client hanging up mid-stream makes the proxy drop its upstream connection and finish the handler."""
    proxy = await make_proxy()
    async with aiohttp.ClientSession() as client:
        resp = await client.get(proxy.make_url("/drip"))
        assert len(await resp.content.read(1024)) > 0
        assert any(_suspended_in(t, "forward.py") for t in asyncio.all_tasks()), "the check below can see handlers"
        resp.close()  # hang up with the body still flowing
    stopped = upstream.app[DRIP_STOPPED]
    await asyncio.wait_for(stopped.wait(), 5)
    # The proxy's handler has returned: no task is still suspended inside forward.py.
    for _ in range(100):
        if not any(_suspended_in(t, "forward.py") for t in asyncio.all_tasks()):
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("a proxy handler is still running after the client hung up")


async def test_many_concurrent_requests_share_the_pool(
    make_proxy: ProxyFactory, upstream: TestServer, session: aiohttp.ClientSession
) -> None:
    """Concurrent requests beyond the connection limit all complete, none dropped or mixed up."""
    proxy = await make_proxy(limits=ProxyLimits(max_connections=4))

    async def one(i: int) -> bool:
        async with session.post(proxy.make_url("/echo"), data=f"body-{i}".encode()) as resp:
            return await resp.read() == f"body-{i}".encode()

    assert all(await asyncio.gather(*(one(i) for i in range(50))))


@pytest.mark.parametrize(
    "url",
    ["ftp://kc:21", "http://", "http://kc:8080/auth", "http://kc:8080/?x=1", "kc:8080"],
)
def test_bad_upstream_url_is_a_config_error(url: str) -> None:
    """The upstream must be a bare http(s) origin; anything else stops the start with a reason."""
    with pytest.raises(ConfigError, match="upstream"):
        ReverseProxy(url, NO_HOOKS, ProxyLimits())


async def test_handle_before_start_is_a_programming_error() -> None:
    """Serving without start() fails loudly instead of sending anything upstream."""
    proxy = ReverseProxy("http://127.0.0.1:1", NO_HOOKS, ProxyLimits())
    with pytest.raises(RuntimeError, match=r"start\(\) was not called"):
        await proxy.handle(make_mocked_request("GET", "/realms/test"))
