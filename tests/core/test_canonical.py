"""Canonical JSON: what may be encoded, and the strict reader that names why bytes are not canonical.

The equality of canonical_bytes with the reference rfc8785 encoder is a property test in
tests/vectors/test_vectors.py, beside the vectors it protects.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.core.canonical import (
    MAX_SAFE_INT,
    CanonicalError,
    NotCanonical,
    canonical_bytes,
    check,
    parse,
    parse_canonical,
)


def test_values_in_the_subset_encode_sorted_and_compact() -> None:
    """Keys sorted, no whitespace, tuples as arrays, the integer bounds included."""
    value = {"b": [1, (2, None)], "a": {"z": True, "y": "é"}, "n": -MAX_SAFE_INT, "m": MAX_SAFE_INT}
    data = canonical_bytes(value)
    assert data == b'{"a":{"y":"\xc3\xa9","z":true},"b":[1,[2,null]],"m":9007199254740991,"n":-9007199254740991}'
    assert parse(data) == parse_canonical(data) == {**value, "b": [1, [2, None]]}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"a": [1, 2.5]}, r"\$\.a\[1\]: floats are not allowed in records"),
        ({"x": MAX_SAFE_INT + 1}, r"\$\.x: integer 9007199254740992 is outside"),
        (-MAX_SAFE_INT - 1, r"\$: integer -9007199254740992 is outside"),
        ({"é": 1}, r"\$: object keys must be ASCII strings, got 'é'"),
        ({1: "x"}, r"\$: object keys must be ASCII strings, got 1"),
        (["\ud800"], r"\$\[0\]: string is not valid Unicode"),
        ({"a": b"bytes"}, r"\$\.a: type bytes is not allowed in records"),
        ({"a": {1, 2}}, r"\$\.a: type set is not allowed in records"),
    ],
)
def test_check_names_the_path_of_a_value_outside_the_subset(value: Any, message: str) -> None:
    """Floats, big integers, non-ASCII or non-string keys, lone surrogates and other types: the path is named."""
    with pytest.raises(CanonicalError, match=message):
        check(value)
    with pytest.raises(CanonicalError):
        canonical_bytes(value)


@pytest.mark.parametrize(
    ("data", "code", "message"),
    [
        (b"\xff{}", "not-json", "not JSON"),
        (b'{"a":', "not-json", "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not-json", "not JSON"),
        (b'{"a":1,"a":1}', "duplicate-key", "duplicate key 'a'"),
        (b'{"a":1,"a":2}', "duplicate-key", "duplicate key 'a'"),
        (b'{"a": 1}', "not-canonical", "not its canonical"),
        (b'{"b":1,"a":2}', "not-canonical", "not its canonical"),
        (b'"\\u0041"', "not-canonical", "not its canonical"),
        (b'{"a":1}\n', "not-canonical", "not its canonical"),
        (b"9007199254740992", "not-canonical", "outside"),
        (b'{"\xc3\xa9":1}', "not-canonical", "an object key is not ASCII"),
        (b"1.5", "not-canonical", "a fraction or an exponent"),
        (b"[1,2e3]", "not-canonical", "not its canonical"),
        (b"[1,2.5]", "not-canonical", "a fraction or an exponent"),
        (b'{"a":-0.5}', "not-canonical", "a fraction or an exponent"),
    ],
)
def test_parse_canonical_refuses_each_deviation_with_its_code(data: bytes, code: str, message: str) -> None:
    """Not JSON, duplicate keys, whitespace, key order, escapes, big integers, non-ASCII keys, floats: each coded."""
    with pytest.raises(NotCanonical, match=message) as err:
        parse_canonical(data)
    assert err.value.code == code


@pytest.mark.parametrize(
    "data",
    [
        b'"1.5"',
        b'{"a":"x:1.5"}',
        b'{"k":"[1e5"}',
        b'"\xc3\xa9"',
        b'{"a":"\xc3\xa9"}',
        b"[1,-2,0]",
        b"null",
    ],
)
def test_parse_canonical_accepts_what_only_looks_suspicious(data: bytes) -> None:
    """Float-like text inside strings and non-ASCII string values are canonical."""
    assert canonical_bytes(parse_canonical(data)) == data


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-MAX_SAFE_INT, MAX_SAFE_INT) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(st.characters(max_codepoint=0x7F), max_size=4), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(_values)
def test_parse_canonical_inverts_canonical_bytes(value: Any) -> None:
    """Whatever canonical_bytes encodes, parse_canonical reads back unchanged."""
    assert canonical_bytes(parse_canonical(canonical_bytes(value))) == canonical_bytes(value)


_ANY = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**60), 2**60)
    | st.floats(allow_nan=False)
    | st.text(max_size=6)
    | st.sampled_from(["\ud800", "caf\u00e9", b"bytes"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner)
        | st.dictionaries(st.text(max_size=3) | st.integers(0, 3), inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(_ANY)
def test_the_fast_walk_accepts_exactly_what_check_accepts(value: Any) -> None:
    """canonical_bytes accepts a value exactly when check() does and orjson encodes it, with the same bytes."""
    try:
        check(value)
        expected: bytes | None = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except (CanonicalError, TypeError):
        expected = None
    try:
        got: bytes | None = canonical_bytes(value)
    except (CanonicalError, TypeError):
        got = None
    assert got == expected


def test_nesting_orjson_cannot_encode_is_a_canonical_error() -> None:
    """A value nested deeper than orjson encodes is refused as a CanonicalError, never a bare TypeError."""
    deep: list[Any] = []
    for _ in range(300):
        deep = [deep]
    with pytest.raises(CanonicalError, match="Recursion limit"):
        canonical_bytes(deep)


@pytest.mark.parametrize(("value", "message"), [(1.5, "floats are not allowed"), (b"x", "type bytes is not allowed")])
def test_a_top_level_value_outside_the_subset_is_refused_by_name(value: Any, message: str) -> None:
    """A lone float or bytes value (not inside a container) is refused with check()'s message."""
    with pytest.raises(CanonicalError, match=message):
        canonical_bytes(value)
