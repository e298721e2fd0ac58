"""Reading request bodies as Keycloak's Jackson does (each case checked against Keycloak 26.7.3 first)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.core.jackson import detect_encoding, lenient_bool, read_json

DOC = '[{"id":"r1","name":"viewer"}]'


@pytest.mark.parametrize(
    ("body", "codec"),
    [
        (DOC.encode(), "utf-8"),
        (b"\xef\xbb\xbf" + DOC.encode(), "utf-8"),
        (DOC.encode("utf-16-le"), "utf-16-le"),
        (DOC.encode("utf-16-be"), "utf-16-be"),
        (DOC.encode("utf-16"), "utf-16-le"),
        (DOC.encode("utf-32-be"), "utf-32-be"),
        (DOC.encode("utf-32-le"), "utf-32-le"),
        (DOC.encode("utf-32"), "utf-32-le"),
    ],
)
def test_encoding_is_detected_from_the_bytes(body: bytes, codec: str) -> None:
    """UTF-8 (with or without BOM), UTF-16 and UTF-32 in either byte order are told apart as Jackson does."""
    assert detect_encoding(body)[0] == codec
    assert read_json(body, "application/json").value == json.loads(DOC)


@pytest.mark.parametrize(
    ("body", "ctype", "note"),
    [
        (DOC.encode() + b" garbage}}", "application/json", "trailing-content"),
        (b'[{"id":"r1","name":"viewer","description":"\\ud800"}]', "application/json", "lone-surrogate"),
        (DOC.encode(), "", "no-content-type"),
        (b"\xef\xbb\xbf" + DOC.encode(), "application/json", "bom"),
    ],
)
def test_keycloak_reads_what_a_strict_parser_refuses(body: bytes, ctype: str, note: str) -> None:
    """Trailing content, lone surrogates, a missing Content-Type and a BOM still give Keycloak's value, flagged."""
    got = read_json(body, ctype)
    assert not got.certain and got.note is not None and note in got.note
    assert isinstance(got.value, list) and got.value[0]["name"] == "viewer"


@pytest.mark.parametrize("body", [b"/*x*/[]", b"[1,]", b'{"a":NaN}', b'"\xff"', b"[" * 5000 + b"]" * 5000])
def test_what_keycloak_refuses_gives_no_value(body: bytes) -> None:
    """Comments, trailing commas, NaN, invalid UTF-8 and absurd nesting give no value (Keycloak answers 400)."""
    got = read_json(body, "application/json")
    assert got.value is None and not got.certain


@pytest.mark.parametrize("depth", [0, 9, 400])
def test_a_lone_surrogate_is_found_at_any_depth(depth: int) -> None:
    """An escaped lone surrogate in a value or a key, however deeply nested, makes the reading uncertain."""
    for doc in (b'"\\ud800"', b'{"\\udc00":1}'):
        got = read_json(b"[" * depth + doc + b"]" * depth, "application/json; charset=utf-8")
        assert not got.certain and got.note is not None and "lone-surrogate" in got.note


def test_plain_json_is_certain() -> None:
    """A strict UTF-8 document with a JSON Content-Type is read with certainty (the fast path)."""
    got = read_json(DOC.encode(), "application/json")
    assert got.certain and got.note is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (False, False),
        ("false", False),
        (" FALSE ", False),
        ("False", False),
        (0, False),
        (True, True),
        ("true", True),
        (1, True),
        (2, True),
        (-1, True),
        ("no", None),
        ("0", None),
        ("", None),
        (None, None),
        (0.0, None),
        ([], None),
    ],
)
def test_lenient_bool_is_jacksons_coercion(value: object, expected: bool | None) -> None:
    """Booleans coerce as Keycloak applied them: "false", " FALSE ", 0 are false; "no", "0", 0.0 are refused."""
    assert lenient_bool(value) is expected


@given(st.binary(max_size=300), st.sampled_from(["", "application/json", "text/plain"]))
def test_any_bytes_parse_without_raising(body: bytes, ctype: str) -> None:
    """read_json never raises, whatever the bytes."""
    read_json(body, ctype)
