"""Through the proxy, every exchange looks exactly as it does talking to Keycloak directly.

Both directions are compared: what the client gets back (status, reason, header lines in
order, body bytes) and what the upstream receives (method, target, headers, body).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.proxy.conftest import BIG, PAGE, REDIRECT_HEADERS, ProxyFactory, Seen, seen

# Headers each side stamps for itself. Date may tick between the two requests; Server is
# copied from upstream, so it would match, but the brief allows it to differ.
RESPONSE_IGNORED = frozenset({"date", "server"})
# What the proxy must change on the way in: Host names the proxy's address when the
# client talks to it, and the forwarding headers are the proxy's to set.
REQUEST_IGNORED = frozenset({"host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port"})


@dataclass(frozen=True)
class Snapshot:
    """One response, as raw as aiohttp's client lets us see it."""

    status: int
    reason: str | None
    headers: list[tuple[str, str]]
    body: bytes


async def fetch(session: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> Snapshot:
    async with session.request(method, url, allow_redirects=False, **kw) as resp:
        body = await resp.read()
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in resp.raw_headers]
        return Snapshot(resp.status, resp.reason, headers, body)


def _lines(headers: list[tuple[str, str]], ignored: frozenset[str]) -> list[tuple[str, str]]:
    return [(k.lower(), v) for k, v in headers if k.lower() not in ignored]


def diff_responses(direct: Snapshot, proxied: Snapshot, ignored: frozenset[str] = RESPONSE_IGNORED) -> list[str]:
    """Every way the proxied response differs from the direct one; empty if invisible."""
    out: list[str] = []
    if direct.status != proxied.status:
        out.append(f"status: direct {direct.status}, proxied {proxied.status}")
    if direct.reason != proxied.reason:
        out.append(f"reason: direct {direct.reason!r}, proxied {proxied.reason!r}")
    d, p = _lines(direct.headers, ignored), _lines(proxied.headers, ignored)
    if d != p:
        out.extend(f"header only direct: {h}" for h in d if h not in p)
        out.extend(f"header only proxied: {h}" for h in p if h not in d)
        if sorted(d) == sorted(p):
            out.append(f"header order: direct {d}, proxied {p}")
    if direct.body != proxied.body:
        out.append(f"body: direct {len(direct.body)} bytes, proxied {len(proxied.body)} bytes, differ")
    return out


def diff_requests(direct: Seen, proxied: Seen, ignored: frozenset[str] = REQUEST_IGNORED) -> list[str]:
    """Every way the upstream's view of the proxied request differs from the direct one."""
    out: list[str] = []
    for field in ("method", "raw_path"):
        if getattr(direct, field) != getattr(proxied, field):
            out.append(f"{field}: direct {getattr(direct, field)!r}, proxied {getattr(proxied, field)!r}")
    d, p = _lines(direct.headers, ignored), _lines(proxied.headers, ignored)
    if d != p:
        out.append(f"headers: direct {d}, proxied {p}")
    if direct.body != proxied.body:
        out.append(f"body: direct {len(direct.body)} bytes, proxied {len(proxied.body)} bytes, differ")
    return out


async def _chunks() -> AsyncIterator[bytes]:
    for i in range(0, len(BIG), 100_000):
        yield BIG[i : i + 100_000]


# (id, method, path, request kwargs factory)
CASES: list[tuple[str, str, str, Callable[[], dict[str, Any]]]] = [
    (
        "get-query",
        "GET",
        "/realms/test/protocol/openid-connect/auth?client_id=app&scope=openid%20email&x=1&x=2",
        dict,
    ),
    ("post-form", "POST", "/echo", lambda: {"data": {"username": "alice", "password": "pä ss&="}}),
    ("post-json", "POST", "/echo", lambda: {"json": {"username": "bob", "enabled": True}}),
    ("put", "PUT", "/echo", lambda: {"data": b"{}", "headers": {"Content-Type": "application/json"}}),
    (
        "delete-body",
        "DELETE",
        "/echo",
        lambda: {"data": b'[{"id":"r1"}]', "headers": {"Content-Type": "application/json"}},
    ),
    ("head", "HEAD", "/page", dict),
    ("get-page", "GET", "/page", dict),
    ("redirect-302-cookies", "GET", "/redirect", dict),
    ("204", "GET", "/no-content", dict),
    ("304", "GET", "/not-modified", lambda: {"headers": {"If-None-Match": '"v1"'}}),
    ("404-json", "GET", "/missing", dict),
    ("gzip", "GET", "/gzip", lambda: {"headers": {"Accept-Encoding": "gzip"}}),
    ("5MiB-both-ways-chunked", "POST", "/big", lambda: {"data": _chunks()}),
    ("5MiB-download", "GET", "/big", dict),
    ("5MiB-upload-with-length", "POST", "/echo", lambda: {"data": io.BytesIO(BIG)}),
    ("non-ascii-path", "GET", "/realms/tést/ünïcode/€?q=ü", dict),
    ("encoded-slash", "GET", "/admin/realms/test/users/a%2Fb%20c", dict),
]


