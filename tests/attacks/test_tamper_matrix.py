"""The tamper matrix: one test per attack on a ledger's files, and the exact finding it must produce.

Every test builds a fresh ledger in tmp_path with `build`: three segments, 00000000.seg and
00000001.seg sealed, 00000002.seg (the newest) holding several batches, each batch closed by a
signed checkpoint. The attack is applied to the files, then `verify_directory` runs and the test
asserts the finding codes, the segment and seq each finding points at, and the message.

Tamper helpers (sidecar.testing) keep the framing valid unless the attack is about the framing,
so the verdict comes from the hash chain, the Merkle roots, the signatures or the key chain.

Most record-level attacks target the newest segment. The section "once known gaps" holds the
attacks that used to crash or slip past the verifier (a change in a sealed, earlier segment; a
record inserted and the rest re-chained; unsigned records appended; badly named rotation keys; a
null prev; a negative first_seq): each was fixed, and its test now asserts the finding. None is
an xfail any more.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.audit.verifier import verify_directory
from sidecar.clock import FixedClock
from sidecar.core import framing
from sidecar.core.canonical import canonical_bytes
from sidecar.core.keys import Signer, key_name
from sidecar.core.merkle import root
from sidecar.core.note import Checkpoint, sign_note, split_note
from sidecar.core.record import Record, decode_record, encode_record, record_hash
from sidecar.core.trust import TrustAnchor
from sidecar.core.verify import Finding, Report
from sidecar.errors import ConfigError
from sidecar.ledger.keystore import KeyStore
from sidecar.testing import (
    TEST_POLICY_DIGEST,
    append_events,
    build_ledger,
    copy_ledger,
    flip_byte,
    forge_segment,
    frame_offsets,
    header_of,
    latest_checkpoint,
    leaf_hashes,
    read_frames,
    records_of,
    rewrite_record,
    segment_paths,
    synthetic_event,
    tree_root,
    write_bytes,
    write_frames,
)

ORIGIN = "test.example/ledger"
OTHER_ORIGIN = "other.example/ledger"
R, C, S = framing.RECORD, framing.CHECKPOINT, framing.SEAL
FORGED_EVENT = {
    "type": "role.granted",
    "outcome": "succeeded",
    "realm": "acme",
    "actor": {"username": "mallory", "kind": "user"},
    "details": {"roles": ["realm-admin"]},
}

VERIFY_CRASH = (
    "verify.py verify_scans: when a segment's scan stops early or a segment is missing, "
    "next_seq falls behind the next header's first_seq; _root_at() (line 325) and prefix.merge() "
    "(line 363) then merge a CompactRange that does not start at prefix.end and raise ValueError"
)


# ---------------------------------------------------------------------------------------------- set-up
@dataclass
class Built:
    dir: Path
    trust: TrustAnchor
    clock: FixedClock


async def build(root: Path, *, origin: str = ORIGIN, epoch_s: float = 1e9) -> Built:
    """A ledger of 3 segments: 0 and 1 sealed, 2 (the newest) with several checkpointed batches."""
    clock = FixedClock()
    d = root / "ledger"
    trust = await build_ledger(d, events=32, origin=origin, clock=clock, epoch_s=epoch_s)
    await append_events(
        d, [synthetic_event(i) for i in range(32, 56)], clock=clock, segment_max_bytes=1 << 20, epoch_s=epoch_s
    )
    return Built(d, trust, clock)


@pytest.fixture
async def led(tmp_path: Path) -> Built:
    built = await build(tmp_path)
    assert [p.name for p in segment_paths(built.dir)] == ["00000000.seg", "00000001.seg", "00000002.seg"]
    assert verify(built).ok
    return built


def no_ids(message: str, *, same_key: bool = False) -> str:
    """A bad-signature message without its key ids (they change per run); the names are what a test pins."""
    ids = re.findall(r" \(key id ([0-9a-f]{8})\)", message)
    assert len(ids) == 2 and (ids[0] == ids[1]) == same_key, "the message names both key ids"
    return re.sub(r" \(key id [0-9a-f]{8}\)", "", message)


def verify(b: Built, external: Sequence[bytes] = ()) -> Report:
    return verify_directory(b.dir, b.trust, external=external, workers=1)


def codes(report: Report) -> list[str]:
    return [f.code for f in report.findings]


def where(f: Finding) -> tuple[str | None, int | None]:
    return f.segment, f.seq


def short(h: bytes | str) -> str:
    return (h.hex() if isinstance(h, bytes) else h)[:16] + "..."


def chain_message(recorded_prev: bytes | str, actual_prev: bytes) -> str:
    return f"previous hash is {short(recorded_prev)}, the record before it hashes to {short(actual_prev)}"


def newest(b: Built) -> Path:
    return segment_paths(b.dir)[-1]


def inner_record(path: Path, want: Callable[[Record], bool] = lambda r: True) -> tuple[int, Record]:
    """Frame index and record of a record in `path` that has records right before and after it."""
    frames = read_frames(path)
    for i in range(2, len(frames) - 1):
        if frames[i - 1][0] == frames[i][0] == frames[i + 1][0] == R:
            rec = decode_record(frames[i][1])
            if want(rec):
                return i, rec
    raise AssertionError(f"no suitable record in {path.name}")


def record_at(path: Path, index: int) -> Record:
    kind, body = read_frames(path)[index]
    assert kind == R
    return decode_record(body)


def _next_char(c: int, hex_only: bool = False) -> int:
    if 0x30 <= c <= 0x39:
        return 0x30 + (c - 0x30 + 1) % 10
    if hex_only and 0x61 <= c <= 0x66:
        return 0x61 + (c - 0x61 + 1) % 6
    if 0x61 <= c <= 0x7A:
        return 0x61 + (c - 0x61 + 1) % 26
    raise AssertionError(f"not a digit or lower-case letter: {chr(c)!r}")


def set_char_after(
    body: bytes, marker: bytes, value: int | None = None, *, skip: int = 0, hex_only: bool = False
) -> bytes:
    """Change one byte: the `skip`-th byte after `marker` (default: to the next digit or letter)."""
    pos = body.index(marker) + len(marker) + skip
    new = bytearray(body)
    new[pos] = _next_char(body[pos], hex_only) if value is None else value
    assert new[pos] != body[pos]
    return bytes(new)


def renumber(frames: list[tuple[int, bytes]], start: int, delta: int) -> None:
    """Add `delta` to the seq of every record frame from index `start` on (prev left as it was)."""
    for j in range(start, len(frames)):
        if frames[j][0] == R:
            r = decode_record(frames[j][1])
            frames[j] = (R, encode_record(r.seq + delta, r.ts_ns, r.prev, r.event))


def rechain(frames: list[tuple[int, bytes]], start: int) -> None:
    """Renumber and re-chain the records from index `start` on (what an attacker without a key can do)."""
    before = [decode_record(b) for k, b in frames[:start] if k == R]
    seq, prev = before[-1].seq + 1, before[-1].hash
    for j in range(start, len(frames)):
        if frames[j][0] == R:
            r = decode_record(frames[j][1])
            body = encode_record(seq, r.ts_ns, prev, r.event)
            frames[j] = (R, body)
            seq, prev = seq + 1, record_hash(body)


def checkpoint_index(frames: list[tuple[int, bytes]], after: int = 0) -> int:
    return next(j for j in range(after, len(frames)) if frames[j][0] == C)


def cp_size(note: bytes) -> int:
    return Checkpoint.parse_body(split_note(note)[0]).size


def tail_run(frames: list[tuple[int, bytes]]) -> int:
    """Index of the first record of the last run of records (the last batch)."""
    last = max(j for j, (k, _) in enumerate(frames) if k == R)
    start = last
    while frames[start - 1][0] == R:
        start -= 1
    return start


# ---------------------------------------------------------------------------------------------- the baseline
async def test_untouched_ledger_is_intact(led: Built) -> None:
    """The freshly built ledger verifies with no findings, in one process and in parallel alike."""
    report = verify(led)
    assert report.ok and report.findings == []
    assert (report.segments, report.records, report.size) == (3, len(leaf_hashes(led.dir)), report.records)
    assert report.keys == [f"{ORIGIN}#0"]
    parallel = verify_directory(led.dir, led.trust, workers=2)
    assert parallel.to_json() == report.to_json()


# ---------------------------------------------------------------------------------------------- one field, CRC fixed
async def test_event_type_changed_breaks_chain_at_next_record(led: Built) -> None:
    """A changed byte in a record's event type (CRC fixed) is found as chain-broken at the next seq."""
    path = newest(led)
    i, rec = inner_record(path)
    _, new = rewrite_record(path, i, lambda b: set_char_after(b, b'"type":"'))
    assert decode_record(new).type != rec.type
    report = verify(led)
    assert codes(report) == ["chain-broken"]
    f = report.findings[0]
    assert where(f) == (path.name, rec.seq + 1)
    assert f.message == chain_message(rec.hash, record_hash(new))


