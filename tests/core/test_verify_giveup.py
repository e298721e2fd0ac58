"""Each reason the batched scan gives up, one by one: it returns None, and the reference names the finding.

The batched scan (`_scan_batched`, verify.py) must never accept what the reference would report, so
every check it makes has a case here: one record, frame or checkpoint of a clean segment changed in
exactly the way that check catches. For each case the batched scan gives up and `scan_segment`
(which then falls back to the reference) reports at least one finding. Valid shapes the batched scan
leaves to the reference on purpose (a key rotation) give up too, and then verify clean.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from sidecar.clock import FixedClock
from sidecar.core import framing, verify
from sidecar.core.keys import Signer, key_name
from sidecar.core.note import Checkpoint, SegmentBytes, sign_note, split_note
from sidecar.core.verify import (
    Report,
    SegmentScan,
    _scan_batched,
    external_sizes,
    scan_reference,
    scan_segment,
    verify_scans,
)
from sidecar.ledger.keystore import KeyStore
from sidecar.testing import append_events, segment_paths, synthetic_event
from tests.vectors import generate as vectors

Frames = list[tuple[int, bytes]]
VECTORS = Path(__file__).resolve().parent.parent / "vectors"


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Frames]:
    """One sealed-free segment: header, opening checkpoint, a few runs of records, each ending in a checkpoint."""
    path = tmp_path_factory.mktemp("giveup")
    KeyStore(path).init("test.local/giveup")
    events = [synthetic_event(i) for i in range(9)]
    events[2]["details"] = {"emails": [{"kc-enc": 1, "sub": "u-0002", "ct": "AAAA"}], "n": 2}  # in a list
    events[3]["details"] = {"erased_fields": ["username"], "subject": "u-0003"}  # withheld after an erasure
    asyncio.run(append_events(path, events, clock=FixedClock(), segment_max_bytes=1 << 20, batch=3))
    (seg,) = segment_paths(path)
    frames = [(f.kind, f.body) for f in framing.iter_frames(seg.read_bytes()) if isinstance(f, framing.Frame)]
    return seg.name, frames


def _join(frames: Frames) -> bytes:
    return b"".join(framing.encode_frame(kind, body) for kind, body in frames)


def _last_record_of_first_run(frames: Frames) -> int:
    """Index of the last record of the first run of at least two records (so a record comes before it)."""
    run = 0
    for i, (kind, _body) in enumerate(frames):
        if kind == framing.RECORD:
            run += 1
        elif kind == framing.CHECKPOINT:
            if run >= 2:
                return i - 1
            run = 0
    raise AssertionError("no run of two records")


def _next_record(frames: Frames) -> bytes:
    """A record body that validly continues the segment's last record (seq, prev, ts)."""
    last = next(body for kind, body in reversed(frames) if kind == framing.RECORD)
    obj = orjson.loads(last)
    obj.update(seq=obj["seq"] + 1, prev=hashlib.sha256(b"\x00" + last).hexdigest())
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def _with_record(frames: Frames, change: Callable[[dict[str, Any]], Any]) -> Frames:
    i = _last_record_of_first_run(frames)
    obj = orjson.loads(frames[i][1])
    new = change(obj)
    body = new if isinstance(new, bytes) else orjson.dumps(obj if new is None else new, option=orjson.OPT_SORT_KEYS)
    out = list(frames)
    out[i] = (framing.RECORD, body)
    return out


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = obj
        for p in parents:
            target = target[p]
        target[last] = value

    return change


