"""What the capture layer is shown of one HTTP exchange, and what it may answer.

The proxy builds these values; the capture hooks read them. They are plain frozen
values with no I/O, so capture code and its tests never touch aiohttp.

Invariants:

* ``RequestHead`` is cheap to build: it only holds references to what the server
  already parsed (headers, query). It is built for every request, captured or not.
* ``RequestView.body`` and ``ResponseView.body`` are bounded copies for capture. The
  bytes delivered to Keycloak and to the client are never taken from these values.
* ``ResponseView.body`` is always the *decoded* content (Content-Encoding removed), or
  a prefix of it; ``body_truncated`` is true whenever it is not the whole decoded body
  (over the capture limit, an unknown or corrupt encoding, or a cut-off stream).
* ``Pushback`` is a value, not an exception: the proxy turns it into
  503 + Retry-After with a generic body; its ``reason`` only reaches the operator log.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from urllib.parse import parse_qsl

import orjson
from multidict import CIMultiDictProxy, MultiDict, MultiDictProxy

from sidecar.core.jackson import JsonBody, read_json

__all__ = [
    "PASS_THROUGH",
    "CapturePlan",
    "Pushback",
    "RequestHead",
    "RequestView",
    "ResponseView",
    "decode_content",
    "media_type",
]

_FORM = "application/x-www-form-urlencoded"


def media_type(content_type: str | None) -> str:
    """The lower-cased media type of a Content-Type value, without parameters."""
    if not content_type:
        return ""
    return content_type.partition(";")[0].strip().lower()


def _is_json(content_type: str | None) -> bool:
    mt = media_type(content_type)
    return mt == "application/json" or mt.endswith("+json")


def _parse_json(body: bytes) -> object | None:
    if not body:
        return None
    try:
        value: object = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return value


def _charset(content_type: str | None) -> str:
    if content_type:
        for param in content_type.split(";")[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "charset":
                return value.strip().strip('"') or "utf-8"
    return "utf-8"


@dataclass(frozen=True, slots=True)
class RequestHead:
    """The request line and headers as the client sent them, plus who sent them.

    ``path`` is percent-decoded (for routing and classification); ``raw_path`` is the
    request target exactly as received, query included (what is forwarded).
    """

    method: str
    path: str
    raw_path: str
    query: MultiDictProxy[str]
    headers: CIMultiDictProxy[str]
    client_ip: str
    scheme: str
    host: str
    request_id: str


@dataclass(frozen=True, slots=True)
class RequestView:
    """A request with a bounded copy of its body.

    ``body`` is empty when the capture plan did not ask for the request body; then
    ``body_truncated`` is true if the request carried a body at all.
    """

    head: RequestHead
    body: bytes
    body_truncated: bool

    @property
    def method(self) -> str:
        return self.head.method

    @property
    def path(self) -> str:
        return self.head.path

    @property
    def query(self) -> MultiDictProxy[str]:
        return self.head.query

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        return self.head.headers

    @property
    def client_ip(self) -> str:
        return self.head.client_ip

    @property
    def request_id(self) -> str:
        return self.head.request_id

    def form(self) -> MultiDict[str]:
        """The fields of an ``application/x-www-form-urlencoded`` body; empty otherwise."""
        if media_type(self.head.headers.get("Content-Type")) != _FORM or not self.body:
            return MultiDict()
        text = self.body.decode("utf-8", "replace")
        return MultiDict(parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="replace"))

    def json(self) -> object | None:
        """The JSON body as Keycloak reads it (sidecar.core.jackson), or None if it is not JSON."""
        return self.json_body().value

    def json_body(self) -> JsonBody:
        """The JSON body as Keycloak reads it, and whether the sidecar is certain of that reading.

        Keycloak reads a body without Content-Type as JSON; a form body is never JSON.
        """
        mt = media_type(self.head.headers.get("Content-Type"))
        if mt == _FORM or (mt and not _is_json(mt)):
            return JsonBody(None, True)
        if self.body_truncated:
            return JsonBody(None, False, "truncated")
        return read_json(self.body, mt)


@dataclass(frozen=True, slots=True)
class ResponseView:
    """The upstream response: status, headers as received, and its decoded body copy."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    body_truncated: bool

    def json(self) -> object | None:
        """The parsed JSON body, or None if the body is not JSON or does not parse."""
        if not _is_json(self.headers.get("Content-Type")):
            return None
        return _parse_json(self.body)

    def text(self) -> str:
        """The body as text, in the Content-Type charset (UTF-8 by default), never failing."""
        charset = _charset(self.headers.get("Content-Type"))
        try:
            return self.body.decode(charset, "replace")
        except LookupError:  # an unknown charset name from upstream
            return self.body.decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class CapturePlan:
    """Which bodies the capture layer needs for one request (decided from the head alone)."""

    request_body: bool
    response_body: bool