async def test_actor_username_changed_breaks_chain_at_next_record(led: Built) -> None:
    """A changed byte in the actor's username (CRC fixed) is found as chain-broken at the next seq."""
    path = newest(led)
    i, rec = inner_record(path, lambda r: "username" in r.event.get("actor", {}))
    _, new = rewrite_record(path, i, lambda b: set_char_after(b, b'"username":"'))
    assert decode_record(new).event["actor"]["username"] != rec.event["actor"]["username"]
    report = verify(led)
    assert codes(report) == ["chain-broken"]
    assert where(report.findings[0]) == (path.name, rec.seq + 1)
    assert report.findings[0].message == chain_message(rec.hash, record_hash(new))


async def test_granted_role_changed_breaks_chain_at_next_record(led: Built) -> None:
    """A changed byte in a role.granted record's roles list (CRC fixed) is found as chain-broken."""
    path = newest(led)
    i, rec = inner_record(path, lambda r: r.type == "role.granted")
    _, new = rewrite_record(path, i, lambda b: set_char_after(b, b'"roles":["'))
    assert decode_record(new).event["details"]["roles"] != rec.event["details"]["roles"]
    report = verify(led)
    assert codes(report) == ["chain-broken"]
    assert where(report.findings[0]) == (path.name, rec.seq + 1)
    assert report.findings[0].message == chain_message(rec.hash, record_hash(new))