RECORD_CASES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "not an object": lambda obj: [obj],
    "a sixth member": _set("extra", 1),
    "a member missing": lambda obj: {k: v for k, v in obj.items() if k != "prev"} | {"x": 1},
    "not canonical (spaces)": lambda obj: orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).replace(b",", b", ", 1),
    "an integer beyond 2^53": _set("event.details", {"n": 2**60}),
    "a non-ASCII member name": _set("event.details", {"ä": 1}),
    "a float": _set("event.details", {"x": 1.5}),
    "another version": _set("v", 9),
    "a version that is not an integer": _set("v", "2"),
    "a seq out of order": lambda obj: obj.update(seq=obj["seq"] + 1),
    "a seq that is not an integer": lambda obj: obj.update(seq=str(obj["seq"])),
    "a ts that is not a string": lambda obj: obj.update(ts=int(obj["ts"])),
    "an event that is not an object": _set("event", "login"),
    "a ts that is not decimal": _set("ts", "12ab"),
    "a ts with a leading zero": lambda obj: obj.update(ts="0" + obj["ts"]),
    "a ts before the record before": _set("ts", "1"),
    "a prev that is not a string": _set("prev", 7),
    "a prev of the wrong length": _set("prev", "ab"),
    "a prev that is not the hash before": _set("prev", "00" * 32),
    "an event type that is not a string": _set("event.type", 5),
    "an outcome that is not a string": _set("event.outcome", None),
}


@pytest.mark.parametrize("case", RECORD_CASES)
def test_a_changed_record_makes_the_batched_scan_give_up(clean: tuple[str, Frames], case: str) -> None:
    """A record changed the way one batched check catches: the batched scan gives up and the reference reports it."""
    name, frames = clean
    data = _join(_with_record(frames, RECORD_CASES[case]))
    assert _scan_batched(name, data, frozenset()) is None
    assert scan_segment(name, data).findings, case


def test_the_clean_segment_takes_the_batched_path(clean: tuple[str, Frames]) -> None:
    """The unchanged segment (an encrypted value in a list, a withheld record) is accepted batched, equal to the reference."""
    name, frames = clean
    data = _join(frames)
    fast = _scan_batched(name, data, frozenset({2, 5}))
    assert fast is not None and fast == scan_reference(name, data, frozenset({2, 5}))
    assert fast.encrypted_records == 1 and fast.withheld_records == 1 and not fast.findings


def test_a_key_rotation_is_left_to_the_reference(clean: tuple[str, Frames]) -> None:
    """A key.rotated record is left to the reference: without a usable key it is rotation-malformed there."""
    name, frames = clean
    data = _join(_with_record(frames, _set("event.type", "key.rotated")))
    assert _scan_batched(name, data, frozenset()) is None
    assert "rotation-malformed" in {f.code for f in scan_segment(name, data).findings}


def test_two_rotations_in_one_segment_are_invalid(clean: tuple[str, Frames]) -> None:
    """Two key.rotated records with usable keys in one kc-ledger/2 segment: the second is rotation-invalid."""
    name, frames = clean
    key = Signer.generate(key_name("test.local/giveup", 1)).public.to_json()
    rotated = {"type": "key.rotated", "outcome": "succeeded", "details": {"key": key, "epoch": 1}}
    out = list(frames)
    rec = _last_record_of_first_run(frames)
    for i in (rec - 1, rec):  # rewrite both as rotations, keeping the chain between them
        obj = orjson.loads(out[i][1])
        obj["event"] = rotated
        if i == rec:
            obj["prev"] = hashlib.sha256(b"\x00" + out[rec - 1][1]).hexdigest()
        out[i] = (framing.RECORD, orjson.dumps(obj, option=orjson.OPT_SORT_KEYS))
    codes = {f.code for f in scan_segment(name, _join(out)).findings}
    assert "rotation-invalid" in codes, codes


def test_a_long_run_with_a_bad_record_gives_up_mid_run(
    clean: tuple[str, Frames], monkeypatch: pytest.MonkeyPatch
) -> None:
    """When a run is checked in pieces, a bad record in an early piece ends the batched scan there."""
    name, frames = clean
    monkeypatch.setattr(verify, "_RUN_MAX", 1)
    data = _join(_with_record(frames, _set("ts", "1")))
    assert _scan_batched(name, data, frozenset()) is None
    assert "time-backwards" in {f.code for f in scan_segment(name, data).findings}


