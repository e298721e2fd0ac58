"""Hostile traffic against the proxy alone: bytes forwarded as received, bounded memory, separate pools,
an outcome for every forwarded capture, and log lines that carry no request bytes and cannot flood."""

from __future__ import annotations

import asyncio
import gzip
import logging
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer, make_mocked_request

from sidecar.proxy.forward import HANDLER_ARGS, ProxyLimits, ReverseProxy
from sidecar.proxy.logsafe import SafeRecordFilter, Throttle
from tests.proxy.conftest import seen
from tests.proxy.test_hooks import LOGIN, RecordingHooks

FORM = b"grant_type=password&username=alice&password=Pw-gz-1"


async def _start(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    upstream_url: str,
    hooks: RecordingHooks,
    limits: ProxyLimits,
) -> tuple[TestServer, ReverseProxy]:
    proxy = ReverseProxy(upstream_url, hooks, limits)
    app = web.Application(handler_args=HANDLER_ARGS)
    proxy.add_routes(app)
    app.cleanup_ctx.append(proxy.lifespan)
    return await aiohttp_server(app), proxy


# ---------------------------------------------------------------------------- byte-faithful forwarding
async def test_gzip_request_body_passes_through_byte_for_byte(
    make_proxy: Callable[..., Awaitable[TestServer]],
    upstream: TestServer,
    session: aiohttp.ClientSession,
) -> None:
    """A gzip request body on a pass-through path reaches upstream as the exact bytes and length the client sent."""
    proxy = await make_proxy(RecordingHooks())
    body = gzip.compress(FORM)
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/x-www-form-urlencoded"}
    async with session.post(proxy.make_url("/echo"), data=body, headers=headers) as resp:
        assert await resp.read() == body
    (got,) = seen(upstream)
    assert got.body == body
    sent = dict(got.headers)
    assert sent["Content-Encoding"] == "gzip" and sent["Content-Length"] == str(len(body))


@pytest.mark.parametrize(
    ("coding", "body"),
    [
        ("gzip", gzip.compress(FORM)),
        ("deflate", zlib.compress(FORM)),
        ("br", b"\x1b\x03\x00\xf8\xa5"),
        ("identity, gzip", gzip.compress(FORM)),
        ("GZIP", b"\x1f\x8b not really gzip"),
    ],
)
async def test_captured_request_with_a_content_coding_is_refused_before_upstream(
    make_proxy: Callable[..., Awaitable[TestServer]],
    upstream: TestServer,
    session: aiohttp.ClientSession,
    coding: str,
    body: bytes,
) -> None:
    """A captured request with a coded body (which Keycloak would parse raw) is refused with 415; Keycloak and the hooks see nothing."""
    hooks = RecordingHooks()
    proxy = await make_proxy(hooks)
    async with session.post(proxy.make_url(LOGIN), data=body, headers={"Content-Encoding": coding}) as resp:
        assert resp.status == 415
        assert b"content coding" in await resp.read()
    assert seen(upstream) == [] and hooks.planned and hooks.before == []


async def test_identity_coding_on_a_captured_request_is_forwarded(
    make_proxy: Callable[..., Awaitable[TestServer]],
    upstream: TestServer,
    session: aiohttp.ClientSession,
) -> None:
    """Content-Encoding: identity is no coding: the captured request goes through and capture sees the body."""
    hooks = RecordingHooks()
    proxy = await make_proxy(hooks)
    headers = {"Content-Encoding": "identity", "Content-Type": "application/x-www-form-urlencoded"}
    async with session.post(proxy.make_url(LOGIN), data=FORM, headers=headers) as resp:
        assert resp.status == 200
    assert seen(upstream)[0].body == FORM and hooks.before[0].form()["username"] == "alice"