async def test_seq_changed_is_a_seq_mismatch(led: Built) -> None:
    """A changed digit in a record's seq (CRC fixed) is found as seq-mismatch at that record."""
    path = newest(led)
    i, rec = inner_record(path)
    _, new = rewrite_record(path, i, lambda b: set_char_after(b, b'"seq":'))
    forged_seq = decode_record(new).seq
    report = verify(led)
    assert codes(report) == ["seq-mismatch"]
    assert where(report.findings[0]) == (path.name, rec.seq)
    assert report.findings[0].message == f"expected seq {rec.seq}, record says {forged_seq}"


async def test_time_moved_forward_breaks_chain_at_next_record(led: Built) -> None:
    """A record's time moved forward (CRC fixed) is found as chain-broken at the next seq."""
    path = newest(led)
    i, rec = inner_record(path)
    _, new = rewrite_record(path, i, lambda b: set_char_after(b, b'"ts":"', skip=8))
    assert decode_record(new).ts_ns > rec.ts_ns
    report = verify(led)
    assert codes(report) == ["chain-broken"]
    assert where(report.findings[0]) == (path.name, rec.seq + 1)
    assert report.findings[0].message == chain_message(rec.hash, record_hash(new))


async def test_time_moved_backwards_is_time_backwards_then_chain_broken(led: Built) -> None:
    """A record back-dated (CRC fixed) is found as time-backwards at it, then chain-broken at the next seq."""
    path = newest(led)
    i, rec = inner_record(path)
    before = record_at(path, i - 1)
    _, new = rewrite_record(path, i, lambda b: set_char_after(b, b'"ts":"', ord("6"), skip=1))
    forged_ts = decode_record(new).ts_ns
    report = verify(led)
    assert codes(report) == ["time-backwards", "chain-broken"]
    assert where(report.findings[0]) == (path.name, rec.seq)
    assert report.findings[0].message == f"time {forged_ts} is before the previous record's {before.ts_ns}"
    assert where(report.findings[1]) == (path.name, rec.seq + 1)


async def test_prev_changed_breaks_chain_at_that_record(led: Built) -> None:
    """A changed byte in a record's prev hash (CRC fixed) is found as chain-broken at that record."""
    path = newest(led)
    i, rec = inner_record(path)
    _, new = rewrite_record(path, i, lambda b: set_char_after(b, b'"prev":"', skip=3, hex_only=True))
    forged_prev = decode_record(new).prev
    report = verify(led)
    assert codes(report) == ["chain-broken"]
    assert where(report.findings[0]) == (path.name, rec.seq)
    assert report.findings[0].message == chain_message(forged_prev, rec.prev)


# ---------------------------------------------------------------------------------------------- framing
async def test_changed_byte_without_crc_fix_is_frame_damaged(led: Built) -> None:
    """A changed byte in a record with the CRC left alone is found as frame-damaged at that record."""
    path = newest(led)
    i, rec = inner_record(path)
    offset = frame_offsets(path)[i]
    flip_byte(path, offset + framing.OVERHEAD + 10)
    report = verify(led)
    assert codes(report) == ["frame-damaged"]
    assert where(report.findings[0]) == (path.name, rec.seq)
    assert report.findings[0].message == f"offset {offset}: frame checksum mismatch"


async def test_changed_byte_in_last_frame_is_frame_damaged_torn_tail(led: Built) -> None:
    """A changed byte in the newest segment's last frame (a checkpoint) is frame-damaged, flagged as a torn tail."""
    path = newest(led)
    offset = frame_offsets(path)[-1]
    size = len(leaf_hashes(led.dir))
    flip_byte(path, path.stat().st_size - 10)
    report = verify(led)
    assert codes(report) == ["frame-damaged"]
    assert where(report.findings[0]) == (path.name, size)
    assert report.findings[0].message == f"offset {offset}: frame checksum mismatch (a torn tail)"


# ---------------------------------------------------------------------------------------------- whole records
async def test_deleted_record_is_a_seq_mismatch(led: Built) -> None:
    """A record frame removed (framing valid) is found as seq-mismatch where it was."""
    path = newest(led)
    i, rec = inner_record(path)
    frames = read_frames(path)
    del frames[i]
    write_frames(path, frames)
    report = verify(led)
    assert codes(report) == ["seq-mismatch"]
    assert where(report.findings[0]) == (path.name, rec.seq)
    assert report.findings[0].message == f"expected seq {rec.seq}, record says {rec.seq + 1}"


async def test_deleted_record_with_later_seqs_renumbered_breaks_chain(led: Built) -> None:
    """A record removed and the later seqs renumbered is found as chain-broken at the deleted seq."""
    path = newest(led)
    i, rec = inner_record(path)
    before = record_at(path, i - 1)
    frames = read_frames(path)
    del frames[i]
    renumber(frames, i, -1)
    write_frames(path, frames)
    report = verify(led)
    assert codes(report) == ["chain-broken"]
    assert where(report.findings[0]) == (path.name, rec.seq)
    assert report.findings[0].message == chain_message(rec.hash, before.hash)


