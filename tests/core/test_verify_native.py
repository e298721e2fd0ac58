"""The C hot loop of the batched scan (sidecar/core/_native.c) against the pure-Python path and the reference.

The C loop is a fast path only: it vouches for clean records and leaves every other one to the
Python checks, so the batched scan with it must give exactly the `SegmentScan` of the pure-Python
batched scan (or both give up), and findings always come from `scan_reference`. These tests run
both paths on every committed vector segment, on records with escapes, non-ASCII text, encrypted
values, erasures and withheld values, and on random damage; and they check the C canonical-JSON
validator against `parse_canonical` on generated and mutated bodies.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.clock import FixedClock
from sidecar.core import framing, verify
from sidecar.core.canonical import NotCanonical, parse_canonical
from sidecar.core.verify import _scan_batched, scan_reference, scan_segment
from sidecar.ledger.keystore import KeyStore
from sidecar.testing import append_events, damage, segment_paths, synthetic_event

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
ALL_SEGMENTS = sorted(VECTORS.rglob("*.seg"))

# Every test below needs the extension; tests/core/test_native.py fails where it is missing by accident.
native = pytest.mark.skipif(verify._native is None, reason="the C extension is not built (SIDECAR_NATIVE=0 run)")


def _scans(name: str, data: bytes, sizes: frozenset[int] = frozenset()) -> verify.SegmentScan | None:
    """The batched scan both ways; they must agree, and a scan that does not give up equals the reference."""
    fast = _scan_batched(name, data, sizes, native=True)
    pure = _scan_batched(name, data, sizes, native=False)
    assert fast == pure
    if fast is not None:
        assert fast == scan_reference(name, data, sizes)
    return fast


@native
@pytest.mark.parametrize("path", ALL_SEGMENTS, ids=lambda p: str(p.relative_to(VECTORS)))
def test_every_vector_segment_scans_the_same_natively(path: Path) -> None:
    """On every committed vector segment (clean, tampered, kc-ledger/1) the C path equals the pure path and the reference."""
    data = path.read_bytes()
    _scans(path.name, data)
    _scans(path.name, data, frozenset(range(0, 40, 3)))


def _odd_event(i: int) -> dict[str, Any]:
    """Events with every shape the C loop either handles or leaves to Python."""
    event = synthetic_event(i)
    shapes: list[dict[str, Any]] = [
        {"note": 'quote " backslash \\ newline \n tab \t ctl \x01 del \x7f', "n": -i},
        {"name": "Zoë Ångström 名前 😀 \u2028", "ip": "10.0.0.1", "v": "1.5e3"},
        {"email": {"ct": "AAAA", "kc-enc": 1, "n": "BBBB", "sub": f"u-{i:04d}"}},
        {"a": [{"kc-enc": 1, "sub": "s-1"}, {"kc-enc": True, "sub": "s-2"}], "b": {"kc-enc": 2, "sub": "s-3"}},
        {"outer": {"kc-enc": 1, "sub": "s-4", "inner": {"kc-enc": 1, "sub": "s-5"}}},  # nested: left to Python
        {"email": {"kc-enc": 1, "sub": 'quoted "sub"'}},  # an escaped subject: left to Python
        {"email": {"kc-enc": 1, "sub": 7}},
        {"erased_fields": ["actor.username"], "n": i},  # withheld: left to Python
        {"esc\nkey": 1},  # an escaped key: left to Python
        {"deep": [[[[[[[[[[1]]]]]]]]]], "big": 2**53 - 1, "neg": -(2**53 - 1), "zero": 0, "t": True, "f": None},
    ]
    if i % 13 == 11:  # an erasure: left to Python
        event["type"] = "subject.erased"
        event["details"] = {"subject": f"u-{i:04d}", "pseudonyms": ["p-1"]}
    elif i % 13 == 12:
        event["type"] = "type with ünïcode"
    else:
        event["details"] = shapes[i % 13 % len(shapes)]
    return event


@pytest.fixture(scope="module")
def odd_ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("odd-native")
    KeyStore(path).init("test.local/odd-native")
    events = [_odd_event(i) for i in range(300)]
    asyncio.run(append_events(path, events, clock=FixedClock(), segment_max_bytes=16384))
    return path


@native
def test_special_records_scan_the_same_natively(odd_ledger: Path) -> None:
    """Segments with escaped, non-ASCII, encrypted, erasure and withheld records scan the same both ways, and not by giving up."""
    taken = 0
    for path in segment_paths(odd_ledger):
        data = path.read_bytes()
        fast = _scans(path.name, data, frozenset(range(0, 400, 7)))
        taken += fast is not None
    assert taken == len(segment_paths(odd_ledger))


LEFT_TO_PYTHON = [
    {"outer": {"kc-enc": 1, "sub": "s-4", "inner": {"kc-enc": 1, "sub": "s-5"}}},
    {"email": {"kc-enc": 1, "sub": 'quoted "sub"'}},
    {"esc\nkey": 1},
]


def _left_to_python(event: dict[str, Any]) -> bool:
    details = event.get("details")
    return event["type"] == "subject.erased" or details in LEFT_TO_PYTHON or "erased_fields" in (details or {})


@native
def test_the_c_loop_vouches_for_clean_records_and_leaves_the_rest(odd_ledger: Path) -> None:
    """The C loop takes every record of the odd ledger itself except exactly the shapes it leaves to Python."""
    vouched = left = 0
    for path in segment_paths(odd_ledger):
        data = path.read_bytes()
        scan = scan_reference(path.name, data)
        assert scan.header is not None and not scan.findings
        for frame in framing.iter_frames(data):
            assert isinstance(frame, framing.Frame)
            if frame.kind != framing.RECORD:
                continue
            rec = orjson.loads(frame.body)
            pos, n, leaves, *_ = verify._native.scan_records(
                data, frame.offset, 2, rec["seq"], bytes.fromhex(rec["prev"]), int(rec["ts"]), 1
            )
            vouched += n
            left += n == 0
            assert (n == 0) == _left_to_python(rec["event"]), rec
            assert (pos, len(leaves)) == ((frame.offset + len(frame.body) + 9, 32) if n else (frame.offset, 0))
    assert vouched > left > 0


@native
def test_long_runs_are_taken_in_pieces_with_the_same_scan(odd_ledger: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run longer than what the C loop takes per call is taken in pieces, and the scan still equals the reference."""
    monkeypatch.setattr(verify, "_NATIVE_MAX", 3)
    for path in segment_paths(odd_ledger):
        data = path.read_bytes()
        sizes = frozenset(range(0, 400, 5))
        fast = _scan_batched(path.name, data, sizes, native=True)
        assert fast is not None and fast == scan_reference(path.name, data, sizes)


