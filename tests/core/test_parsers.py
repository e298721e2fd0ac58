"""One parser per format: each refuses what the spec refuses, and none of them fails on arbitrary bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.core import framing
from sidecar.core.canonical import NotCanonical, parse_canonical
from sidecar.core.note import NoteError, parse_note
from sidecar.core.record import RecordError, encode_record, parse_record
from sidecar.core.segment import HeaderError, SegmentHeader
from sidecar.core.verify import scan_segment
from tests.vectors.test_vectors import VECTORS

_SEG0 = (VECTORS / "segments" / "00000000.seg").read_bytes()
_FRAMES = [f for f in framing.iter_frames(_SEG0) if isinstance(f, framing.Frame)]
_HEADER = _FRAMES[0].body
_RECORD = next(f.body for f in _FRAMES if f.kind == framing.RECORD)
_NOTE = next(f.body for f in _FRAMES if f.kind == framing.CHECKPOINT)


def _mutations() -> st.SearchStrategy[bytes]:
    """Arbitrary bytes, and valid bodies with a few bytes changed, cut or inserted."""
    def mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
        out = bytearray(data)
        for op, pos, value in edits:
            if not out:
                break
            i = pos % len(out)
            if op == 0:
                out[i] = value
            elif op == 1:
                del out[i]
            else:
                out.insert(i, value)
        return bytes(out)

    edits = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 10_000), st.integers(0, 255)), min_size=1,
                     max_size=4)
    return st.binary(max_size=600) | st.builds(mutate, st.sampled_from([_HEADER, _RECORD, _NOTE, _SEG0]), edits)


@settings(max_examples=300, deadline=None)
@given(_mutations())
def test_every_parser_returns_or_raises_its_own_error_on_arbitrary_bytes(data: bytes) -> None:
    """Frames, headers, records, notes and whole segments: a value or the format's own error, never a crash."""
    list(framing.iter_frames(data))
    for parse, error in ((parse_canonical, NotCanonical), (parse_record, RecordError),
                         (SegmentHeader.decode, HeaderError), (parse_note, NoteError)):
        try:
            parse(data)  # type: ignore[operator]
        except error:
            pass
    scan_segment("00000000.seg", data)
    scan_segment("00000000.seg", _SEG0[:100] + data)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**53 - 1), st.integers(0, 2**63), st.binary(min_size=32, max_size=32))
def test_a_record_the_writer_encodes_parses_back_to_the_same_fields(seq: int, ts: int, prev: bytes) -> None:
    """parse_record is the inverse of encode_record for every seq, ts and prev."""
    body = encode_record(seq, ts, prev, {"type": "login.succeeded", "outcome": "succeeded"})
    rec = parse_record(body)
    assert (rec.seq, rec.ts_ns, rec.prev, rec.version) == (seq, ts, prev, 2)


_GOOD = b'{"event":{"outcome":"succeeded","type":"x"},"prev":"' + b"ab" * 32 + b'","seq":1,"ts":"5","v":2}'


@pytest.mark.parametrize(("body", "code"), [
    (_GOOD.replace(b'"seq":1', b'"seq":true'), "record-malformed"),
    (_GOOD.replace(b"ab" * 32, b"ab" * 5), "record-malformed"),
    (_GOOD.replace(b"ab" * 32, b"AB" * 32), "record-malformed"),
    (_GOOD.replace(b'"ts":"5"', b'"ts":"05"'), "record-malformed"),
    (_GOOD.replace(b'"ts":"5"', b'"ts":5'), "record-malformed"),
    (_GOOD.replace(b'"v":2', b'"v":3'), "record-malformed"),
    (_GOOD.replace(b'"seq":1', b'"seq":1.0'), "record-not-canonical"),
    (_GOOD.replace(b'"seq":1', b'"seq":-1'), "record-malformed"),
    (_GOOD.replace(b'"seq":1,', b'"seq":1,"seq":1,'), "record-duplicate-key"),
    (_GOOD.replace(b'"event":{', b'"event": {'), "record-not-canonical"),
    (_GOOD.replace(b'"outcome":"succeeded",', b''), "record-malformed"),
    (_GOOD[:-1] + b',"x":1}', "record-malformed"),
    (b"\xff" + _GOOD, "record-not-json"),
    (b"[1,2]", "record-malformed"),
])
def test_the_record_parser_refuses_each_deviation_with_its_code(body: bytes, code: str) -> None:
    """`"seq": true`, a short or uppercase prev, a padded ts, floats, duplicate keys, whitespace: each has its code."""
    assert parse_record(_GOOD).seq == 1
    with pytest.raises(RecordError) as err:
        parse_record(body)
    assert err.value.code == code


@pytest.mark.parametrize("change", [
    (b"\ntime ", b"\ntime 0"),  # leading zero
    (b"\n\n", b"\nextra line\n\n"),  # unknown extension
    (b"\xe2\x80\x94 ", b"- "),  # not an em dash
])
def test_the_note_parser_is_strict(change: tuple[bytes, bytes]) -> None:
    """A leading zero, an unknown extension line or a signature line without an em dash is a NoteError."""
    assert parse_note(_NOTE).checkpoint.segment is not None
    with pytest.raises(NoteError):
        parse_note(_NOTE.replace(*change, 1))


def test_a_witness_cosignature_line_is_kept_beside_the_log_signature() -> None:
    """A 104-character cosignature line (4-byte id, 8-byte time, 64-byte signature) parses and is not Ed25519."""
    line = "— witness.example/w1 " + "A" * 104 + "\n"
    note = parse_note(_NOTE + line.encode())
    assert len(note.signatures) == 2 and len(note.ed25519) == 1
