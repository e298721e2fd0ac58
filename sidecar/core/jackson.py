"""Reading a JSON request body the way Keycloak (RESTEasy Reactive + Jackson) reads it. [pure]

The sidecar must see in a request what Keycloak will apply, or know that it
cannot. Jackson, as Keycloak 26 configures it, differs from a strict JSON parser:

* the encoding is detected from the bytes, as JSON (RFC 4627 §3) allows: a BOM
  (UTF-8, UTF-16 BE/LE, UTF-32 BE/LE) or the pattern of zero bytes in the first
  four; the Content-Type charset does not decide it;
* only the first JSON value is read: trailing content after it is ignored;
* `\\ud800`-style escapes of lone surrogates are accepted;
* no Content-Type at all is read as JSON;
* scalars are coerced into the declared field type: `"false"` and `0` are a
  boolean false for `enabled` (`lenient_bool`), `"5"` an integer.

`read_json` returns the value and whether the sidecar is *certain* Keycloak reads
the same (a plain, strictly valid UTF-8 JSON document with a JSON Content-Type).
When it is not, the capture record says so (`details.body_read`), and for access
changes the state Keycloak reports before and after is what the record asserts.
"""

from __future__ import annotations

import codecs
import json
from dataclasses import dataclass

import orjson

_BOMS = (
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),  # before UTF-16 LE: FF FE 00 00 starts with FF FE
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
)
_MAX_DEPTH = 500  # Jackson's default nesting limit is 1000; Python's recursion ends near it


@dataclass(frozen=True, slots=True)
class JsonBody:
    """A parsed request body: its first JSON value, and whether Keycloak surely reads the same."""

    value: object | None
    certain: bool
    note: str | None = None  # why not certain: "bom", "utf-16-le", "trailing-content", "no-content-type", ...


def detect_encoding(data: bytes) -> tuple[str, int]:
    """(codec, BOM length) as Jackson's ByteSourceJsonBootstrapper decides it."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            return codec, len(bom)
    head = data[:4]
    if len(head) == 4:
        if head[0] == head[1] == head[2] == 0 and head[3]:
            return "utf-32-be", 0
        if head[0] and head[1] == head[2] == head[3] == 0:
            return "utf-32-le", 0
    if len(head) >= 2:
        if head[0] == 0 and head[1]:
            return "utf-16-be", 0
        if head[0] and head[1] == 0:
            return "utf-16-le", 0
    return "utf-8", 0


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _depth_ok(text: str) -> bool:
    depth = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            if depth > _MAX_DEPTH:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def read_json(body: bytes, media_type: str) -> JsonBody:
    """The first JSON value of `body`, as Keycloak reads it (see the module docstring).

    `media_type` is the lower-cased media type without parameters ("" when absent).
    """
    if not body:
        return JsonBody(None, True)
    json_type = media_type == "application/json" or media_type.endswith("+json")
    if json_type:
        try:
            return JsonBody(orjson.loads(body), True)  # the common case: strict, UTF-8, one value
        except orjson.JSONDecodeError:
            pass
    codec, skip = detect_encoding(body)
    notes = []
    if not json_type:
        notes.append("no-content-type" if not media_type else "content-type")
    if skip:
        notes.append("bom")
    if codec != "utf-8":
        notes.append(codec)
    try:
        text = body[skip:].decode(codec)
    except UnicodeDecodeError:
        return JsonBody(None, False, ",".join([*notes, "undecodable"]))
    if not _depth_ok(text):
        return JsonBody(None, False, ",".join([*notes, "too-deep"]))
    decoder = json.JSONDecoder(parse_constant=_reject_constant)
    start = len(text) - len(text.lstrip(" \t\r\n"))
    try:
        value, end = decoder.raw_decode(text, start)
    except (ValueError, RecursionError):
        return JsonBody(None, False, ",".join([*notes, "unparsable"]))
    if text[end:].strip(" \t\r\n"):
        notes.append("trailing-content")
    if any(_has_surrogate(s) for s in _strings(value)):
        notes.append("lone-surrogate")
    return JsonBody(value, not notes, ",".join(notes) or None)


def _strings(value: object) -> list[str]:
    """Every string in the value, keys included, at any depth (iterative: nesting is bounded by
    _MAX_DEPTH, not by the recursion limit; a surrogate hidden deep is still found)."""
    found: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            found.append(item)
        elif isinstance(item, dict):
            found.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(ch) <= 0xDFFF for ch in text)


def lenient_bool(value: object) -> bool | None:
    """A JSON value as Jackson coerces it into a `Boolean` field (None: null, absent or not coercible)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str):
        text = value.strip()
        if text in ("true", "True", "TRUE"):
            return True
        if text in ("false", "False", "FALSE"):
            return False
    return None
