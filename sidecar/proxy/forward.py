"""The reverse proxy in front of Keycloak, and the seam where capture hooks in.

Every request is forwarded unchanged and every response comes back unchanged:
status, reason, headers (Set-Cookie order and bytes included), redirects and body bytes
(``auto_decompress=False`` on both sides: the server half must be built with
`HANDLER_ARGS`, so a gzip request body goes upstream as the bytes the client sent). The
only edits are the ones a proxy must make:

* hop-by-hop headers (RFC 9110 §7.6.1, plus any header named in ``Connection``) are
  dropped in both directions;
* client-supplied forwarding headers are dropped and ``X-Forwarded-For/-Proto/-Host/-Port``
  are *set* from the real connection (Keycloak runs with ``--proxy-headers=xforwarded``
  and must not trust what a client claims).

A request is either **passed through** (the hooks' plan wants no body: bodies are
streamed, nothing is buffered) or **captured**: the bounded request body is read, then

    plan -> before_forward -> [Keycloak] -> bounded response body -> after_response -> client

and nothing reaches the client before ``after_response`` returns. A ``Pushback`` (or a
hook that raises) turns into 503 + Retry-After with a generic body: capture fails
closed. The proxy never adds a header of its own to a forwarded exchange, keeps no
cookie jar, follows no redirects, and never logs headers, cookies, queries or bodies.

Bounds and isolation:

* Captured and passed-through requests use separate upstream pools (``identity`` and
  ``pass_through``), so slow pass-through traffic cannot take the connections logins,
  token grants and admin writes need. Waiting for a pooled connection is bounded
  (``pool_wait_s``, then 504); `status()` reports each pool's use for health.
* Captured bodies draw on one global `ByteBudget`; a request body it cannot cover is
  answered 503 + Retry-After before Keycloak sees it.
* A captured request whose body has a content coding (other than ``identity``) is
  refused with 415 before Keycloak sees it. Keycloak 26.7.3 does not decode request
  bodies: it parses the coded bytes as they are ("Missing form parameter: grant_type",
  "Cannot parse the JSON"), so no such request is one Keycloak would act on, and a
  decoded copy could say something else than the raw bytes Keycloak parses (a gzip
  header's file name field is raw bytes that are not in the decoded content).
* Once ``before_forward`` has returned, the hooks always hear how the exchange ended:
  ``after_response`` with Keycloak's answer, or ``abandoned`` when there is none
  (Keycloak unreachable, timed out or cut off, the handler cancelled), so no intent
  record stays without an outcome.
* Log lines a request can trigger (503, 413, 415, unreachable upstream) are
  rate-limited per kind (`Throttle`).
"""

from __future__ import annotations

import asyncio
import io
import itertools
import logging
import secrets
import time
import traceback
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

import aiohttp
from aiohttp import web
from multidict import CIMultiDictProxy
from yarl import URL

from sidecar import metrics
from sidecar.core.exchange import (
    PASS_THROUGH,
    CapturePlan,
    Pushback,
    RequestHead,
    RequestView,
    ResponseView,
    decode_content,
)
from sidecar.errors import ConfigError, UpstreamError
from sidecar.proxy.budget import ByteBudget, Grant, MemoryReturn
from sidecar.proxy.logsafe import SERVER_LOGGER, Throttle

__all__ = ["HANDLER_ARGS", "NO_HOOKS", "CaptureHooks", "ProxyLimits", "ReverseProxy"]

log = logging.getLogger("sidecar.proxy")

_CHUNK: Final = 64 * 1024

_HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",  # non-standard, still sent by some clients
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_REQUEST_DROP: Final = _HOP_BY_HOP | frozenset(
    {
        # SECURITY: a client must not choose the IP, scheme or host Keycloak records
        # and builds URLs from; these are set from the real connection instead.
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-real-ip",
        # The server side of this proxy already answered "100 Continue" to the client;
        # repeating the handshake upstream only adds a round trip.
        "expect",
    }
)
# aiohttp would otherwise add headers the client never sent.
_SKIP_AUTO_HEADERS: Final = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")