PASS_THROUGH = CapturePlan(False, False)


@dataclass(frozen=True, slots=True)
class Pushback:
    """Refuse this exchange: the client gets 503 + Retry-After and a generic body.

    ``reason`` is for the operator log only; it is never sent to the client.
    """

    reason: str
    retry_after: int = 1

    def __post_init__(self) -> None:
        if self.retry_after < 0:
            raise ValueError(f"retry_after must be >= 0, got {self.retry_after}")


# -- Content-Encoding ---------------------------------------------------------------

_GZIP_WBITS = 16 + zlib.MAX_WBITS
_ZLIB_WBITS = zlib.MAX_WBITS
_RAW_DEFLATE_WBITS = -zlib.MAX_WBITS


def _inflate(data: bytes, wbits: int, limit: int) -> tuple[bytes, bool]:
    """Decompress at most ``limit`` bytes; a gzip body may hold several members."""
    out = bytearray()
    first = True
    while data:
        d = zlib.decompressobj(wbits)
        try:
            out += d.decompress(data, limit + 1 - len(out))
        except zlib.error:
            if first:
                raise
            return bytes(out), True  # garbage after a good gzip member
        first = False
        if len(out) > limit:
            return bytes(out[:limit]), True
        if not d.eof:
            # The input ended mid-stream (a capture cut short): keep what decoded.
            return bytes(out), True
        data = d.unused_data if wbits == _GZIP_WBITS else b""
    return bytes(out), False


def _decode_one(data: bytes, coding: str, limit: int) -> tuple[bytes, bool]:
    if coding in ("gzip", "x-gzip"):
        return _inflate(data, _GZIP_WBITS, limit)
    # HTTP "deflate" means the zlib format; some servers send raw deflate instead.
    try:
        return _inflate(data, _ZLIB_WBITS, limit)
    except zlib.error:
        return _inflate(data, _RAW_DEFLATE_WBITS, limit)


def decode_content(body: bytes, content_encoding: str | None, limit: int) -> tuple[bytes, bool]:
    """Undo a Content-Encoding for capture; returns ``(decoded prefix, truncated)``.

    The output is bounded by ``limit`` bytes (a decompression bomb costs at most that).
    ``truncated`` is true if the output is not the whole decoded body, including when
    the encoding is unknown (br, zstd, ...) or the data is corrupt: then the body is
    empty rather than compressed bytes posing as content.
    """
    if not content_encoding or not body:
        return (body, False) if len(body) <= limit else (body[:limit], True)
    codings = [c.strip().lower() for c in content_encoding.split(",")]
    truncated = False
    # Codings are listed in the order they were applied, so undo them last-first.
    for coding in reversed(codings):
        if coding in ("", "identity"):
            continue
        if coding not in ("gzip", "x-gzip", "deflate"):
            return b"", True
        try:
            body, cut = _decode_one(body, coding, limit)
        except zlib.error:
            return b"", True
        truncated = truncated or cut
    if len(body) > limit:
        return body[:limit], True
    return body, truncated