@native
def test_many_event_types_end_a_call_early_with_the_same_scan(tmp_path: Path) -> None:
    """More distinct event types than the C loop counts in one call still give the reference's scan."""
    events = [{**synthetic_event(i), "type": f"custom.type-{i}"} for i in range(150)]
    KeyStore(tmp_path).init("test.local/types")
    asyncio.run(append_events(tmp_path, events, clock=FixedClock(), segment_max_bytes=1 << 20))
    for path in segment_paths(tmp_path):
        assert _scans(path.name, path.read_bytes()) is not None


@native
@settings(max_examples=200, deadline=None)
@given(st.data())
def test_damaged_segments_scan_the_same_natively(odd_ledger: Path, data: st.DataObject) -> None:
    """After any overwritten, inserted or deleted bytes both paths give the same scan (or both give up), and the same findings."""
    path = data.draw(st.sampled_from(segment_paths(odd_ledger)))
    raw = path.read_bytes()
    at = data.draw(st.integers(0, len(raw) - 1))
    how = data.draw(st.sampled_from(["set", "insert", "delete"]))
    damaged = damage(raw, at, how, data.draw(st.binary(min_size=1, max_size=4)))
    _scans(path.name, damaged)
    findings = []
    was = verify.NATIVE
    for flag in (True, False):
        verify.NATIVE = flag
        try:
            findings.append(scan_segment(path.name, damaged).findings)
        finally:
            verify.NATIVE = was
    assert findings[0] == findings[1]