async def test_inserted_record_is_a_seq_mismatch_at_the_next_record(led: Built) -> None:
    """A well-formed forged record with the right seq and prev, inserted, is found at the record it displaced."""
    path = newest(led)
    i, rec = inner_record(path)
    frames = read_frames(path)
    frames.insert(i, (R, encode_record(rec.seq, rec.ts_ns, rec.prev, FORGED_EVENT)))
    write_frames(path, frames)
    report = verify(led)
    assert codes(report) == ["seq-mismatch"]
    assert where(report.findings[0]) == (path.name, rec.seq + 1)
    assert report.findings[0].message == f"expected seq {rec.seq + 1}, record says {rec.seq}"


async def test_inserted_record_with_later_seqs_renumbered_breaks_chain(led: Built) -> None:
    """A forged record inserted and later seqs renumbered is found as chain-broken at the displaced record."""
    path = newest(led)
    i, rec = inner_record(path)
    forged = encode_record(rec.seq, rec.ts_ns, rec.prev, FORGED_EVENT)
    frames = read_frames(path)
    frames.insert(i, (R, forged))
    renumber(frames, i + 1, +1)
    write_frames(path, frames)
    report = verify(led)
    assert codes(report) == ["chain-broken"]
    assert where(report.findings[0]) == (path.name, rec.seq + 1)
    assert report.findings[0].message == chain_message(rec.prev, record_hash(forged))


async def test_swapped_records_are_a_seq_mismatch(led: Built) -> None:
    """Two neighbouring records swapped are found as seq-mismatch at the first of them."""
    path = newest(led)
    i, rec = inner_record(path)
    frames = read_frames(path)
    frames[i], frames[i + 1] = frames[i + 1], frames[i]
    write_frames(path, frames)
    report = verify(led)
    assert codes(report) == ["seq-mismatch"]
    assert where(report.findings[0]) == (path.name, rec.seq)
    assert report.findings[0].message == f"expected seq {rec.seq}, record says {rec.seq + 1}"


async def test_replayed_record_inserted_is_a_seq_mismatch(led: Built) -> None:
    """A copy of an earlier record (from segment 0) inserted mid-segment is found as seq-mismatch there."""
    old = records_of(segment_paths(led.dir)[0])[3]
    path = newest(led)
    i, rec = inner_record(path)
    frames = read_frames(path)
    frames.insert(i, (R, old.body))
    write_frames(path, frames)
    report = verify(led)
    assert codes(report) == ["seq-mismatch"]
    assert where(report.findings[0]) == (path.name, rec.seq)
    assert report.findings[0].message == f"expected seq {rec.seq}, record says {old.seq}"


async def test_replayed_record_appended_is_a_seq_mismatch(led: Built) -> None:
    """A copy of an earlier record appended after the last checkpoint is found as seq-mismatch at the tree size."""
    path = newest(led)
    old = records_of(path)[2]
    size = len(leaf_hashes(led.dir))
    write_bytes(path, path.read_bytes() + framing.encode_frame(R, old.body))
    report = verify(led)
    assert codes(report) == ["seq-mismatch"]
    assert where(report.findings[0]) == (path.name, size)
    assert report.findings[0].message == f"expected seq {size}, record says {old.seq}"


# ---------------------------------------------------------------------------------------------- cut tails, rollback, forks
async def test_cut_tail_is_found_only_with_an_external_checkpoint(led: Built) -> None:
    """The last batch and its checkpoints cut off: intact on its own (a prefix is a valid ledger), tail-cut with a kept checkpoint."""
    witness = latest_checkpoint(led.dir)
    full = cp_size(witness)
    path = newest(led)
    frames = read_frames(path)
    start = tail_run(frames)
    assert frames[start - 1][0] == C
    write_frames(path, frames[:start])
    kept = full - (len(frames[start:]) - sum(1 for k, _ in frames[start:] if k != R))

    alone = verify(led)
    assert alone.ok, "without outside evidence a cut at a checkpoint is indistinguishable from a shorter ledger"
    assert alone.size == kept < full

    report = verify(led, [witness])
    assert codes(report) == ["tail-cut"]
    assert where(report.findings[0]) == (None, kept)
    assert report.findings[0].message == (
        f"an external checkpoint proves {full} records, the ledger holds only "
        f"{kept}: the tail was cut or the ledger rolled back"
    )


async def test_newest_segment_deleted_is_found_only_with_an_external_checkpoint(led: Built) -> None:
    """The whole newest segment deleted: intact on its own (segment 1 is sealed), tail-cut with a kept checkpoint."""
    witness = latest_checkpoint(led.dir)
    full = cp_size(witness)
    newest(led).unlink()
    kept = header_of(newest(led)).first_seq + len(records_of(newest(led)))
    assert verify(led).ok
    report = verify(led, [witness])
    assert codes(report) == ["tail-cut"]
    assert where(report.findings[0]) == (None, kept)
    assert f"proves {full} records, the ledger holds only {kept}" in report.findings[0].message


async def test_rolled_back_ledger_is_a_tail_cut(led: Built, tmp_path: Path) -> None:
    """A ledger restored from an earlier copy, checked against a checkpoint from later, is found as tail-cut."""
    backup = copy_ledger(led.dir, tmp_path / "backup")
    old_size = verify(led).size
    await append_events(
        led.dir, [synthetic_event(i) for i in range(64, 80)], clock=led.clock, segment_max_bytes=1 << 20
    )
    witness = latest_checkpoint(led.dir)
    new_size = cp_size(witness)
    shutil.rmtree(led.dir)
    copy_ledger(backup, led.dir)
    assert verify(led).ok
    report = verify(led, [witness])
    assert codes(report) == ["tail-cut"]
    assert where(report.findings[0]) == (None, old_size)
    assert f"proves {new_size} records, the ledger holds only {old_size}" in report.findings[0].message