def _frame_cases(frames: Frames) -> dict[str, tuple[str, bytes]]:
    """name -> (segment file name, bytes) for changes to frames other than records."""
    header = frames[0]
    first_cp = next(i for i, (k, _b) in enumerate(frames) if k == framing.CHECKPOINT)
    last_cp = max(i for i, (k, _b) in enumerate(frames) if k == framing.CHECKPOINT)
    rec = _last_record_of_first_run(frames)
    good = _join(frames)
    cp_body = frames[first_cp][1]

    def corrupt_crc(index: int) -> bytes:
        start = len(_join(frames[:index]))
        end = start + framing.OVERHEAD + len(frames[index][1])
        return good[: end - 1] + bytes([good[end - 1] ^ 1]) + good[end:]

    return {
        "too short for a frame": ("00000000.seg", good[:5]),
        "a first frame that is no header": ("00000000.seg", _join(frames[1:])),
        "a header with a bad CRC": ("00000000.seg", corrupt_crc(0)),
        "a header that does not decode": ("00000000.seg", _join([(framing.HEADER, b"{}"), *frames[1:]])),
        "a header for another segment number": ("00000007.seg", good),
        "a record with a bad CRC": ("00000000.seg", corrupt_crc(rec)),
        "a checkpoint with a bad CRC": ("00000000.seg", corrupt_crc(first_cp)),
        "a checkpoint that is not a note": ("00000000.seg", _join([*frames[:first_cp], (framing.CHECKPOINT, b"x")])),
        "a checkpoint signed by nobody": (
            "00000000.seg",
            _join([*frames[:first_cp], (framing.CHECKPOINT, cp_body.split(b"\n\n")[0] + b"\n\n")]),
        ),
        "a checkpoint of another size": (
            "00000000.seg",
            _join([*frames[:first_cp], frames[rec], frames[first_cp]]),
        ),
        "a seal frame holding a checkpoint": (
            "00000000.seg",
            _join([*frames[:first_cp], (framing.SEAL, cp_body)]),
        ),
        "a checkpoint moved after other bytes": (
            "00000000.seg",
            _join([*frames[:first_cp], (0x58, b"x"), frames[first_cp]]),
        ),
        "an unknown frame kind": ("00000000.seg", _join([*frames, (0x58, b"x")])),
        "records no checkpoint covers": (
            "00000000.seg",
            _join([*frames[: last_cp + 1], (framing.RECORD, _next_record(frames[: last_cp + 1]))]),
        ),
        "a second header": ("00000000.seg", _join([*frames[:first_cp], header, *frames[first_cp:]])),
        "a frame cut short": ("00000000.seg", good[:-3]),
        "a bad record after the last checkpoint": ("00000000.seg", _join([*frames, (framing.RECORD, b"[]")])),
        "a header alone": ("00000000.seg", _join([header])),
    }


def test_each_changed_frame_makes_the_batched_scan_give_up(clean: tuple[str, Frames]) -> None:
    """Header, CRC, checkpoint and tail damage: the batched scan gives up on each, and the reference reports it."""
    _name, frames = clean
    for case, (name, data) in _frame_cases(frames).items():
        assert _scan_batched(name, data, frozenset()) is None, case
        assert scan_segment(name, data).findings, case


def test_frames_after_a_seal_make_the_batched_scan_give_up(tmp_path: Path) -> None:
    """Anything after a seal frame (which must be last) sends the segment to the reference."""
    KeyStore(tmp_path).init("test.local/sealed")
    asyncio.run(
        append_events(tmp_path, [synthetic_event(i) for i in range(6)], clock=FixedClock(), segment_max_bytes=1)
    )
    sealed = segment_paths(tmp_path)[0]
    good = sealed.read_bytes()
    assert _scan_batched(sealed.name, good, frozenset()) is not None, "a clean sealed segment is taken batched"
    data = good + framing.encode_frame(framing.RECORD, b"{}")
    assert _scan_batched(sealed.name, data, frozenset()) is None
    assert scan_segment(sealed.name, data).findings


