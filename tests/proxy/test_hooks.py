"""The capture seam: what the hooks see, when they run, and what their answers do to the exchange."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import logging
from collections.abc import AsyncIterator, Mapping

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from sidecar.core.exchange import PASS_THROUGH, CapturePlan, Pushback, RequestHead, RequestView, ResponseView
from sidecar.proxy.forward import ProxyLimits
from tests.proxy.conftest import LARGE, ProxyFactory, seen

LOGIN = "/realms/test/login-actions/authenticate"
CAPTURE_ALL = CapturePlan(request_body=True, response_body=True)


class RecordingHooks:
    """Captures requests whose path starts with ``prefix``; records every call."""

    def __init__(self, prefix: str = LOGIN, plan: CapturePlan = CAPTURE_ALL) -> None:
        self.prefix = prefix
        self.capture_plan = plan
        self.planned: list[RequestHead] = []
        self.before: list[RequestView] = []
        self.after: list[tuple[RequestView, ResponseView, object]] = []
        self.gone: list[tuple[RequestView, object, str]] = []
        self.token = object()
        self.before_result: Pushback | object = self.token
        self.after_result: Pushback | None = None
        self.after_entered = asyncio.Event()
        self.gate: asyncio.Event | None = None
        self.raise_in: str | None = None

    def plan(self, head: RequestHead) -> CapturePlan:
        self.planned.append(head)
        if self.raise_in == "plan":
            raise ValueError("password=s3cret-in-message")
        return self.capture_plan if head.path.startswith(self.prefix) else PASS_THROUGH

    async def before_forward(self, request: RequestView) -> Pushback | object:
        self.before.append(request)
        if self.raise_in == "before":
            raise ValueError("boom with password=s3cret-in-message")
        return self.before_result

    async def after_response(self, request: RequestView, response: ResponseView, token: object) -> Pushback | None:
        self.after.append((request, response, token))
        self.after_entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.raise_in == "after":
            raise ValueError("boom with code=s3cret-in-message")
        return self.after_result

    async def abandoned(self, request: RequestView, token: object, reason: str) -> None:
        self.gone.append((request, token, reason))


def _assert_pushback(status: int, headers: Mapping[str, str], body: bytes, retry_after: int) -> None:
    assert status == 503
    assert headers["Retry-After"] == str(retry_after)
    assert headers["Content-Type"] == "text/plain"
    assert body == b"audit log unavailable, retry later\n"


async def test_plan_selects_only_matching_paths(make_proxy: ProxyFactory, session: aiohttp.ClientSession) -> None:
    """plan() sees every request; only the selected path reaches before_forward/after_response."""
    hooks = RecordingHooks()
    proxy = await make_proxy(hooks)
    async with session.get(proxy.make_url("/page")) as resp:
        await resp.read()
    async with session.post(proxy.make_url(LOGIN), data={"username": "alice"}) as resp:
        await resp.read()
    assert [h.path for h in hooks.planned] == ["/page", LOGIN]
    assert [v.path for v in hooks.before] == [LOGIN]
    assert [r.path for r, _, _ in hooks.after] == [LOGIN]


async def test_head_carries_identity_of_the_request(make_proxy: ProxyFactory, session: aiohttp.ClientSession) -> None:
    """RequestHead holds decoded path, raw target, query, client IP, scheme, Host and a fresh id."""
    hooks = RecordingHooks()
    proxy = await make_proxy(hooks)
    for _ in range(2):
        async with session.get(proxy.make_url("/realms/t%C3%A9st/x?code=a%20b&code=c")) as resp:
            await resp.read()
    first, second = hooks.planned
    assert first.method == "GET"
    assert first.path == "/realms/tést/x"
    assert first.raw_path == "/realms/t%C3%A9st/x?code=a%20b&code=c"
    assert first.query.getall("code") == ["a b", "c"]
    assert first.client_ip == "127.0.0.1"
    assert first.scheme == "http"
    assert first.host == f"127.0.0.1:{proxy.port}"
    assert first.request_id and first.request_id != second.request_id


async def test_before_forward_sees_bounded_body_and_form(
    make_proxy: ProxyFactory, upstream: TestServer, session: aiohttp.ClientSession
) -> None:
    """before_forward gets the whole request body and its parsed form; Keycloak then gets the same bytes."""
    hooks = RecordingHooks()
    proxy = await make_proxy(hooks)
    form = {"username": "alice", "password": "pä ss&=", "credentialId": ""}
    async with session.post(proxy.make_url(LOGIN + "?session_code=abc&tab_id=t1"), data=form) as resp:
        assert resp.status == 200
    (view,) = hooks.before
    assert view.body_truncated is False
    assert view.form().getone("username") == "alice"
    assert view.form().getone("password") == "pä ss&="
    assert view.form().getone("credentialId") == ""
    assert view.query["session_code"] == "abc"
    assert view.json() is None
    assert view.client_ip == "127.0.0.1"
    (received,) = seen(upstream)
    assert received.body == view.body
    assert dict(received.headers)["Content-Length"] == str(len(view.body))


async def test_before_forward_sees_json(make_proxy: ProxyFactory, session: aiohttp.ClientSession) -> None:
    """A JSON admin request body is parsed by RequestView.json()."""
    hooks = RecordingHooks(prefix="/admin/")
    proxy = await make_proxy(hooks)
    async with session.post(proxy.make_url("/admin/realms/test/users"), json={"username": "carol"}) as resp:
        await resp.read()
    (view,) = hooks.before
    assert view.json() == {"username": "carol"}
    assert view.form() == {}


async def test_after_response_sees_status_and_decoded_body(
    make_proxy: ProxyFactory, session: aiohttp.ClientSession
) -> None:
    """after_response gets status, headers, gunzipped body and the token; the client still gets gzip bytes."""
    hooks = RecordingHooks()
    proxy = await make_proxy(hooks)
    async with session.post(proxy.make_url(LOGIN), data={"username": "alice"}) as resp:
        raw = await resp.read()
        assert resp.headers["Content-Encoding"] == "gzip"
    ((_, response, token),) = hooks.after
    assert token is hooks.token
    assert response.status == 200
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.body_truncated is False
    assert response.json() == {"user": "alice", "outcome": "ok"}
    assert json.loads(gzip.decompress(raw)) == {"user": "alice", "outcome": "ok"}


async def test_client_gets_nothing_before_after_response_returns(
    make_proxy: ProxyFactory, upstream: TestServer, session: aiohttp.ClientSession
) -> None:
    """While after_response is still running, Keycloak has answered but the client has received nothing."""
    hooks = RecordingHooks()
    hooks.gate = asyncio.Event()
    proxy = await make_proxy(hooks)

    async def login() -> int:
        async with session.post(proxy.make_url(LOGIN), data={"username": "alice"}) as resp:
            await resp.read()
            return resp.status

    task = asyncio.create_task(login())
    await asyncio.wait_for(hooks.after_entered.wait(), 5)
    await asyncio.sleep(0.1)  # ample time for any early byte to reach the client
    assert len(seen(upstream)) == 1, "Keycloak has answered"
    assert not task.done(), "the client must still be waiting for the response head"
    hooks.gate.set()
    assert await asyncio.wait_for(task, 5) == 200


async def test_pushback_before_forward_never_reaches_keycloak(
    make_proxy: ProxyFactory,
    upstream: TestServer,
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A Pushback from before_forward answers 503 + Retry-After, and Keycloak never sees the request."""
    hooks = RecordingHooks()
    hooks.before_result = Pushback("WAL queue full", retry_after=7)
    proxy = await make_proxy(hooks)
    with caplog.at_level(logging.WARNING, logger="sidecar.proxy"):
        async with session.post(proxy.make_url(LOGIN), data={"username": "alice"}) as resp:
            _assert_pushback(resp.status, resp.headers, await resp.read(), 7)
    assert seen(upstream) == []
    assert hooks.after == []
    assert any("WAL queue full" in r.getMessage() for r in caplog.records)


