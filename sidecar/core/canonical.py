"""Canonical bytes for everything that is hashed or signed.

The format is RFC 8785 (JCS). For the values we allow, orjson with sorted keys
produces exactly the JCS bytes, about 60 times faster than a pure-Python JCS
encoder, so that is the one encoder used. The allowed values are what makes the
shortcut sound, and `check()` enforces them before encoding:

* no floats (JCS number formatting is where encoders differ);
* integers within +/-(2**53 - 1) (I-JSON's exactly representable range);
* object keys are ASCII (JCS sorts by UTF-16 code units, orjson by code points;
  the two orders agree on ASCII);
* strings are valid Unicode (no lone surrogates).

A test checks orjson's output against the reference `rfc8785` package on
generated values.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

MAX_SAFE_INT = 2**53 - 1  # I-JSON: integers JCS numbers represent exactly


class CanonicalError(ValueError):
    """A value cannot be encoded canonically; the message names the path."""


def check(value: Any, path: str = "$") -> None:
    """Raise CanonicalError if `value` is outside the canonical subset."""
    if value is None or isinstance(value, (bool, str)):
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise CanonicalError(f"{path}: string is not valid Unicode") from exc
        return
    if isinstance(value, int):
        if not -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
            raise CanonicalError(f"{path}: integer {value} is outside +/-(2^53-1)")
        return
    if isinstance(value, float):
        raise CanonicalError(f"{path}: floats are not allowed in records")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or not key.isascii():
                raise CanonicalError(f"{path}: object keys must be ASCII strings, got {key!r}")
            check(item, f"{path}.{key}")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check(item, f"{path}[{i}]")
        return
    raise CanonicalError(f"{path}: type {type(value).__name__} is not allowed in records")


_SCALAR = frozenset({str, bool, type(None)})


def _plainly_safe(value: Any) -> bool:
    """Whether `value` is built only of the exact types `check` accepts, within its bounds (no paths kept).

    The writer's hot path: an iterative walk over values only, without a path string per member.
    Object keys are left to the caller: orjson refuses a key that is not a string (TypeError), and
    `canonical_bytes` asks `check` when the bytes are not ASCII (a non-ASCII key is then named). A
    False only means "ask `check`", which gives the error (or accepts what this walk does not know,
    such as a str subclass). Invalid Unicode (a lone surrogate) is left to orjson, which refuses it.
    """
    t = type(value)
    if t in _SCALAR:
        return True
    if t is int:
        return bool(-MAX_SAFE_INT <= value <= MAX_SAFE_INT)
    if t is not dict and t is not list and t is not tuple:
        return False
    scalar, safe = _SCALAR, MAX_SAFE_INT
    stack = [value]
    pop, push = stack.pop, stack.append
    while stack:
        v = pop()
        for item in v.values() if type(v) is dict else v:
            ti = type(item)
            if ti in scalar:
                continue
            if ti is int:
                if -safe <= item <= safe:
                    continue
                return False
            if ti is dict or ti is list or ti is tuple:
                push(item)
                continue
            return False
    return True


def canonical_bytes(value: Any) -> bytes:
    """Return the RFC 8785 bytes of `value`, after checking it is in the safe subset."""
    if not _plainly_safe(value):
        check(value)
    try:
        out = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:
        check(value)  # names what is wrong (a key that is not a string, invalid Unicode)
        raise CanonicalError(f"$: {exc}") from exc  # what only orjson refuses: nesting over 254 levels
    if not out.isascii() and not _ascii_keys(value):
        check(value)  # a non-ASCII object key (JCS and orjson sort those differently): named and refused
    return out


def _ascii_keys(value: Any) -> bool:
    """Whether every object key in `value` (already known to be plain JSON) is ASCII."""
    stack = [value]
    pop, push = stack.pop, stack.append
    while stack:
        v = pop()
        if type(v) is dict:
            if not "".join(v).isascii():
                return False
            for item in v.values():
                if type(item) in (dict, list, tuple):
                    push(item)
        elif type(v) in (list, tuple):
            for item in v:
                if type(item) in (dict, list, tuple):
                    push(item)
    return True


def parse(data: bytes) -> Any:
    """Parse JSON bytes (the inverse of canonical_bytes for valid input)."""
    return orjson.loads(data)


# Strings in canonical bytes (an unrolled loop: fast in re); removing them leaves only structure,
# numbers and literals. A string directly followed by ':' is an object key.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_KEY = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*":')
# A number with a fraction or exponent at the start or right after ':', ',' or '[' (cheap hint; strings
# may match too).
_FLOAT_HINT = re.compile(rb"(?:^|[:,\[])-?[0-9]+[.eE]")
_FLOAT = re.compile(rb"[0-9][.eE]")


class NotCanonical(ValueError):
    """Bytes that are not the canonical encoding of a value in the subset.

    `code` says how: `not-json` (not UTF-8 JSON at all), `duplicate-key` (an object repeats a
    key), or `not-canonical` (valid JSON, but not these exact bytes: whitespace, key order,
    escaping, a float, an integer beyond +/-(2^53-1), a non-ASCII key).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise NotCanonical("duplicate-key", f"duplicate key {key[:40]!r}")
        seen[key] = value
    return seen


def _diagnose(data: bytes) -> NotCanonical:
    """Why `data` is not canonical (only called on failure, so it may be slow)."""
    try:
        json.loads(data.decode("utf-8"), object_pairs_hook=_reject_duplicates)
    except NotCanonical as exc:
        return exc
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return NotCanonical("not-json", f"not JSON: {str(exc)[:80]}")
    return NotCanonical("not-canonical", "valid JSON, but not its canonical (RFC 8785) encoding")


def parse_canonical(data: bytes) -> Any:
    """Parse bytes that must be exactly the canonical encoding of a value in the subset.

    The one check every reader of hashed JSON uses: parse, re-encode, compare bytes. Equal
    bytes rule out whitespace, other key orders, other escapes and duplicate keys (the
    re-encoding would drop one); what re-encoding keeps as it was (a float such as `1.5`, an
    integer beyond the bound, a non-ASCII key) is checked on the bytes. Raises NotCanonical.
    """
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise _diagnose(data) from None
    try:
        again = orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER)
    except TypeError:  # an integer beyond +/-(2^53-1)
        raise NotCanonical("not-canonical", "an integer is outside +/-(2^53-1)") from None
    if again != data:
        raise _diagnose(data)
    if not data.isascii() and any(not m.group().isascii() for m in _KEY.finditer(data)):
        raise NotCanonical("not-canonical", "an object key is not ASCII")
    if _FLOAT_HINT.search(data) and _FLOAT.search(_STRING.sub(b"", data)):
        raise NotCanonical("not-canonical", "a number has a fraction or an exponent (floats are not allowed)")
    return value