_PUSHBACK_BODY: Final = b"audit log unavailable, retry later\n"
_UNREACHABLE_BODY: Final = b"upstream Keycloak unreachable\n"
_BUSY_BODY: Final = b"audit sidecar busy, retry later\n"
# Taken from the capture budget up front for the response of a captured request; a longer
# response grows its grant while it is read, or is captured truncated if the budget is spent.
_RESPONSE_ALLOWANCE: Final = 64 * 1024

# For the aiohttp server (web.Application(handler_args=HANDLER_ARGS)) in front of the proxy.
HANDLER_ARGS: Final[Mapping[str, Any]] = {
    # SECURITY: forward request bodies byte for byte. aiohttp would otherwise inflate a gzip
    # body and the proxy would send the inflated bytes under the client's gzip label and length.
    "auto_decompress": False,
    # SECURITY: aiohttp's own logger writes a malformed request's bytes (query, bearer token,
    # cookie) into the log; this one keeps only what happened (sidecar.proxy.logsafe).
    "logger": SERVER_LOGGER,
    # SECURITY: aiohttp's access log writes the request line, query included.
    "access_log": None,
}


class CaptureHooks(Protocol):
    """What the capture layer implements; the proxy calls it for every request."""

    def plan(self, head: RequestHead) -> CapturePlan:
        """Decide, from the head alone and cheaply, which bodies to capture."""
        ...

    async def before_forward(self, request: RequestView) -> Pushback | object:
        """Called for captured requests before anything goes upstream.

        A ``Pushback`` means Keycloak never sees the request; any other value is an
        opaque token handed to ``after_response``.
        """
        ...

    async def after_response(self, request: RequestView, response: ResponseView, token: object) -> Pushback | None:
        """Called with the upstream answer before any byte of it reaches the client."""
        ...

    async def abandoned(self, request: RequestView, token: object, reason: str) -> None:
        """Called instead of ``after_response`` when the exchange ended without Keycloak's answer.

        ``reason`` is a short code (``upstream_unreachable``, ``upstream_timeout``,
        ``upstream_failed``, ``cancelled``, ``capture_failed``); whether Keycloak applied
        the request is unknown.
        """
        ...


class _NoHooks:
    def plan(self, head: RequestHead) -> CapturePlan:
        return PASS_THROUGH

    async def before_forward(self, request: RequestView) -> Pushback | object:
        return None

    async def after_response(self, request: RequestView, response: ResponseView, token: object) -> Pushback | None:
        return None

    async def abandoned(self, request: RequestView, token: object, reason: str) -> None:
        return None


NO_HOOKS: Final[CaptureHooks] = _NoHooks()


@dataclass(frozen=True, slots=True)
class ProxyLimits:
    """Bounds on what one request may cost the proxy."""

    max_captured_body: int = 1024 * 1024
    upstream_connect_timeout: float = 5.0
    upstream_read_timeout: float = 60.0
    max_connections: int = 256  # upstream pool for passed-through requests
    identity_connections: int = 64  # a separate pool for captured ones (logins, tokens, admin writes)
    pool_wait_s: float = 10.0  # longest wait for a free pooled connection, then 504
    capture_budget: int = 64 * 1024 * 1024  # bytes of captured bodies held at once, all requests together


def _filter_headers(headers: CIMultiDictProxy[str], drop: frozenset[str]) -> list[tuple[str, str]]:
    """The headers minus ``drop`` and minus any header the Connection header names."""
    connection = headers.get("Connection")
    if connection is not None:
        drop = drop | {token.strip().lower() for token in connection.split(",")}
    return [(name, value) for name, value in headers.items() if name.lower() not in drop]


def _host_port(host: str) -> str | None:
    """The port of a Host header value ("example.org:8443", "[::1]:80"), if it has one."""
    if host.startswith("["):
        rest = host[host.find("]") + 1 :]
        port = rest[1:] if rest.startswith(":") else ""
    else:
        _, sep, port = host.rpartition(":")
        if not sep:
            return None
    return port if port.isascii() and port.isdigit() else None