async def test_forked_ledger_of_the_same_size_is_a_split_view(led: Built, tmp_path: Path) -> None:
    """A fork with the same size but other content, checked against the original's checkpoint, is a split-view."""
    fork = Built(copy_ledger(led.dir, tmp_path / "fork"), led.trust, FixedClock(led.clock.t, led.clock.step))
    await append_events(led.dir, [synthetic_event(i) for i in range(64, 68)], clock=led.clock)
    await append_events(fork.dir, [FORGED_EVENT] * 4, clock=fork.clock)
    witness = latest_checkpoint(led.dir)
    size = cp_size(witness)
    mine = verify(fork)
    assert mine.ok and mine.size == size, "the fork is a consistent ledger on its own"
    report = verify(fork, [witness])
    assert codes(report) == ["split-view"]
    assert where(report.findings[0]) == (None, size - 1)
    assert report.findings[0].message == (
        f"external checkpoint of size {size} has root {short(tree_root(led.dir, size))}, the ledger's records give "
        f"{short(mine.root)}: the ledger was rewritten or forked"
    )


async def test_cut_tail_with_a_key_rotation_in_it_is_found(tmp_path: Path) -> None:
    """A rollback past a key rotation is a tail-cut: the size is checked before the (now unknown) signing key."""
    clock = FixedClock()
    d = tmp_path / "ledger"
    trust = await build_ledger(d, events=32, clock=clock)
    backup = copy_ledger(d, tmp_path / "backup")
    kept = verify_directory(backup, trust, workers=1).size
    await append_events(
        d, [synthetic_event(i) for i in range(32, 56)], clock=clock, segment_max_bytes=1 << 20, epoch_s=2e-5
    )
    witness = latest_checkpoint(d)
    assert not split_note(witness)[1][0].name.endswith("#0"), "the later checkpoint is signed by a rotated key"
    report = verify_directory(backup, trust, external=[witness], workers=1)
    assert codes(report) == ["tail-cut"]
    assert where(report.findings[0]) == (None, kept)
    assert "a key the cut ledger no longer introduces" in report.findings[0].message


# ---------------------------------------------------------------------------------------------- segments
async def test_foreign_segment_spliced_in_is_an_origin_mismatch(led: Built, tmp_path: Path) -> None:
    """The newest segment replaced by the same-numbered segment of another ledger is found as origin-mismatch."""
    other = await build(tmp_path / "other", origin=OTHER_ORIGIN)
    path = newest(led)
    write_bytes(path, (other.dir / "segments" / path.name).read_bytes())
    report = verify(led)
    assert codes(report) == ["origin-mismatch"]
    assert where(report.findings[0]) == (path.name, None)
    assert report.findings[0].message == f"segment belongs to origin {OTHER_ORIGIN!r}, expected {ORIGIN!r}"


async def test_look_alike_segment_with_its_own_keys_is_an_untrusted_key(led: Built, tmp_path: Path) -> None:
    """A byte-identical-records segment from a look-alike ledger (same origin, own keys) is found as untrusted-key."""
    other = await build(tmp_path / "other")
    path = newest(led)
    assert records_of(other.dir / "segments" / path.name) == records_of(path), "same records, other keys"
    write_bytes(path, (other.dir / "segments" / path.name).read_bytes())
    report = verify(led)
    assert codes(report) == ["untrusted-key"]
    mine, theirs = led.trust.root_key, other.trust.root_key
    assert where(report.findings[0]) == (path.name, header_of(path).first_seq)
    assert report.findings[0].message == (
        f"segment names key {theirs.name} ({theirs.key_id.hex()}), but the key in "
        f"force is {mine.name} ({mine.key_id.hex()})"
    )


async def test_middle_segment_deleted_is_segment_missing(led: Built) -> None:
    """A middle segment deleted is found as segment-missing, naming the missing file."""
    segment_paths(led.dir)[1].unlink()
    report = verify(led)
    assert codes(report)[0] == "segment-missing"
    assert where(report.findings[0]) == ("00000002.seg", None)
    assert report.findings[0].message == (
        "expected segment 00000001.seg next, found 00000002.seg; missing: 00000001.seg"
    )


# ---------------------------------------------------------------------------------------------- keys and signatures
async def test_rewrite_resigned_with_an_attacker_key_of_the_same_name_is_bad_signature(led: Built) -> None:
    """A consistent rewrite of the newest segment re-signed by an attacker key named like the real one is bad-signature."""
    path = newest(led)
    _, rec = inner_record(path)
    attacker = Signer.generate(key_name(ORIGIN, 0))
    forge_segment(path, attacker, change=lambda seq, ev: FORGED_EVENT if seq == rec.seq else ev)
    frames = read_frames(path)
    first_cp = checkpoint_index(frames)
    report = verify(led)
    assert set(codes(report)) == {"bad-signature"}, "roots are right: only the signatures give the rewrite away"
    assert len(report.findings) == sum(1 for k, _ in frames if k in (C, S))
    f = report.findings[0]
    assert where(f) == (path.name, cp_size(frames[first_cp][1]) - 1)
    assert no_ids(f.message) == (
        f"checkpoint at offset {frame_offsets(path)[first_cp]}: signed by {ORIGIN}#0, "
        f"expected a valid signature by {ORIGIN}#0"
    )