# ---------------------------------------------------------------------------- every forwarded capture gets an ending
@pytest.mark.parametrize(
    ("url_of", "reason"),
    [
        (lambda up: "http://127.0.0.1:9", "upstream_unreachable"),
        (lambda up: str(up.make_url("/")), "upstream_timeout"),
    ],
)
async def test_no_answer_from_upstream_tells_the_hooks_abandoned(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    upstream: TestServer,
    session: aiohttp.ClientSession,
    url_of: Callable[[TestServer], str],
    reason: str,
) -> None:
    """When Keycloak gives no answer after before_forward (refused, timed out), the hooks get abandoned() with the reason, never silence."""
    hooks = RecordingHooks(prefix="/slow")
    proxy, _ = await _start(aiohttp_server, url_of(upstream), hooks, ProxyLimits(upstream_read_timeout=0.2))
    async with session.get(proxy.make_url("/slow")) as resp:
        assert resp.status in (502, 504)
    assert len(hooks.before) == 1 and hooks.after == []
    assert [g[2] for g in hooks.gone] == [reason]
    assert hooks.gone[0][1] is hooks.token


async def test_cancelled_handler_tells_the_hooks_abandoned(upstream: TestServer) -> None:
    """A handler cancelled while Keycloak is working (client gone, shutdown) still gives the hooks an ending."""
    hooks = RecordingHooks(prefix="/slow")
    proxy = ReverseProxy(str(upstream.make_url("/")), hooks, ProxyLimits())
    await proxy.start()
    try:
        task = asyncio.ensure_future(proxy.handle(make_mocked_request("GET", "/slow")))
        for _ in range(200):
            if seen(upstream):
                break
            await asyncio.sleep(0.01)
        assert hooks.before and seen(upstream), "the request reached upstream"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert [g[2] for g in hooks.gone] == ["cancelled"]
    finally:
        await proxy.close()