def test_the_pure_path_runs_when_turned_off(odd_ledger: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the C loop turned off (or not built) the batched scan runs in Python and still equals the reference."""
    monkeypatch.setattr(verify, "NATIVE", False)
    for path in segment_paths(odd_ledger):
        data = path.read_bytes()
        fast = _scan_batched(path.name, data, frozenset())
        assert fast is not None and fast == scan_reference(path.name, data)


# ----------------------------------------------------------------------------- the canonical-JSON validator

_KEYS = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=4) | st.text(max_size=3)
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**60), 2**60)
    | st.sampled_from([0, -1, 2**53 - 1, -(2**53 - 1), 2**53, -(2**53), 10**16])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=3),
    max_leaves=10,
)
_NOISE = [b" ", b"\\", b'"', b"\\u0041", b"\\u001F", b"\\/", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"-0",
          b"01", b"1.0", b"1e5", b",", b":", b"}", b"]", b"{", b"[", b"\x00", b"\x7f", b"\xe2\x80\xa8", b"tru", b"nul"]  # fmt: skip


def _python_says(body: bytes) -> bool:
    try:
        parse_canonical(body)
    except NotCanonical:
        return False
    return True


def _agrees(body: bytes) -> int:
    """The C verdict on `body`, checked against parse_canonical: 1 and 0 must match it; -1 only for what C leaves to Python."""
    got = verify._native.canonical(body)
    if got == -1:
        assert b"\\" in body or body.count(b"[") + body.count(b"{") > 200
    else:
        assert got == _python_says(body), body
    return got


@native
@settings(max_examples=600, deadline=None)
@given(_JSON, st.sampled_from(["canonical", "orjson", "json-spaced"]))
def test_the_c_validator_agrees_with_parse_canonical_on_values(value: Any, how: str) -> None:
    """On encodings of generated values the C validator says canonical exactly when parse_canonical accepts."""
    if how == "canonical":
        body = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    elif how == "orjson":
        body = orjson.dumps(value)
    else:
        body = orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)
    got = _agrees(body)
    if how == "canonical" and got == 1:
        return
    if how == "canonical" and _python_says(body) and b"\\" not in body:
        assert got == 1  # no escape: the C validator must decide, not pass it on


@native
@settings(max_examples=800, deadline=None)
@given(_JSON, st.data())
def test_the_c_validator_agrees_with_parse_canonical_on_mutations(value: Any, data: st.DataObject) -> None:
    """After inserting, overwriting or deleting bytes of a canonical body, the C validator still agrees with parse_canonical."""
    raw = bytearray(orjson.dumps(value, option=orjson.OPT_SORT_KEYS))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(raw)))
        chunk = data.draw(st.sampled_from(_NOISE) | st.binary(min_size=1, max_size=3))
        how = data.draw(st.sampled_from(["insert", "set", "delete"]))
        if how == "insert":
            raw[at:at] = chunk
        elif how == "set":
            raw[at : at + len(chunk)] = chunk
        else:
            del raw[at : at + len(chunk)]
    _agrees(bytes(raw))


@native
def test_the_c_validator_on_named_cases() -> None:
    """Named edge cases of docs/format.md §3 get the same verdict from the C validator as from parse_canonical."""
    cases = [b"", b"{}", b"[]", b'""', b"0", b"-0", b"01", b"1.5", b"1E3", b"9007199254740991", b"9007199254740992",
             b"-9007199254740991", b"-9007199254740992", b"12345678901234567", b'{"a":1,"a":2}', b'{"b":1,"a":2}',
             b'{"a":1,"ab":2}', b'{"ab":1,"a":2}', b'{"\xc3\xa9":1}', b'"\\u001f"', b'"\\u001F"', b'"\\u0008"',
             b'"\\b\\f\\n\\r\\t\\"\\\\"', b'"\\/"', b'"\x7f"', b'"\x1f"', b'"\xed\xa0\x80"', b'"\xf0\x9f\x98\x80"',
             b'"\xc0\xaf"', b'"\xe0\x80\xaf"', b'"\xf0\x80\x80\xaf"', b'"\xf4\x90\x80\x80"', b"true", b"truex",
             b"nul", b"[1,]", b"[,1]", b'{"a":}', b'{"a"1}', b"[1 ]", b"-", b'"a', b"[" * 199 + b"]" * 199]  # fmt: skip
    for body in cases:
        _agrees(body)
    assert verify._native.canonical(b"[" * 250 + b"]" * 250) == -1
    assert verify._native.canonical(b'{"a\\nb":1}') == -1


def _reframed(path: Path, edit: int | None, cut: bool) -> bytes:
    """The segment rebuilt frame by frame: record number `edit` re-framed with a wrong seq (a valid CRC), the rest cut after the last record if `cut`."""
    frames = [f for f in framing.iter_frames(path.read_bytes()) if isinstance(f, framing.Frame)]
    if cut:
        last = max(i for i, f in enumerate(frames) if f.kind == framing.RECORD)
        frames = frames[: last + 1]
    out, n = [], 0
    for f in frames:
        body = f.body
        if f.kind == framing.RECORD:
            if n == edit:
                rec = orjson.loads(body)
                body = orjson.dumps({**rec, "seq": rec["seq"] + 1}, option=orjson.OPT_SORT_KEYS)
            n += 1
        out.append(framing.encode_frame(f.kind, body))
    return b"".join(out)


@pytest.mark.parametrize("run_max", [3, 1024])
@pytest.mark.parametrize(("edit", "cut"), [(None, True), (-1, True), (5, False), (5, True)])
def test_both_paths_give_up_on_a_bad_record_or_an_unsigned_tail(
    odd_ledger: Path, monkeypatch: pytest.MonkeyPatch, edit: int | None, cut: bool, run_max: int
) -> None:
    """A re-framed record with a wrong seq (mid-run or last) and a tail no checkpoint covers make both paths give up; the findings come from the reference."""
    monkeypatch.setattr(verify, "_RUN_MAX", run_max)
    path = segment_paths(odd_ledger)[0]
    records = sum(
        f.kind == framing.RECORD for f in framing.iter_frames(path.read_bytes()) if isinstance(f, framing.Frame)
    )
    data = _reframed(path, records - 1 if edit == -1 else edit, cut)
    assert _scan_batched(path.name, data, frozenset(), native=False) is None
    if verify._native is not None:
        assert _scan_batched(path.name, data, frozenset(), native=True) is None
    codes = [f.code for f in scan_segment(path.name, data).findings]
    assert codes == (["unsigned-tail"] if edit is None else ["seq-mismatch"]), codes