async def test_rewrite_resigned_with_header_naming_the_attacker_key_is_untrusted_key(led: Built) -> None:
    """The same rewrite with the header naming the attacker's key verifies in itself but is untrusted-key."""
    path = newest(led)
    _, rec = inner_record(path)
    attacker = Signer.generate(key_name(ORIGIN, 0))
    forge_segment(
        path, attacker, header_key=attacker.public, change=lambda seq, ev: FORGED_EVENT if seq == rec.seq else ev
    )
    report = verify(led)
    assert codes(report) == ["untrusted-key"]
    real = led.trust.root_key
    assert where(report.findings[0]) == (path.name, header_of(path).first_seq)
    assert report.findings[0].message == (
        f"segment names key {attacker.name} ({attacker.public.key_id.hex()}), but the key in force is "
        f"{real.name} ({real.key_id.hex()})"
    )


async def test_sealed_segment_rewritten_and_resigned_is_bad_signature_and_breaks_the_next_segment(led: Built) -> None:
    """A sealed middle segment rewritten and re-signed by an attacker key is bad-signature, and chain-broken at segment 2."""
    path = segment_paths(led.dir)[1]
    _, rec = inner_record(path)
    attacker = Signer.generate(key_name(ORIGIN, 0))
    forge_segment(path, attacker, change=lambda seq, ev: FORGED_EVENT if seq == rec.seq else ev)
    signed = sum(1 for k, _ in read_frames(path) if k in (C, S))
    report = verify(led)
    assert codes(report)[:signed] == ["bad-signature"] * signed  # every checkpoint and the seal
    assert {f.segment for f in report.findings[:signed]} == {path.name}
    assert report.findings[signed - 1].message.startswith(f"seal at offset {frame_offsets(path)[-1]}: signed by ")
    nxt = segment_paths(led.dir)[2]
    broken = [f for f in report.findings if f.code == "chain-broken"]
    assert [where(f) for f in broken] == [(nxt.name, header_of(nxt).first_seq)]
    assert broken[0].message == chain_message(header_of(nxt).prev, records_of(path)[-1].hash)
    assert "range-mismatch" in codes(report) and "root-mismatch" in codes(report)


async def test_forged_key_rotation_is_bad_signature(led: Built) -> None:
    """A key.rotated record introducing an attacker key, under a checkpoint the attacker signed, is bad-signature."""
    path = newest(led)
    last = records_of(path)[-1]
    attacker = Signer.generate(key_name(ORIGIN, 1))
    rotation = encode_record(
        last.seq + 1,
        last.ts_ns + 1,
        last.hash,
        {
            "type": "key.rotated",
            "outcome": "succeeded",
            "details": {"key": attacker.public.to_json(), "epoch": 1, "previous": led.trust.root_key.to_json()},
        },
    )
    forged = encode_record(last.seq + 2, last.ts_ns + 2, record_hash(rotation), FORGED_EVENT)
    leaves = [*leaf_hashes(led.dir), record_hash(rotation)]
    time_ns = led.clock.now_ns()
    cp1 = sign_note(Checkpoint(ORIGIN, len(leaves), root(leaves), time_ns).body(), attacker)
    cp2 = sign_note(
        Checkpoint(ORIGIN, len(leaves) + 1, root([*leaves, record_hash(forged)]), time_ns + 1).body(), attacker
    )
    end = path.stat().st_size
    write_bytes(
        path,
        path.read_bytes()
        + b"".join(framing.encode_frame(k, b) for k, b in [(R, rotation), (C, cp1), (R, forged), (C, cp2)]),
    )
    offset = end + len(framing.encode_frame(R, rotation))
    report = verify(led)
    # The handover checkpoint must be signed by the outgoing key; kc-ledger/2 also wants every checkpoint to
    # sign the segment's bytes and no record after a key.rotated record in the same segment.
    assert codes(report) == ["bad-signature", "segment-digest", "rotation-window", "bad-signature", "segment-digest"]
    assert where(report.findings[0]) == (path.name, last.seq + 1)
    assert where(report.findings[2]) == (path.name, last.seq + 2)
    assert no_ids(report.findings[0].message) == (
        f"checkpoint at offset {offset}: signed by {ORIGIN}#1, expected a valid signature by {ORIGIN}#0"
    )