def _bodiless(method: str, status: int) -> bool:
    return method == "HEAD" or status in (204, 304) or status < 200


async def _read_granted(
    stream: aiohttp.StreamReader, limit: int, grant: Grant, granted: int
) -> tuple[bytes, bool, bool]:
    """Read up to ``limit + 1`` bytes, growing ``grant`` past the ``granted`` bytes it already holds.

    Returns ``(bytes read, there is more, the budget covered every byte)``.
    """
    buf = bytearray()
    while len(buf) <= limit:
        chunk = await stream.read(limit + 1 - len(buf))
        if not chunk:
            return bytes(buf), False, True
        over = len(buf) + len(chunk) - granted
        if over > 0:
            if not grant.grow(over):
                return b"", True, False
            granted += over
        buf += chunk
    return bytes(buf), True, True


async def _read_granted_response(up: aiohttp.ClientResponse, limit: int, grant: Grant) -> tuple[bytes, bool]:
    """The captured prefix of a response (up to ``limit`` and what the budget covers) and whether more follows.

    The grant holds `_RESPONSE_ALLOWANCE` already and grows before each read beyond it; when
    the budget is spent the capture stops there and the rest is relayed unread.
    """
    buf = bytearray()
    granted = _RESPONSE_ALLOWANCE
    while len(buf) <= limit:
        want = limit + 1 - len(buf)
        room = granted - len(buf)
        if room <= 0:
            step = min(want, _CHUNK)
            if not grant.grow(step):
                return bytes(buf), True  # the stream is untouched from here: relayed as is
            granted += step
            room = step
        chunk = await up.content.read(min(want, room))
        if not chunk:
            return bytes(buf), False
        buf += chunk
    return bytes(buf), True


def _abandon_reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "upstream_timeout"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "upstream_unreachable"
    return "upstream_failed"


def _upstream_error(exc: BaseException) -> UpstreamError:
    """The one mapping of an upstream failure (aiohttp, socket, timeout) into the sidecar's error tree."""
    return UpstreamError(_describe(exc), reason=_abandon_reason(exc))


def _describe(exc: BaseException) -> str:
    """An upstream failure for the operator log, without URLs (they carry query strings)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"{type(exc).__name__} to {exc.host}:{exc.port}: {exc.os_error.strerror or exc.os_error}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__}: {exc.strerror}"
    return type(exc).__name__


def _plain(status: int, body: bytes) -> web.Response:
    """An answer of the proxy's own: short, generic, never cached."""
    resp = web.Response(status=status, body=body, content_type="text/plain")
    resp.headers["Cache-Control"] = "no-store"
    return resp


class _MirrorStreamResponse(web.StreamResponse):
    """A relayed response that adds no Date, Server or Content-Type header Keycloak did not send (P6: invisible).

    aiohttp adds these to every response it serves; its hook for that, `_prepare_headers`, is
    private, so tests pin the behaviour (tests/proxy/test_no_added_headers.py).
    """

    absent: tuple[str, ...] = ()

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        for name in self.absent:
            self.headers.popall(name, None)


class _MirrorResponse(_MirrorStreamResponse, web.Response):
    """The same for a response whose whole body is known (MRO: the mirror step, then web.Response)."""


