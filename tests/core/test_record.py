"""Records: encoding, hashing, the genesis hash, and the one strict record parser with its finding codes."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.core.record import (
    Record,
    RecordError,
    decode_record,
    encode_record,
    genesis_hash,
    parse_record,
    record_hash,
    record_object,
)


def test_the_genesis_hash_ties_a_log_to_its_origin() -> None:
    """genesis_hash is SHA-256 of the fixed prefix and the origin."""
    assert genesis_hash("o") == hashlib.sha256(b"kc-ledger/1 genesis\no").digest() != genesis_hash("p")


def test_a_record_hash_is_the_merkle_leaf_hash_of_its_bytes() -> None:
    """The record's hash is SHA-256(0x00 || body), also on the parsed Record."""
    body = encode_record(0, 1, bytes(32), {"type": "t", "outcome": "o"})
    assert record_hash(body) == hashlib.sha256(b"\x00" + body).digest() == parse_record(body).hash


def test_version_1_records_parse_without_type_and_outcome() -> None:
    """A kc-ledger/1 record's event need not carry type and outcome; its type reads as ''."""
    body = encode_record(3, 9, bytes(32), {"what": 1}, version=1)
    rec = parse_record(body, version=1)
    assert (rec.version, rec.type, rec.event) == (1, "", {"what": 1})
    assert decode_record(body) == rec
    with pytest.raises(RecordError, match="record version is 1, expected 2"):
        parse_record(body, version=2)


def test_record_object_gives_the_checked_fields_as_json() -> None:
    """record_object returns the record's members after the strict checks."""
    body = encode_record(7, 123, b"\x01" * 32, {"type": "t", "outcome": "o"})
    assert record_object(body) == {
        "event": {"type": "t", "outcome": "o"},
        "prev": "01" * 32,
        "seq": 7,
        "ts": "123",
        "v": 2,
    }
    assert parse_record(body) == Record(7, 123, b"\x01" * 32, {"type": "t", "outcome": "o"}, body, 2)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**53 - 1), st.integers(0, 2**63), st.binary(min_size=32, max_size=32))
def test_a_record_the_writer_encodes_parses_back_to_the_same_fields(seq: int, ts: int, prev: bytes) -> None:
    """parse_record is the inverse of encode_record for every seq, ts and prev."""
    body = encode_record(seq, ts, prev, {"type": "login.succeeded", "outcome": "succeeded"})
    rec = parse_record(body)
    assert (rec.seq, rec.ts_ns, rec.prev, rec.version) == (seq, ts, prev, 2)


_GOOD = b'{"event":{"outcome":"succeeded","type":"x"},"prev":"' + b"ab" * 32 + b'","seq":1,"ts":"5","v":2}'


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (_GOOD.replace(b'"seq":1', b'"seq":true'), "record-malformed"),
        (_GOOD.replace(b"ab" * 32, b"ab" * 5), "record-malformed"),
        (_GOOD.replace(b"ab" * 32, b"AB" * 32), "record-malformed"),
        (_GOOD.replace(b'"ts":"5"', b'"ts":"05"'), "record-malformed"),
        (_GOOD.replace(b'"ts":"5"', b'"ts":5'), "record-malformed"),
        (_GOOD.replace(b'"v":2', b'"v":3'), "record-malformed"),
        (_GOOD.replace(b'"v":2', b'"v":true'), "record-malformed"),
        (_GOOD.replace(b'"event":{"outcome":"succeeded","type":"x"}', b'"event":[]'), "record-malformed"),
        (_GOOD.replace(b'"type":"x"', b'"type":1'), "record-malformed"),
        (_GOOD.replace(b'"' + b"ab" * 32 + b'"', b"1"), "record-malformed"),
        (_GOOD.replace(b'"seq":1', b'"seq":9007199254740992'), "record-not-canonical"),
        (_GOOD.replace(b'"seq":1', b'"seq":1.0'), "record-not-canonical"),
        (_GOOD.replace(b'"seq":1', b'"seq":-1'), "record-malformed"),
        (_GOOD.replace(b'"seq":1,', b'"seq":1,"seq":1,'), "record-duplicate-key"),
        (_GOOD.replace(b'"event":{', b'"event": {'), "record-not-canonical"),
        (_GOOD.replace(b'"outcome":"succeeded",', b""), "record-malformed"),
        (_GOOD[:-1] + b',"x":1}', "record-malformed"),
        (b"\xff" + _GOOD, "record-not-json"),
        (b"[1,2]", "record-malformed"),
    ],
)
def test_the_record_parser_refuses_each_deviation_with_its_code(body: bytes, code: str) -> None:
    """`"seq": true`, a short or uppercase prev, a padded ts, floats, duplicate keys, whitespace: each has its code."""
    assert parse_record(_GOOD).seq == 1
    with pytest.raises(RecordError) as err:
        parse_record(body)
    assert err.value.code == code
