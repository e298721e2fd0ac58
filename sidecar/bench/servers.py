"""Two small servers the proxy benchmark runs as subprocesses beside the sidecar.

* ``bare-proxy``: the reference of `bench proxy`: a bare aiohttp streaming reverse proxy, the least a
  Python proxy in front of Keycloak does (hop-by-hop headers dropped, X-Forwarded-* set from the
  connection, the body streamed in 64 KiB chunks, no capture, no ledger). Same client, same
  Keycloak, same seconds as the sidecar, so "sidecar CPU per request / bare proxy CPU per request"
  is a ratio measured in one run.
* ``standin``: a fast stand-in for Keycloak that replays recorded Keycloak exchanges
  (tests/capture/exchanges, as `tests/capture/record_exchanges.py` captured them from the real
  server) by method and path, for the headroom run: how many captured requests one sidecar core
  sustains when the upstream costs almost nothing.

    python -m sidecar.bench.servers bare-proxy --upstream http://127.0.0.1:8080 --port 9000
    python -m sidecar.bench.servers standin --recordings tests/capture/exchanges --port 9001 NAME...
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from sidecar import loop

_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


def bare_proxy(upstream: str) -> web.Application:
    """The reference proxy: every request streamed to `upstream` and back, nothing else."""
    base = upstream.rstrip("/")
    app = web.Application()
    session: list[aiohttp.ClientSession] = []

    async def lifespan(app: web.Application) -> Any:
        session.append(
            aiohttp.ClientSession(
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
                timeout=aiohttp.ClientTimeout(total=None, sock_read=60),
            )
        )
        yield
        await session[0].close()

    async def handle(request: web.Request) -> web.StreamResponse:
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP]
        headers += [
            ("X-Forwarded-For", request.remote or ""),
            ("X-Forwarded-Proto", request.scheme),
            ("X-Forwarded-Host", request.host),
        ]
        async with session[0].request(
            request.method,
            URL(base + request.raw_path, encoded=True),
            headers=headers,
            allow_redirects=False,
            data=request.content if request.body_exists else None,
        ) as up:
            resp = web.StreamResponse(
                status=up.status,
                reason=up.reason,
                headers=CIMultiDict((k, v) for k, v in up.headers.items() if k.lower() not in _HOP),
            )
            if up.content_length is not None:
                resp.content_length = up.content_length
            await resp.prepare(request)
            async for chunk in up.content.iter_chunked(64 * 1024):
                await resp.write(chunk)
            await resp.write_eof()
            return resp

    app.cleanup_ctx.append(lifespan)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def _body(doc: dict[str, Any] | None) -> bytes:
    if not doc:
        return b""
    if "form" in doc:
        return urlencode([(k, v) for k, v in doc["form"]], quote_via=quote).encode()
    if "json" in doc:
        return orjson.dumps(doc["json"])
    return str(doc["text"]).encode()


def load_recording(path: Path) -> dict[str, Any]:
    """One recorded exchange as plain values: method, path, raw path, headers and body of both sides."""
    raw = orjson.loads(path.read_bytes())
    req, resp = raw["request"], raw["response"]
    query = [(k, v) for k, v in req["query"]]
    return {
        "name": raw["name"],
        "method": req["method"],
        "path": req["path"],
        "raw_path": req["path"] + ("?" + urlencode(query, quote_via=quote) if query else ""),
        "request_headers": [(k, v) for k, v in req["headers"]],
        "request_body": _body(req["body"]),
        "status": resp["status"],
        "response_headers": [(k, v) for k, v in resp["headers"] if k.lower() not in _HOP],
        "response_body": _body(resp["body"]),
    }


# A pass-through answer for the stand-in: a discovery-sized JSON document (Keycloak 26's is about 6 KB).
_DISCOVERY = orjson.dumps(
    {
        "issuer": "http://127.0.0.1/realms/ledger-test",
        "stand_in": True,
        "endpoints": [f"http://127.0.0.1/realms/ledger-test/protocol/openid-connect/{i:03d}" for i in range(90)],
    }
)


def standin(recordings: Path, names: list[str]) -> web.Application:
    """Answers each (method, path) of the named recordings with the recorded response; 404 otherwise."""
    table: dict[tuple[str, str], dict[str, Any]] = {}
    for name in names:
        rec = load_recording(recordings / f"{name}.json")
        table[(rec["method"], rec["path"])] = rec

    async def handle(request: web.Request) -> web.Response:
        rec = table.get((request.method, request.path))
        await request.read()
        if rec is None and request.path.endswith("/.well-known/openid-configuration"):
            return web.Response(body=_DISCOVERY, content_type="application/json")
        if rec is None:
            return web.Response(status=404, body=b"not recorded\n")
        return web.Response(
            status=rec["status"], headers=CIMultiDict(rec["response_headers"]), body=rec["response_body"]
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sidecar.bench.servers")
    sub = parser.add_subparsers(dest="server", required=True)
    bp = sub.add_parser("bare-proxy")
    bp.add_argument("--upstream", required=True)
    bp.add_argument("--port", type=int, required=True)
    si = sub.add_parser("standin")
    si.add_argument("--recordings", type=Path, required=True)
    si.add_argument("--port", type=int, required=True)
    si.add_argument("names", nargs="+")
    args = parser.parse_args(argv)
    app = bare_proxy(args.upstream) if args.server == "bare-proxy" else standin(args.recordings, args.names)
    new_loop = loop.factory(loop.enabled())  # the sidecar's loop kind, so the ratios compare like with like
    web.run_app(
        app, host="127.0.0.1", port=args.port, print=None, access_log=None, loop=new_loop() if new_loop else None
    )


if __name__ == "__main__":
    main()