class ReverseProxy:
    """Forwards every request to one Keycloak and lets capture hooks see selected ones."""

    def __init__(self, upstream: str, hooks: CaptureHooks, limits: ProxyLimits) -> None:
        url = URL(upstream)
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigError(f"upstream {upstream!r}: want an http(s) base URL like http://127.0.0.1:8080")
        if url.path not in ("", "/") or url.query_string or url.fragment:
            raise ConfigError(f"upstream {upstream!r}: must have no path, query or fragment")
        self._base = str(url.origin())
        self._hooks = hooks
        self._limits = limits
        self._session: aiohttp.ClientSession | None = None  # pass-through pool
        self._identity: aiohttp.ClientSession | None = None  # captured (identity) pool
        self._budget = ByteBudget(limits.capture_budget)
        self._memory = MemoryReturn(self._budget)
        self._memory_timer: asyncio.TimerHandle | None = None
        # In flight per pool: more than the pool's limit means requests wait for a connection.
        self._busy = {"identity": 0, "pass_through": 0}
        self._throttle = Throttle(1.0)
        # Internal ids only: adding a header would make the proxy visible.
        self._id_prefix = secrets.token_hex(4) + "-"
        self._ids = itertools.count(1)

    def _new_session(self, limit: int) -> aiohttp.ClientSession:
        limits = self._limits
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=limit),
            # SECURITY: one shared jar would hand one user's Keycloak session cookies
            # to the next client; cookies must only travel in each client's headers.
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(
                total=None,
                # Waiting for a pooled connection counts here: a full pool is a 504, not a queue.
                connect=limits.pool_wait_s + limits.upstream_connect_timeout,
                sock_connect=limits.upstream_connect_timeout,
                sock_read=limits.upstream_read_timeout,
            ),
            skip_auto_headers=_SKIP_AUTO_HEADERS,
            trust_env=False,
            trace_configs=[metrics.upstream_trace("proxy")],  # Keycloak's latency and failures
            # Keycloak's KC_RESTART cookie and long redirect URLs exceed aiohttp's 8 KiB default.
            max_line_size=65536,
            max_field_size=65536,
        )

    async def start(self) -> None:
        """Open the upstream connection pools."""
        if self._session is not None:
            return
        self._session = self._new_session(self._limits.max_connections)
        self._identity = self._new_session(self._limits.identity_connections)

    async def close(self) -> None:
        """Close the pools; in-flight upstream connections are dropped."""
        if self._memory_timer is not None:
            self._memory_timer.cancel()
            self._memory_timer = None
        for name in ("_session", "_identity"):
            session = getattr(self, name)
            if session is not None:
                setattr(self, name, None)
                await session.close()

    def status(self) -> dict[str, Any]:
        """Pool use and the capture budget, for health. ``saturated`` names pools with requests waiting."""
        limits = {"identity": self._limits.identity_connections, "pass_through": self._limits.max_connections}
        pools = {name: {"in_flight": n, "limit": limits[name]} for name, n in self._busy.items()}
        return {
            "pools": pools,
            "saturated": sorted(n for n, p in pools.items() if p["in_flight"] > p["limit"]),
            "capture_budget": self._budget.status(),
        }

    async def lifespan(self, app: web.Application) -> AsyncIterator[None]:
        """For ``app.cleanup_ctx``: start with the app, close with it."""
        await self.start()
        try:
            yield
        finally:
            await self.close()

    def add_routes(self, app: web.Application) -> None:
        """Route every method and path of ``app`` to this proxy."""
        app.router.add_route("*", "/{tail:.*}", self.handle)

    # -- request handling ---------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The catch-all handler: forward one exchange, capturing it if the plan says so."""
        started = time.perf_counter()
        head = self._head(request)
        try:
            plan = self._hooks.plan(head)
        except Exception as exc:
            return self._hook_failed(head, "plan", exc)
        if plan.request_body or plan.response_body:
            resp = await self._captured(request, head, plan)
        else:
            resp = await self._pass_through(request, head)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s %s -> %d in %.3f ms",
                head.method,
                _log_path(head),
                resp.status,
                (time.perf_counter() - started) * 1000,
            )
        return resp

    def _head(self, request: web.Request) -> RequestHead:
        return RequestHead(
            method=request.method,
            path=request.path,
            raw_path=request.raw_path,
            query=request.rel_url.query,
            headers=request.headers,
            client_ip=request.remote or "",
            scheme=request.scheme,
            # Not request.host: without a Host header it falls back to the socket name.
            host=request.headers.get("Host", ""),
            request_id=f"{self._id_prefix}{next(self._ids):x}",
        )

    async def _pass_through(self, request: web.Request, head: RequestHead) -> web.StreamResponse:
        data = request.content if request.body_exists else None
        self._busy["pass_through"] += 1
        try:
            try:
                up = await self._open(request, head, data, self._session)
            except UpstreamError as err:
                return self._unreachable(head, err)
            length = up.content_length
            if _bodiless(head.method, up.status) or (length is not None and length <= _CHUNK):
                # Small and known: one read, one write to the client.
                try:
                    body = await up.read()
                except (aiohttp.ClientError, TimeoutError) as exc:
                    up.close()
                    return self._unreachable(head, _upstream_error(exc))
                return await self._relay(request, head, up, body, whole=True)
            return await self._relay(request, head, up, b"", whole=False)
        finally:
            self._busy["pass_through"] -= 1

    async def _captured(self, request: web.Request, head: RequestHead, plan: CapturePlan) -> web.StreamResponse:
        grant = self._budget.grant(_RESPONSE_ALLOWANCE if plan.response_body else 0)
        if grant is None:
            self._after_capture()
            return self._over_budget(head)
        self._busy["identity"] += 1
        try:
            return await self._captured_within(request, head, plan, grant)
        finally:
            self._busy["identity"] -= 1
            grant.release()
            self._after_capture()

    def _after_capture(self) -> None:
        """After a burst of large captured bodies, return the freed memory (once, a moment later)."""
        if self._memory_timer is None and self._memory.due():

            def run() -> None:
                self._memory_timer = None
                self._memory.run()

            self._memory_timer = asyncio.get_running_loop().call_later(0.5, run)

    async def _captured_within(
        self, request: web.Request, head: RequestHead, plan: CapturePlan, grant: Grant
    ) -> web.StreamResponse:
        limit = self._limits.max_captured_body
        data: bytes | io.BytesIO | aiohttp.StreamReader | None
        coding = head.headers.get("Content-Encoding")
        if coding is not None and request.body_exists and coding.strip().lower() not in ("", "identity"):
            # SECURITY: capture would have to guess how Keycloak reads coded bytes; it reads them raw.
            return self._unreadable(head, f"content coding {coding[:40]!r} on a captured endpoint")
        if plan.request_body and request.body_exists:
            declared = request.content_length
            if declared is not None and declared > limit:
                return self._too_large(head, limit)
            if declared is not None and not grant.grow(declared):
                return self._over_budget(head)
            try:
                body, more, covered = await _read_granted(request.content, limit, grant, declared or 0)
            except (OSError, aiohttp.ClientError) as exc:
                self._log(
                    "client-body",
                    logging.INFO,
                    "%s %s: client body read failed: %s",
                    head.method,
                    _log_path(head),
                    _describe(exc),
                )
                return _plain(400, b"could not read the request body\n")
            if not covered:
                return self._over_budget(head)
            if more:
                return self._too_large(head, limit)
            view = RequestView(head, body, False)
            # aiohttp warns about (and blocks the loop on) raw bytes over 1 MiB; a file-like is streamed.
            data = body if len(body) <= 1024 * 1024 else io.BytesIO(body)
        else:
            view = RequestView(head, b"", request.body_exists)
            data = request.content if request.body_exists else None

        try:
            token = await self._hooks.before_forward(view)
        except Exception as exc:
            return self._hook_failed(head, "before_forward", exc)
        if isinstance(token, Pushback):
            return self._pushback(head, token)
        # From here on the hooks hear how this ends (after_response or abandoned), even on cancellation.
        told = False
        try:
            try:
                up = await self._open(request, head, data, self._identity)
            except UpstreamError as err:
                told = True
                await self._abandon(view, token, err.reason)
                return self._unreachable(head, err)
            raw, more = b"", False
            if plan.response_body:
                try:
                    raw, more = await _read_granted_response(up, limit, grant)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    up.close()
                    told = True
                    await self._abandon(view, token, "upstream_failed")
                    return self._unreachable(head, _upstream_error(exc))
                encoding = up.headers.get("Content-Encoding")
                if encoding:  # the decoded copy is held too: bounded by what the budget has left
                    decoded, cut = decode_content(raw[:limit], encoding, min(limit, grant.headroom()))
                    grant.grow(len(decoded))
                else:
                    decoded, cut = (raw, False) if len(raw) <= limit else (raw[:limit], True)
                response = ResponseView(up.status, up.headers, decoded, more or cut)
            else:
                # Not captured: say so unless the response cannot have a body.
                missing = not _bodiless(head.method, up.status) and up.content_length != 0
                response = ResponseView(up.status, up.headers, b"", missing)

            whole = plan.response_body and not more
            told = True
            try:
                verdict = await self._hooks.after_response(view, response, token)
            except Exception as exc:
                _discard(up, whole)
                await self._abandon(view, token, "capture_failed")
                return self._hook_failed(head, "after_response", exc)
        except BaseException:
            if not told:  # cancelled (or a bug) between forwarding and the answer
                await asyncio.shield(self._abandon(view, token, "cancelled"))
            raise
        if isinstance(verdict, Pushback):
            _discard(up, whole)
            return self._pushback(head, verdict)
        return await self._relay(request, head, up, raw, whole=whole)

    async def _abandon(self, view: RequestView, token: object, reason: str) -> None:
        try:
            await self._hooks.abandoned(view, token, reason)
        except Exception as exc:
            self._log(
                "abandoned",
                logging.ERROR,
                "%s %s: capture hook abandoned raised %s",
                view.method,
                _log_path(view.head),
                type(exc).__name__,
            )

    async def _open(
        self,
        request: web.Request,
        head: RequestHead,
        data: bytes | io.BytesIO | aiohttp.StreamReader | None,
        session: aiohttp.ClientSession | None,
    ) -> aiohttp.ClientResponse:
        """Send the request upstream; a failure raises UpstreamError (the caller answers 502/504)."""
        if session is None:
            raise RuntimeError("ReverseProxy.start() was not called")
        raw = head.raw_path
        if not raw.startswith("/"):  # absolute-form request target
            raw = request.rel_url.raw_path_qs
        try:
            return await session.request(
                head.method,
                URL(self._base + raw, encoded=True),
                headers=self._forward_headers(request, head),
                data=data,
                allow_redirects=False,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise _upstream_error(exc) from exc

    def _forward_headers(self, request: web.Request, head: RequestHead) -> list[tuple[str, str]]:
        headers = _filter_headers(head.headers, _REQUEST_DROP)
        if head.client_ip:  # empty only on a unix socket: nothing true to say
            headers.append(("X-Forwarded-For", head.client_ip))
        headers.append(("X-Forwarded-Proto", head.scheme))
        if head.host:
            headers.append(("X-Forwarded-Host", head.host))
        port = _host_port(head.host)
        if port is None:
            port = _socket_port(request, head.scheme)
        headers.append(("X-Forwarded-Port", port))
        return headers

    async def _relay(
        self,
        request: web.Request,
        head: RequestHead,
        up: aiohttp.ClientResponse,
        body: bytes,
        *,
        whole: bool,
    ) -> web.StreamResponse:
        """Send the upstream response to the client; ``body`` was already read from it.

        Owns ``up``: releases it to the pool when fully read, closes it otherwise.
        """
        headers = _filter_headers(up.headers, _HOP_BY_HOP)
        absent = tuple(h for h in ("Date", "Server", "Content-Type") if h not in up.headers)
        if whole and (up.content_length is not None or _bodiless(head.method, up.status)):
            up.release()
            whole_resp = _MirrorResponse(status=up.status, reason=up.reason, headers=headers, body=body)
            whole_resp.absent = absent
            return whole_resp

        # Streamed: Content-Length framing if upstream declared one, chunked otherwise.
        resp = _MirrorStreamResponse(status=up.status, reason=up.reason, headers=headers)
        resp.absent = absent
        complete = False
        try:
            await resp.prepare(request)
            if body:
                await resp.write(body)
            while not whole:
                try:
                    chunk = await up.content.read(_CHUNK)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    log.warning(
                        "%s %s: upstream failed mid-body (%s); closing the client connection",
                        head.method,
                        _log_path(head),
                        _describe(exc),
                    )
                    # A cut connection, so the client cannot take a partial body for a whole one.
                    resp.force_close()
                    if request.transport is not None:
                        request.transport.close()
                    return resp
                if not chunk:
                    break
                await resp.write(chunk)
            await resp.write_eof()
            complete = True
        except ConnectionError:
            # The client went away; aiohttp's finish_response sees the same and stays quiet.
            log.info("%s %s: client disconnected mid-response", head.method, _log_path(head))
        finally:
            _discard(up, complete)
        return resp

    # -- answers the proxy makes itself --------------------------------------------------

    def _log(self, kind: str, level: int, fmt: str, *args: object) -> None:
        """A log line hostile traffic could repeat per request: at most one per second per kind."""
        if not log.isEnabledFor(level):
            return
        allowed, suppressed = self._throttle.allow(kind)
        if allowed:
            if suppressed:
                fmt += " (%d similar lines suppressed)"
                args = (*args, suppressed)
            log.log(level, fmt, *args)

    def _pushback(self, head: RequestHead, pushback: Pushback) -> web.Response:
        self._log(
            "pushback",
            logging.WARNING,
            "%s %s: pushback (%s); answering 503, Retry-After %d",
            head.method,
            _log_path(head),
            pushback.reason,
            pushback.retry_after,
        )
        resp = _plain(503, _PUSHBACK_BODY)
        resp.headers["Retry-After"] = str(pushback.retry_after)
        return resp

    def _hook_failed(self, head: RequestHead, hook: str, exc: Exception) -> web.Response:
        # SECURITY: the exception type and where it was raised, never its message or a
        # traceback: either may quote the captured bytes (passwords, codes, tokens).
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
        reason = f"capture hook {hook} raised {type(exc).__name__}{where}"
        self._log("hook-failed", logging.ERROR, "%s %s: %s", head.method, _log_path(head), reason)
        return self._pushback(head, Pushback(reason))

    def _over_budget(self, head: RequestHead) -> web.Response:
        self._log(
            "budget",
            logging.WARNING,
            "%s %s: capture budget of %d bytes in use; answering 503",
            head.method,
            _log_path(head),
            self._budget.limit,
        )
        resp = _plain(503, _BUSY_BODY)
        resp.headers["Retry-After"] = "1"
        resp.force_close()  # the body may be unread
        return resp

    def _unreadable(self, head: RequestHead, why: str) -> web.Response:
        self._log("unreadable", logging.WARNING, "%s %s: %s; answering 415", head.method, _log_path(head), why)
        resp = _plain(415, b"request content coding not accepted by the audit sidecar (send the body uncoded)\n")
        resp.force_close()  # the body is never read
        return resp

    def _too_large(self, head: RequestHead, limit: int) -> web.Response:
        self._log(
            "too-large",
            logging.WARNING,
            "%s %s: request body over the capture limit of %d bytes; answering 413",
            head.method,
            _log_path(head),
            limit,
        )
        resp = _plain(413, f"request body too large for the audit sidecar (limit {limit} bytes)\n".encode())
        resp.force_close()  # the rest of the body is never read
        return resp

    def _unreachable(self, head: RequestHead, err: UpstreamError) -> web.Response:
        status = 504 if err.reason == "upstream_timeout" else 502
        self._log(
            "unreachable",
            logging.WARNING,
            "%s %s: upstream Keycloak unreachable (%s); answering %d",
            head.method,
            _log_path(head),
            err,
            status,
        )
        return _plain(status, _UNREACHABLE_BODY)


def _discard(up: aiohttp.ClientResponse, fully_read: bool) -> None:
    """Give the upstream connection back to the pool if reusable, else close it."""
    if fully_read:
        up.release()
    else:
        up.close()


def _socket_port(request: web.Request, scheme: str) -> str:
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        return str(sockname[1])
    return "443" if scheme == "https" else "80"


def _log_path(head: RequestHead) -> str:
    # SECURITY: the raw path without its query: queries carry codes and tokens, and the
    # percent-encoded form cannot smuggle line breaks into the log.
    return head.raw_path.partition("?")[0][:512]