# ---------------------------------------------------------------------------- global capture budget
async def test_capture_budget_overflow_is_503_before_upstream_and_returns_to_zero(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    upstream: TestServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Captured bodies beyond the global byte budget get 503 + Retry-After without reaching Keycloak; the budget is whole again after."""
    hooks = RecordingHooks()
    hooks.gate = asyncio.Event()  # hold the admitted ones inside after_response
    limits = ProxyLimits(capture_budget=600 * 1024)
    proxy, rp = await _start(aiohttp_server, str(upstream.make_url("/")), hooks, limits)
    body = b"username=" + b"x" * (200 * 1024)

    async def one(s: aiohttp.ClientSession) -> tuple[int, str | None]:
        async with s.post(
            proxy.make_url(LOGIN), data=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
        ) as resp:
            await resp.read()
            return resp.status, resp.headers.get("Retry-After")

    with caplog.at_level(logging.WARNING, logger="sidecar.proxy"):
        async with aiohttp.ClientSession() as s:
            tasks = [asyncio.ensure_future(one(s)) for _ in range(12)]
            for _ in range(500):
                if len(hooks.after) + sum(t.done() for t in tasks) == len(tasks):
                    break
                await asyncio.sleep(0.01)
            held = rp.status()["capture_budget"]
            assert 0 < held["used"] <= limits.capture_budget
            hooks.gate.set()
            results = await asyncio.gather(*tasks)
    admitted = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] == 503]
    assert admitted and refused and len(admitted) + len(refused) == len(results)
    assert all(r[1] == "1" for r in refused)
    assert len(seen(upstream)) == len(admitted)  # a refused body never went upstream
    status = rp.status()["capture_budget"]
    assert status["used"] == 0 and status["peak"] <= limits.capture_budget and status["refused"] >= len(refused)
    budget_lines = [r for r in caplog.records if "capture budget" in r.getMessage()]
    assert 1 <= len(budget_lines) <= 2, "refusals are logged at most once per second"


# ---------------------------------------------------------------------------- separate upstream pools
async def test_slow_pass_through_uploads_cannot_starve_captured_requests(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    upstream: TestServer,
) -> None:
    """With the pass-through pool full of slow uploads, a captured login still gets its answer and status() names the saturated pool."""
    hooks = RecordingHooks()
    limits = ProxyLimits(max_connections=4, identity_connections=4, pool_wait_s=30)
    proxy, rp = await _start(aiohttp_server, str(upstream.make_url("/")), hooks, limits)
    release = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b"x" * 10
        await release.wait()
        yield b"y" * 10

    async def upload(s: aiohttp.ClientSession) -> int:
        async with s.post(proxy.make_url("/echo"), data=slow_body()) as resp:
            await resp.read()
            return resp.status

    async with aiohttp.ClientSession() as s:
        uploads = [asyncio.ensure_future(upload(s)) for _ in range(10)]
        for _ in range(500):
            if rp.status()["pools"]["pass_through"]["in_flight"] == 10:
                break
            await asyncio.sleep(0.01)
        assert rp.status()["saturated"] == ["pass_through"]
        async with s.post(proxy.make_url(LOGIN), data={"username": "alice"}) as resp:
            assert resp.status == 200
            assert b"alice" in await resp.read()
        release.set()
        assert await asyncio.gather(*uploads) == [200] * 10
    assert rp.status()["saturated"] == []


# ---------------------------------------------------------------------------- no request bytes in logs
SECRETS = ("eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LWJlYXJlcg.sig", "kc-identity-cookie-3141", "authcode-2718-secret")
MALFORMED = [
    # a bearer token in a header with a forbidden byte
    f"GET /realms/r/account HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SECRETS[0]}\x01\r\n\r\n",
    # an identity cookie in an over-long header
    f"GET /realms/r/account HTTP/1.1\r\nHost: x\r\nCookie: KEYCLOAK_IDENTITY={SECRETS[1]}{'A' * 70000}\r\n\r\n",
    # a code= query in a broken request line
    f"GET /realms/r/broker/cb?code={SECRETS[2]} HTTP/1.1 extra\r\nHost: x\r\n\r\n",
    f"GET /realms/r/cb?code={SECRETS[2]}\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
    # an invalid chunked body after secret headers
    f"POST /realms/r/token HTTP/1.1\r\nHost: x\r\nCookie: KEYCLOAK_IDENTITY={SECRETS[1]}\r\n"
    f"Transfer-Encoding: chunked\r\n\r\nzz{SECRETS[0]}\r\n",
    # two Content-Length headers that disagree
    f"POST /realms/r/token?code={SECRETS[2]} HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
]


async def test_malformed_requests_never_put_request_bytes_in_a_log_line(
    make_proxy: Callable[..., Awaitable[TestServer]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Malformed requests carrying a bearer token, an identity cookie and a code= query are answered 4xx and logged without any of their bytes."""
    proxy = await make_proxy()
    answers = []
    with caplog.at_level(logging.DEBUG):
        for raw in MALFORMED:
            reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
            writer.write(raw.encode("latin-1"))
            await writer.drain()
            answers.append(await asyncio.wait_for(reader.read(200), 10))
            writer.close()
            await writer.wait_closed()
    assert all(a[:9] in (b"HTTP/1.0 ", b"HTTP/1.1 ") and a[9:10] == b"4" for a in answers), answers
    assert any(r.name == "sidecar.http" for r in caplog.records), "aiohttp's errors go to the safe logger"
    text = caplog.text + "".join(logging.Formatter().format(r) for r in caplog.records)
    for secret in SECRETS:
        assert secret not in text
    assert "Bearer" not in text and "code=" not in text and "KEYCLOAK_IDENTITY" not in text


def test_foreign_log_records_are_reduced_to_their_template() -> None:
    """Records from outside sidecar.* lose their arguments, exception text and traceback, keeping the template and exception type."""
    handler = logging.Handler()
    handler.addFilter(SafeRecordFilter())
    try:
        raise ValueError(f"bad header Authorization: Bearer {SECRETS[0]}")
    except ValueError as exc:
        record = logging.LogRecord(
            "aiohttp.client",
            logging.ERROR,
            __file__,
            1,
            "request to %s failed",
            (f"/cb?code={SECRETS[2]}",),
            (type(exc), exc, None),
        )
    assert handler.filter(record)
    out = logging.Formatter().format(record)
    assert out == "request to ? failed [ValueError]"
    own = logging.LogRecord("sidecar.proxy", logging.INFO, __file__, 1, "POST %s -> %d", ("/token", 200), None)
    assert handler.filter(own) and own.getMessage() == "POST /token -> 200"


def test_throttle_allows_one_line_per_interval_and_counts_the_rest() -> None:
    """A throttled kind logs once per interval and the next line reports how many were held back."""
    throttle = Throttle(interval_s=3600)
    assert throttle.allow("503") == (True, 0)
    assert [throttle.allow("503") for _ in range(5)] == [(False, 0)] * 5
    assert throttle.allow("413") == (True, 0)
    throttle.interval_s = 0
    assert throttle.allow("503") == (True, 5)
