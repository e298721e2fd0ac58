"""One parser per format: each refuses what the spec refuses, and none of them fails on arbitrary bytes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.core import framing
from sidecar.core.canonical import NotCanonical, parse_canonical
from sidecar.core.note import NoteError, parse_note
from sidecar.core.record import RecordError, parse_record
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

    edits = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4)
    return st.binary(max_size=600) | st.builds(mutate, st.sampled_from([_HEADER, _RECORD, _NOTE, _SEG0]), edits)


@settings(max_examples=300, deadline=None)
@given(_mutations())
def test_every_parser_returns_or_raises_its_own_error_on_arbitrary_bytes(data: bytes) -> None:
    """Frames, headers, records, notes and whole segments: a value or the format's own error, never a crash."""
    list(framing.iter_frames(data))
    for parse, error in (
        (parse_canonical, NotCanonical),
        (parse_record, RecordError),
        (SegmentHeader.decode, HeaderError),
        (parse_note, NoteError),
    ):
        try:
            parse(data)
        except error:
            pass
    scan_segment("00000000.seg", data)
    scan_segment("00000000.seg", _SEG0[:100] + data)