async def test_seal_policy_digest_changed_is_bad_signature_and_policy_mismatch(led: Built) -> None:
    """A sealed segment's seal with another policy digest (signature kept) is bad-signature and policy-mismatch."""
    path = segment_paths(led.dir)[1]
    frames = read_frames(path)
    assert frames[-1][0] == S
    forged_digest = "f" * 64
    frames[-1] = (S, frames[-1][1].replace(TEST_POLICY_DIGEST.encode(), forged_digest.encode()))
    write_frames(path, frames)
    last_seq = records_of(path)[-1].seq
    report = verify(led)
    assert codes(report) == ["bad-signature", "policy-mismatch"]
    assert [where(f) for f in report.findings] == [(path.name, last_seq)] * 2
    assert no_ids(report.findings[0].message, same_key=True) == (
        f"seal at offset {frame_offsets(path)[-1]}: signed by {ORIGIN}#0, expected a valid signature by {ORIGIN}#0"
    )
    assert report.findings[1].message == (
        f"seal's policy digest {forged_digest[:16]}... differs from the header's {TEST_POLICY_DIGEST[:16]}..."
    )


async def test_forward_security_current_key_cannot_rewrite_epoch_0(tmp_path: Path) -> None:
    """After rotations, a thief of the current key who rewrites epoch 0 and re-signs it is bad-signature; key 0 is gone."""
    b = await build(tmp_path, epoch_s=2e-5)
    keys = KeyStore(b.dir)
    epochs = keys.epochs()
    assert len(epochs) == 1 and epochs[0] >= 2, f"rotations happened and only the current key is left: {epochs}"
    assert not (b.dir / "keys" / "epoch-000000.key").exists()
    with pytest.raises(ConfigError, match="missing"):
        keys.load(0)
    assert verify(b).ok and len(verify(b).keys) == epochs[0] + 1
    stolen = keys.load(epochs[0])

    seg0 = segment_paths(b.dir)[0]
    _, rec = inner_record(seg0)
    forge_segment(seg0, stolen, change=lambda seq, ev: FORGED_EVENT if seq == rec.seq else ev)
    frames = read_frames(seg0)
    first_cp = checkpoint_index(frames)
    report = verify(b)
    assert codes(report)[0] == "bad-signature"
    f = report.findings[0]
    size = cp_size(frames[first_cp][1])
    assert where(f) == (seg0.name, size - 1 if size else None)  # the opening checkpoint covers no record
    assert no_ids(f.message) == (
        f"checkpoint at offset {frame_offsets(seg0)[first_cp]}: signed by {stolen.name}, "
        f"expected a valid signature by {ORIGIN}#0"
    )
    assert "root-mismatch" not in [x.code for x in report.findings if x.segment == seg0.name]


async def test_forward_security_current_key_renamed_as_epoch_0_is_untrusted_key(tmp_path: Path) -> None:
    """The thief renames the current key as epoch 0 and puts it in segment 0's header: untrusted-key at seq 0."""
    b = await build(tmp_path, epoch_s=2e-5)
    keys = KeyStore(b.dir)
    stolen = keys.load(keys.epochs()[-1])
    posing = Signer.from_seed(key_name(ORIGIN, 0), stolen.seed())
    seg0 = segment_paths(b.dir)[0]
    _, rec = inner_record(seg0)
    forge_segment(seg0, posing, header_key=posing.public, change=lambda seq, ev: FORGED_EVENT if seq == rec.seq else ev)
    report = verify(b)
    real = b.trust.root_key
    untrusted = [f for f in report.findings if f.code == "untrusted-key"]
    assert [where(f) for f in untrusted] == [(seg0.name, 0)]
    assert untrusted[0].message == (
        f"segment names key {posing.name} ({posing.public.key_id.hex()}), but the key "
        f"in force is {real.name} ({real.key_id.hex()})"
    )
    assert report.findings[0].segment == seg0.name


# ---------------------------------------------------------------------------------------------- once known gaps (fixed)
async def test_changed_record_in_a_sealed_segment_is_chain_broken(led: Built) -> None:
    """A changed username in a sealed (not the newest) segment is found as chain-broken at the next seq."""
    path = segment_paths(led.dir)[0]
    i, rec = inner_record(path)
    _, new = rewrite_record(path, i, lambda b: set_char_after(b, b'"username":"'))
    report = verify(led)
    assert codes(report)[0] == "chain-broken"
    assert where(report.findings[0]) == (path.name, rec.seq + 1)
    assert report.findings[0].message == chain_message(rec.hash, record_hash(new))


async def test_inserted_record_with_the_rest_rechained_is_checkpoint_size(led: Built) -> None:
    """A forged record inserted and every later record re-chained (no key needed) is found at the next checkpoint."""
    path = newest(led)
    i, rec = inner_record(path)
    frames = read_frames(path)
    frames.insert(i, (R, encode_record(rec.seq, rec.ts_ns, rec.prev, FORGED_EVENT)))
    rechain(frames, i + 1)
    write_frames(path, frames)
    cp = checkpoint_index(frames, i)
    size = cp_size(frames[cp][1])
    report = verify(led)
    assert codes(report)[0] == "checkpoint-size"
    assert where(report.findings[0]) == (path.name, size)  # the last of the size + 1 records before it
    assert report.findings[0].message == f"checkpoint says tree size {size}, but {size + 1} records precede it"


async def test_unsigned_records_appended_after_the_last_checkpoint_are_found(led: Built) -> None:
    """Forged records with the right seq and prev appended after the last checkpoint (no key needed) are found."""
    path = newest(led)
    last = records_of(path)[-1]
    forged = encode_record(last.seq + 1, last.ts_ns + 1, last.hash, FORGED_EVENT)
    write_bytes(path, path.read_bytes() + framing.encode_frame(R, forged))
    report = verify(led)
    assert not report.ok
    assert (path.name, last.seq + 1) in [where(f) for f in report.findings]