async def test_pushback_after_response_replaces_the_answer(
    make_proxy: ProxyFactory, upstream: TestServer, session: aiohttp.ClientSession
) -> None:
    """A Pushback from after_response gives the client 503 instead of Keycloak's response."""
    hooks = RecordingHooks()
    hooks.after_result = Pushback("fsync failed")
    proxy = await make_proxy(hooks)
    async with session.post(proxy.make_url(LOGIN), data={"username": "alice"}) as resp:
        _assert_pushback(resp.status, resp.headers, await resp.read(), 1)
        assert "Set-Cookie" not in resp.headers
    assert len(seen(upstream)) == 1


@pytest.mark.parametrize("where", ["plan", "before", "after"])
async def test_a_raising_hook_fails_closed(
    make_proxy: ProxyFactory, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    """A hook that raises turns into the 503 pushback, logging its type and place but not its message."""
    hooks = RecordingHooks()
    hooks.raise_in = where
    proxy = await make_proxy(hooks)
    with caplog.at_level(logging.INFO, logger="sidecar.proxy"):
        async with session.post(proxy.make_url(LOGIN), data={"username": "alice"}) as resp:
            _assert_pushback(resp.status, resp.headers, await resp.read(), 1)
    messages = [r.getMessage() for r in caplog.records if r.name == "sidecar.proxy"]
    assert any("ValueError at " in m and "test_hooks.py:" in m for m in messages), messages
    assert not any("s3cret" in m for m in messages)
    assert all(r.exc_info is None for r in caplog.records)


async def _chunked(total: int) -> AsyncIterator[bytes]:
    for _ in range(total // 512):
        yield b"u" * 512


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_oversized_captured_request_is_refused(
    make_proxy: ProxyFactory, upstream: TestServer, session: aiohttp.ClientSession, framing: str
) -> None:
    """A captured request body over the limit gets 413 and never reaches Keycloak or the hooks."""
    hooks = RecordingHooks()
    proxy = await make_proxy(hooks, ProxyLimits(max_captured_body=1024))
    data = b"u" * 4096 if framing == "content-length" else _chunked(4096)
    async with session.post(proxy.make_url(LOGIN), data=data) as resp:
        assert resp.status == 413
        assert await resp.read() == b"request body too large for the audit sidecar (limit 1024 bytes)\n"
    assert seen(upstream) == []
    assert hooks.before == []


async def test_body_at_the_limit_is_captured(
    make_proxy: ProxyFactory, upstream: TestServer, session: aiohttp.ClientSession
) -> None:
    """A body of exactly max_captured_body bytes is captured whole and forwarded."""
    hooks = RecordingHooks(prefix="/echo")
    proxy = await make_proxy(hooks, ProxyLimits(max_captured_body=1024))
    async with session.post(proxy.make_url("/echo"), data=_chunked(1024)) as resp:
        assert await resp.read() == b"u" * 1024
    assert hooks.before[0].body == b"u" * 1024
    assert seen(upstream)[0].body == b"u" * 1024


async def test_over_limit_response_is_truncated_for_capture_only(
    make_proxy: ProxyFactory, session: aiohttp.ClientSession
) -> None:
    """A response over the limit is captured as a flagged prefix, and the client still gets all of it."""
    hooks = RecordingHooks(prefix="/large")
    proxy = await make_proxy(hooks, ProxyLimits(max_captured_body=1024))
    async with session.get(proxy.make_url("/large")) as resp:
        assert await resp.read() == LARGE
        assert resp.headers["Content-Length"] == str(len(LARGE))
    ((_, response, _),) = hooks.after
    assert response.body_truncated is True
    assert response.body == LARGE[:1024]


async def test_over_limit_chunked_response_reaches_client_whole(
    make_proxy: ProxyFactory, session: aiohttp.ClientSession
) -> None:
    """A 5 MiB chunked response on a captured path is truncated for capture and delivered in full."""
    hooks = RecordingHooks(prefix="/big")
    proxy = await make_proxy(hooks, ProxyLimits(max_captured_body=4096))
    body = b"z" * (5 * 1024 * 1024)
    async with session.post(proxy.make_url("/big"), data=_chunked(8192)) as resp:
        assert resp.status == 413  # the request side is bounded too
    hooks.capture_plan = CapturePlan(False, True)
    async with session.post(proxy.make_url("/big"), data=io.BytesIO(body)) as resp:
        assert await resp.read() == body
    (request, response, _) = hooks.after[-1]
    assert request.body == b"" and request.body_truncated is True  # streamed, not captured
    assert response.body_truncated is True and response.body == b"z" * 4096


async def test_request_only_plan_still_reports_the_outcome(
    make_proxy: ProxyFactory, session: aiohttp.ClientSession
) -> None:
    """With response_body off, after_response still runs with the status and an empty, flagged body."""
    hooks = RecordingHooks(plan=CapturePlan(True, False))
    proxy = await make_proxy(hooks)
    async with session.post(proxy.make_url(LOGIN), data={"username": "dave"}) as resp:
        assert json.loads(gzip.decompress(await resp.read()))["user"] == "dave"
    ((_, response, _),) = hooks.after
    assert response.status == 200
    assert response.body == b"" and response.body_truncated is True


async def test_logs_never_carry_secrets(
    make_proxy: ProxyFactory, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """At DEBUG, the proxy logs method, path, status and time, never queries, headers, cookies or bodies."""
    hooks = RecordingHooks()
    hooks.after_result = Pushback("ledger down")
    proxy = await make_proxy(hooks)
    with caplog.at_level(logging.DEBUG, logger="sidecar.proxy"):
        async with session.post(
            proxy.make_url(LOGIN + "?code=SECRET-CODE"),
            data={"username": "alice", "password": "SECRET-PASSWORD"},
            headers={"Cookie": "KEYCLOAK_IDENTITY=SECRET-COOKIE", "Authorization": "Bearer SECRET-TOKEN"},
        ) as resp:
            await resp.read()
        async with session.get(proxy.make_url("/page?token=SECRET-QUERY")) as resp:
            await resp.read()
    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("sidecar"))
    assert LOGIN in text and "/page" in text
    assert "SECRET" not in text