# ---------------------------------------------------------------------------- phase 2 and external checkpoints
@pytest.fixture(scope="module")
def sealed_ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ledger whose every batch sealed its segment: several sealed segments and an open last one."""
    path = tmp_path_factory.mktemp("phase2")
    KeyStore(path).init("test.local/phase2")
    events = [synthetic_event(i) for i in range(6)]
    asyncio.run(append_events(path, events, clock=FixedClock(), segment_max_bytes=1, batch=1))
    return path


def _scans(path: Path) -> list[SegmentScan]:
    return [scan_segment(p.name, p.read_bytes()) for p in segment_paths(path)]


def _codes(report: Report) -> set[str]:
    return {f.code for f in report.findings}


def test_the_sealed_ledger_verifies_clean(sealed_ledger: Path) -> None:
    """The unchanged multi-segment ledger verifies without findings (the cases below each change one thing)."""
    report = verify_scans(_scans(sealed_ledger), KeyStore(sealed_ledger).trust())
    assert report.ok and len(segment_paths(sealed_ledger)) >= 4, report.findings


def test_a_missing_segment_is_a_gap_in_the_sequence(sealed_ledger: Path) -> None:
    """Segments 0 and 2 without 1: the missing segment and the sequence gap are both found."""
    scans = _scans(sealed_ledger)
    codes = _codes(verify_scans([scans[0], *scans[2:]], KeyStore(sealed_ledger).trust()))
    assert {"segment-missing", "seq-gap"} <= codes, codes


def test_a_segment_of_another_origin_is_found(sealed_ledger: Path, tmp_path: Path) -> None:
    """A segment of another ledger verified under this ledger's trust anchor is origin-mismatch."""
    KeyStore(tmp_path).init("test.local/other")
    asyncio.run(append_events(tmp_path, [synthetic_event(0)], clock=FixedClock()))
    codes = _codes(verify_scans(_scans(tmp_path), KeyStore(sealed_ledger).trust()))
    assert "origin-mismatch" in codes, codes


def test_an_unsealed_segment_followed_by_another_is_found(sealed_ledger: Path) -> None:
    """A sealed segment with its seal frame cut off, followed by its successor: not-sealed."""
    first = segment_paths(sealed_ledger)[0]
    frames = [(f.kind, f.body) for f in framing.iter_frames(first.read_bytes()) if isinstance(f, framing.Frame)]
    assert frames[-1][0] == framing.SEAL
    cut = scan_segment(first.name, _join(frames[:-1]))
    codes = _codes(verify_scans([cut, *_scans(sealed_ledger)[1:]], KeyStore(sealed_ledger).trust()))
    assert "not-sealed" in codes, codes


def test_external_checkpoints_that_cannot_be_checked(sealed_ledger: Path) -> None:
    """External notes that do not parse, name another origin, are signed by a stranger or have no kept range."""
    trust = KeyStore(sealed_ledger).trust()
    signer = KeyStore(sealed_ledger).load(0)
    scans = _scans(sealed_ledger)
    size = verify_scans(scans, trust).size
    other = sign_note(Checkpoint("test.local/else", 1, bytes(32), 1).body(), signer)
    stranger = sign_note(
        Checkpoint(trust.origin, size + 5, bytes(32), 1).body(), Signer.generate(key_name(trust.origin, 0))
    )
    assert external_sizes([b"not a note", other]) == frozenset({1})
    report = verify_scans(scans, trust, external=[b"not a note", other, stranger])
    assert {"external-malformed", "external-origin", "external-signature"} <= _codes(report), report.findings
    assert report.external_checkpoints == 3
    unkept = sign_note(Checkpoint(trust.origin, 1, bytes(32), 1).body(), signer)
    report = verify_scans([scan_segment(p.name, p.read_bytes()) for p in segment_paths(sealed_ledger)], trust, [unkept])
    assert _codes(report) <= {"external-unchecked", "split-view"} and report.findings, report.findings


def _changed(scans: list[SegmentScan], index: int, **changes: Any) -> list[SegmentScan]:
    """The scans with scan `index` replaced by a copy with `changes` (what phase 1 would give for such bytes)."""
    out = list(scans)
    out[index] = dataclasses.replace(scans[index], **changes)
    return out