@pytest.mark.parametrize(("method", "path", "kwargs"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_proxied_exchange_equals_direct(
    make_proxy: ProxyFactory,
    upstream: TestServer,
    session: aiohttp.ClientSession,
    method: str,
    path: str,
    kwargs: Callable[[], dict[str, Any]],
) -> None:
    """The client gets the same response and the upstream the same request, with or without the proxy."""
    proxy = await make_proxy()
    direct_base = str(upstream.make_url("")).rstrip("/")
    proxy_base = str(proxy.make_url("")).rstrip("/")

    direct = await fetch(session, method, direct_base + path, **kwargs())
    proxied = await fetch(session, method, proxy_base + path, **kwargs())

    assert diff_responses(direct, proxied) == []
    received = seen(upstream)
    assert len(received) == 2, "one request each; no retries, no redirects followed"
    assert diff_requests(received[0], received[1]) == []


async def test_redirect_is_passed_not_followed(
    make_proxy: ProxyFactory, upstream: TestServer, session: aiohttp.ClientSession
) -> None:
    """A 302 reaches the client with its Location and every Set-Cookie line byte for byte, in order."""
    proxy = await make_proxy()
    snap = await fetch(session, "GET", str(proxy.make_url("/redirect")))
    assert snap.status == 302
    wanted = [(k.lower(), v) for k, v in REDIRECT_HEADERS]
    got = [(k.lower(), v) for k, v in snap.headers if k.lower() in ("location", "set-cookie")]
    assert got == wanted
    assert len(seen(upstream)) == 1


async def test_helper_reports_differences() -> None:
    """The comparison helper names each difference, so a failure says what leaked."""
    a = Snapshot(200, "OK", [("Content-Type", "text/html"), ("Set-Cookie", "a=1"), ("Date", "x")], PAGE)
    b = Snapshot(502, "Bad Gateway", [("Set-Cookie", "a=1"), ("Content-Type", "text/html"), ("X-Extra", "1")], b"")
    assert diff_responses(a, b) == [
        "status: direct 200, proxied 502",
        "reason: direct 'OK', proxied 'Bad Gateway'",
        "header only proxied: ('x-extra', '1')",
        f"body: direct {len(PAGE)} bytes, proxied 0 bytes, differ",
    ]
    assert diff_responses(a, Snapshot(200, "OK", [("Set-Cookie", "a=1"), ("Content-Type", "text/html")], PAGE)) == [
        "header order: direct [('content-type', 'text/html'), ('set-cookie', 'a=1')], "
        "proxied [('set-cookie', 'a=1'), ('content-type', 'text/html')]"
    ]


# -- Known differences, pinned: each is aiohttp's serializer, not a choice of the proxy ------


async def _raw_upstream(response: bytes) -> asyncio.Server:
    """An upstream that answers every request with exactly ``response`` and hangs up."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(response)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    return await asyncio.start_server(answer, "127.0.0.1", 0)


async def _proxied_raw_headers(
    make_proxy: ProxyFactory, session: aiohttp.ClientSession, response: bytes
) -> list[tuple[bytes, bytes]]:
    server = await _raw_upstream(response)
    try:
        port = server.sockets[0].getsockname()[1]
        proxy = await make_proxy(upstream_url=f"http://127.0.0.1:{port}")
        async with session.get(proxy.make_url("/file")) as resp:
            await resp.read()
            return list(resp.raw_headers)
    finally:
        server.close()
        await server.wait_closed()


async def test_utf8_header_values_pass_unchanged(make_proxy: ProxyFactory, session: aiohttp.ClientSession) -> None:
    """A header value in UTF-8 (non-ASCII) reaches the client byte for byte."""
    raw = "X-Name: café\r\n".encode()
    response = b"HTTP/1.1 200 OK\r\n" + raw + b"Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
    headers = await _proxied_raw_headers(make_proxy, session, response)
    assert (b"X-Name", "café".encode()) in headers


@pytest.mark.xfail(strict=True, reason="aiohttp's C header writer drops bytes that are not UTF-8 (obs-text)")
async def test_non_utf8_header_bytes_pass_unchanged(make_proxy: ProxyFactory, session: aiohttp.ClientSession) -> None:
    """Known loss: a latin-1 byte in a header value (obs-text) does not survive aiohttp's serializer."""
    response = (
        b'HTTP/1.1 200 OK\r\nContent-Disposition: attachment; filename="caf\xe9.txt"\r\n'
        b"Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
    )
    headers = await _proxied_raw_headers(make_proxy, session, response)
    assert (b"Content-Disposition", b'attachment; filename="caf\xe9.txt"') in headers


async def test_body_without_content_type_stays_typeless(
    make_proxy: ProxyFactory, session: aiohttp.ClientSession
) -> None:
    """A response body without Content-Type gets none added (aiohttp would add application/octet-stream)."""
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    headers = await _proxied_raw_headers(make_proxy, session, response)
    assert not any(k.lower() == b"content-type" for k, _ in headers)