async def test_rotations_to_badly_named_keys_are_rotation_invalid(led: Built) -> None:
    """Two appended key.rotated records naming keys 'evil#x0', 'evil#x1' are rotation-invalid, not a crash."""
    path = newest(led)
    prev = records_of(path)[-1]
    frames = []
    for j in range(2):
        body = encode_record(
            prev.seq + 1,
            prev.ts_ns + 1,
            prev.hash,
            {
                "type": "key.rotated",
                "outcome": "succeeded",
                "details": {"key": Signer.generate(f"evil#x{j}").public.to_json()},
            },
        )
        frames.append(framing.encode_frame(R, body))
        prev = decode_record(body)
    write_bytes(path, path.read_bytes() + b"".join(frames))
    report = verify(led)
    assert "rotation-invalid" in codes(report)


async def test_record_with_null_prev_is_a_finding(led: Built) -> None:
    """A record whose prev is JSON null (CRC fixed) is reported as a finding, not a crash."""
    path = newest(led)
    last = records_of(path)[-1]
    body = canonical_bytes({"event": FORGED_EVENT, "prev": None, "seq": last.seq + 1, "ts": str(last.ts_ns), "v": 1})
    write_bytes(path, path.read_bytes() + framing.encode_frame(R, body))
    report = verify(led)
    assert where(report.findings[0]) == (path.name, last.seq + 1)


async def test_header_with_negative_first_seq_is_a_finding(led: Built) -> None:
    """A segment header claiming first_seq -1 (CRC fixed) is reported as a finding, not a crash."""
    path = newest(led)
    frames = read_frames(path)
    first = header_of(path).first_seq
    frames[0] = (framing.HEADER, frames[0][1].replace(f'"first_seq":{first}'.encode(), b'"first_seq":-1'))
    write_frames(path, frames)
    report = verify(led)
    assert not report.ok and report.findings[0].segment == path.name


# ---------------------------------------------------------------------------------------------- properties
def _build_once(root: Path) -> tuple[Path, TrustAnchor]:
    built = asyncio.run(build(root))
    assert verify(built).ok
    return built.dir, built.trust


@pytest.fixture(scope="module")
def fixed_ledger(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TrustAnchor]:
    return _build_once(tmp_path_factory.mktemp("fixed"))


def _verify_with_one_byte_changed(ledger: tuple[Path, TrustAnchor], name: str, pos: int, delta: int) -> Report:
    """Verify a copy of `ledger` in which byte `pos` of segment `name` is increased by `delta` (mod 256)."""
    src, trust = ledger
    with tempfile.TemporaryDirectory() as tmp:
        work = copy_ledger(src, Path(tmp) / "ledger")
        path = work / "segments" / name
        data = path.read_bytes()
        flip_byte(path, pos, (data[pos] + delta) % 256)
        return verify_directory(work, trust, workers=1)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_any_single_byte_change_in_the_newest_segment_is_found(
    fixed_ledger: tuple[Path, TrustAnchor], data: Any
) -> None:
    """Any single changed byte anywhere in the newest segment file makes the verdict not intact."""
    src, _ = fixed_ledger
    path = segment_paths(src)[-1]
    pos = data.draw(st.integers(0, path.stat().st_size - 1), label="position")
    delta = data.draw(st.integers(1, 255), label="delta")
    assert not _verify_with_one_byte_changed(fixed_ledger, path.name, pos, delta).ok


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_any_byte_change_in_a_record_is_found_even_with_the_crc_fixed(
    fixed_ledger: tuple[Path, TrustAnchor], data: Any
) -> None:
    """Any single changed byte in any record of the newest segment, CRC recomputed, makes the verdict not intact."""
    src, trust = fixed_ledger
    path = segment_paths(src)[-1]
    frames = read_frames(path)
    index = data.draw(st.sampled_from([j for j, (k, _) in enumerate(frames) if k == R]), label="frame")
    body = frames[index][1]
    pos = data.draw(st.integers(0, len(body) - 1), label="position")
    value = data.draw(st.integers(0, 255).filter(lambda v: v != body[pos]), label="value")
    with tempfile.TemporaryDirectory() as tmp:
        work = copy_ledger(src, Path(tmp) / "ledger")
        rewrite_record(work / "segments" / path.name, index, lambda b: b[:pos] + bytes([value]) + b[pos + 1 :])
        report = verify_directory(work, trust, workers=1)
    assert not report.ok


@settings(max_examples=200, deadline=None, report_multiple_bugs=False)
@given(data=st.data())
def test_any_single_byte_change_in_any_segment_is_found(fixed_ledger: tuple[Path, TrustAnchor], data: Any) -> None:
    """Any single changed byte anywhere in any segment file makes the verdict not intact."""
    src, _ = fixed_ledger
    path = data.draw(st.sampled_from(segment_paths(src)), label="segment")
    pos = data.draw(st.integers(0, path.stat().st_size - 1), label="position")
    delta = data.draw(st.integers(1, 255), label="delta")
    assert not _verify_with_one_byte_changed(fixed_ledger, path.name, pos, delta).ok
