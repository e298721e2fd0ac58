"""Segment headers and file names: the header round-trips and its strict parser names each deviation."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from sidecar.core.canonical import canonical_bytes
from sidecar.core.keys import Signer
from sidecar.core.segment import FORMAT, HeaderError, SegmentHeader, segment_name, segment_number

_KEY = Signer.from_seed("ledger.example#0", bytes(32)).public
_HEADER = SegmentHeader(
    origin="ledger.example",
    segment=3,
    first_seq=10,
    prev=b"\x11" * 32,
    range=(b"\x22" * 32, b"\x33" * 32),
    key=_KEY,
    policy="ab" * 32,
    created_ns=1_700_000_000,
)


def test_segment_names_have_eight_digits() -> None:
    """Segment n is `<n as 8 digits>.seg`; segment_number reads it back and refuses other names."""
    assert segment_name(42) == "00000042.seg"
    assert segment_number("00000042.seg") == 42
    assert segment_number("42.seg") is None and segment_number("00000042.seg.tmp") is None


def test_a_header_round_trips_in_both_versions() -> None:
    """decode(encode(h)) == h for kc-ledger/2 and kc-ledger/1 headers."""
    assert _HEADER.format == FORMAT == "kc-ledger/2"
    assert SegmentHeader.decode(_HEADER.encode()) == _HEADER
    v1 = SegmentHeader(**{**{f: getattr(_HEADER, f) for f in SegmentHeader.__slots__}, "version": 1})
    assert SegmentHeader.decode(v1.encode()) == v1 and v1.format == "kc-ledger/1"


def _obj() -> dict[str, Any]:
    obj: dict[str, Any] = orjson.loads(_HEADER.encode())
    return obj


def _change(**kv: Any) -> bytes:
    return canonical_bytes({**_obj(), **kv})


def _without(member: str) -> bytes:
    obj = _obj()
    del obj[member]
    return canonical_bytes(obj)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff", "not JSON"),
        (_HEADER.encode().replace(b",", b", ", 1), "not its canonical"),
        (b"[]", "members differ from those of §10"),
        (_without("policy"), "members differ from those of §10"),
        (_change(extra=1), "members differ from those of §10"),
        (_change(format="kc-ledger/9"), "format is 'kc-ledger/9', expected one of"),
        (_change(format=2), "format is '2', expected one of"),
        (_change(segment=-1), "segment and first_seq must be integers >= 0"),
        (_change(first_seq=True), "segment and first_seq must be integers >= 0"),
        (_change(created="007"), "created is not a decimal string"),
        (_change(created=7), "created is not a decimal string"),
        (_change(prev="AB" * 32), "prev is not 64 lowercase hex digits"),
        (_change(prev=None), "prev is not 64 lowercase hex digits"),
        (_change(range=["ab"]), "range is not a list of 64-digit lowercase hex hashes"),
        (_change(range="ab" * 32), "range is not a list of 64-digit lowercase hex hashes"),
        (_change(origin=""), "origin or policy is not a string"),
        (_change(policy=None), "origin or policy is not a string"),
        (_change(key={**_KEY.to_json(), "key_id": "00000000"}), "key_id '00000000' is not"),
        (_change(key={"name": _KEY.name, "public_key": _KEY.to_json()["public_key"]}), "has no key_id"),
    ],
)
def test_the_header_parser_refuses_each_deviation(body: bytes, reason: str) -> None:
    """Non-canonical bytes, other members, a wrong format, negative numbers, bad hex, a bad key: HeaderError."""
    with pytest.raises(HeaderError, match=f"segment header is malformed: .*{reason}"):
        SegmentHeader.decode(body)