def test_phase_two_finds_what_no_single_segment_shows(sealed_ledger: Path) -> None:
    """Cross-segment findings: a format downgrade, a broken chain, a wrong range, a foreign checkpoint, time running back."""
    trust = KeyStore(sealed_ledger).trust()
    scans = _scans(sealed_ledger)
    h = scans[1].header
    assert h is not None
    first = scans[1].checkpoints[0]
    assert first.checkpoint is not None
    cases = {
        "format-downgrade": _changed(scans, 1, header=dataclasses.replace(h, version=1)),
        "chain-broken": _changed(scans, 1, header=dataclasses.replace(h, prev=bytes(32))),
        "range-mismatch": _changed(scans, 1, header=dataclasses.replace(h, range=(bytes(32),))),
        "origin-mismatch": _changed(
            scans,
            1,
            checkpoints=[
                dataclasses.replace(first, checkpoint=dataclasses.replace(first.checkpoint, origin="x.test/else")),
                *scans[1].checkpoints[1:],
            ],
        ),
        "time-backwards": _changed(scans, 2, first_ts=0),
        "seq-gap": _changed(scans, 1, header=dataclasses.replace(h, first_seq=5, range=())),
        "policy-mismatch": _changed(scans, 1, header=dataclasses.replace(h, policy="0" * 64)),
        "rotation-invalid": _changed(scans, 1, rotations=[(1, Signer.generate("x.test/else#1").public)]),
        "rotation-unsigned": _changed(scans, 1, pending_key=Signer.generate(key_name(trust.origin, 1)).public),
    }
    for code, changed in cases.items():
        assert code in _codes(verify_scans(changed, trust)), code
    late = scans[2].checkpoints[0]
    assert late.checkpoint is not None
    early = dataclasses.replace(late, checkpoint=dataclasses.replace(late.checkpoint, time_ns=0))
    backwards = verify_scans(_changed(scans, 2, checkpoints=[early, *scans[2].checkpoints[1:]]), trust)
    assert any(f.code == "time-backwards" and "checkpoint" in f.message for f in backwards.findings), backwards.findings
    unparsed = _changed(scans, 1, checkpoints=[dataclasses.replace(first, checkpoint=None), *scans[1].checkpoints[1:]])
    assert verify_scans(unparsed, trust).checkpoints == verify_scans(scans, trust).checkpoints


def test_an_external_checkpoint_at_a_size_without_a_kept_range(tmp_path: Path) -> None:
    """An external checkpoint of a size no checkpoint had and no want_sizes kept is external-unchecked, not a pass."""
    KeyStore(tmp_path).init("test.local/unkept")
    asyncio.run(append_events(tmp_path, [synthetic_event(i) for i in range(6)], clock=FixedClock(), batch=3))
    scans = _scans(tmp_path)
    sizes = {c.checkpoint.size for s in scans for c in s.checkpoints if c.checkpoint is not None}
    size = next(n for n in range(1, 7) if n not in sizes)
    note = sign_note(Checkpoint("test.local/unkept", size, bytes(32), 1).body(), KeyStore(tmp_path).load(0))
    report = verify_scans(scans, KeyStore(tmp_path).trust(), [note])
    assert _codes(report) == {"external-unchecked"}, report.findings


def test_a_report_carries_its_witness_verdict() -> None:
    """A report with witness results says so in its JSON (the auditor reads it there)."""
    report = Report()
    report.witnesses = {"required": 1, "cosigned": 0}
    assert report.to_json()["witnesses"] == {"required": 1, "cosigned": 0}


def test_a_segment_line_in_a_kc_ledger_1_checkpoint_is_refused() -> None:
    """A kc-ledger/1 checkpoint that carries a kc-ledger/2 segment line (validly signed) is bad-signature, never batched."""
    seg = VECTORS / "v1" / "segments" / "00000000.seg"
    frames = [(f.kind, f.body) for f in framing.iter_frames(seg.read_bytes()) if isinstance(f, framing.Frame)]
    i = next(n for n, (kind, _b) in enumerate(frames) if kind == framing.CHECKPOINT)
    cp = Checkpoint.parse_body(split_note(frames[i][1])[0])
    line = dataclasses.replace(cp, segment=SegmentBytes(0, 0, bytes(32)))
    frames[i] = (framing.CHECKPOINT, sign_note(line.body(), vectors.KEY0))
    data = _join(frames)
    assert _scan_batched(seg.name, data, frozenset()) is None
    assert "bad-signature" in {f.code for f in scan_segment(seg.name, data).findings}
