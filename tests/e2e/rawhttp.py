"""A raw HTTP/1.1 client for tests that must send a request target exactly as written.

aiohttp's client normalises URLs (yarl), so it cannot send `token//`, `%74oken`,
`;x=y` or an absolute-form target. This client writes the request line verbatim,
keeps a small cookie jar like a browser would, and returns status, headers and
body. Test-only; loopback only.
"""

from __future__ import annotations

import asyncio
import html
import re
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlencode, urlsplit

from multidict import CIMultiDict

_FORM_ACTION = re.compile(r'<form[^>]*action="([^"]+)"', re.S)


@dataclass
class Answer:
    status: int
    headers: CIMultiDict[str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def location(self) -> str:
        return self.headers.get("Location", "")

    def location_params(self) -> dict[str, str]:
        parts = urlsplit(self.location)
        return {k: v[0] for k, v in parse_qs(parts.query or parts.fragment).items()}

    def form_action(self) -> str | None:
        m = _FORM_ACTION.search(self.text)
        return html.unescape(m.group(1)) if m else None


@dataclass
class RawClient:
    """Requests to `base` (http://127.0.0.1:port) with the target written as given."""

    base: str
    cookies: dict[str, str] = field(default_factory=dict)

    @property
    def hostport(self) -> tuple[str, int]:
        u = urlsplit(self.base)
        assert u.hostname and u.port
        return u.hostname, u.port

    async def send(
        self,
        method: str,
        target: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        form: dict[str, str] | None = None,
    ) -> Answer:
        host, port = self.hostport
        hdrs = {"Host": f"{host}:{port}", "Connection": "close", **(headers or {})}
        if form is not None:
            body = urlencode(form).encode()
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        if body or method in ("POST", "PUT", "PATCH"):
            hdrs["Content-Length"] = str(len(body))
        if self.cookies:
            hdrs["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        reader, writer = await asyncio.open_connection(host, port)
        try:
            head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
            writer.write(head.encode("latin-1") + body)
            await writer.drain()
            data = await reader.read()
        finally:
            writer.close()
        raw_head, _, rest = data.partition(b"\r\n\r\n")
        lines = raw_head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        got: CIMultiDict[str] = CIMultiDict()
        for line in lines[1:]:
            k, _, v = line.partition(":")
            got.add(k.strip(), v.strip())
        if got.get("Transfer-Encoding", "").lower() == "chunked":
            rest = _unchunk(rest)
        for value in got.getall("Set-Cookie", ()):
            jar: SimpleCookie = SimpleCookie()
            jar.load(value)
            for name, morsel in jar.items():
                if morsel.value and morsel["max-age"] != "0":
                    self.cookies[name] = morsel.value
                else:
                    self.cookies.pop(name, None)
        return Answer(status, got, rest)


def _unchunk(data: bytes) -> bytes:
    out, pos = b"", 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            return out
        size = int(data[pos:end].split(b";")[0] or b"0", 16)
        if size == 0:
            return out
        out += data[end + 2 : end + 2 + size]
        pos = end + 2 + size + 2


def target_of(url: str) -> str:
    """The origin-form request target (path and query) of an absolute URL."""
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def spell(target: str, how: str, base: str) -> str:
    """`target` (origin form, query allowed) spelled another way Keycloak's router may accept.

    `how` is one of `SPELLINGS`; the change is made to the path only (the query is kept),
    at its last segment unless the spelling names another place.
    """
    path, q, query = target.partition("?")
    tail = f"?{query}" if q else ""
    head, _, last = path.rpartition("/")
    if how == "plain":
        return target
    if how == "slash":
        return f"{path}/{tail}"
    if how == "slash-query":
        return f"{path}/?{query}" if q else f"{path}/?x=1"
    if how == "empty-query":
        return f"{path}?{query}" if q else f"{path}?"
    if how == "absolute":
        return f"{base}{target}"
    if how == "double-slash-end":
        return f"{path}//{tail}"
    if how == "double-slash-mid":
        return f"{head}//{last}{tail}"
    if how == "dot":
        return f"{head}/./{last}{tail}"
    if how == "dotdot":
        return f"{head}/x/../{last}{tail}"
    if how == "escaped-letter":
        return f"{head}/%{ord(last[0]):02X}{last[1:]}{tail}"
    if how == "escaped-letter-lower":
        return f"{head}/%{ord(last[0]):02x}{last[1:]}{tail}"
    if how == "matrix":
        return f"{path};x=y{tail}"
    if how == "matrix-mid":
        return f"{head};x=y/{last}{tail}"
    if how == "upper":
        return f"{head}/{last[0].upper()}{last[1:]}{tail}"
    if how == "escaped-slash":
        return f"{head}%2F{last}{tail}"
    raise ValueError(how)


SPELLINGS = (
    "plain",
    "slash",
    "slash-query",
    "empty-query",
    "absolute",
    "double-slash-end",
    "double-slash-mid",
    "dot",
    "dotdot",
    "escaped-letter",
    "escaped-letter-lower",
    "matrix",
    "matrix-mid",
    "upper",
    "escaped-slash",
)
