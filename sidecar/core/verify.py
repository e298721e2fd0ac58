"""Offline verification of a ledger: pure functions over bytes.

Verification runs in two phases so it can use every core:

1. `scan_segment` (one call per segment, in parallel): checks framing, record
   syntax, sequence numbers, the hash chain inside the segment, time order, and
   the signatures on the segment's checkpoints and seal with the keys the
   segment itself names; it returns a small `SegmentScan` (compact Merkle ranges
   instead of leaf hashes).
2. `verify_scans` (once, in order): checks what links segments: numbering,
   the chain across segment boundaries, every checkpoint's root against the
   Merkle tree of all records before it, the key chain from the pinned root key
   (so a key is trusted only if an earlier trusted key introduced it), seals,
   and any checkpoint obtained elsewhere (which finds a cut tail or a rollback).

Every problem becomes a `Finding` with the segment, the sequence number where
known, a stable code and a message that says what was expected and what was
found. Nothing here reads files, the clock or the network.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sidecar.core import framing
from sidecar.core.keys import PublicKey, key_name
from sidecar.core.merkle import CompactRange
from sidecar.core.note import Checkpoint, NoteError, split_note
from sidecar.core.record import genesis_hash
from sidecar.core.segment import SegmentHeader, segment_name
from sidecar.core.trust import TrustAnchor

_LEAF = b"\x00"


@dataclass(frozen=True, slots=True)
class Finding:
    code: str
    message: str
    segment: str | None = None
    seq: int | None = None

    def __str__(self) -> str:
        where = " ".join(p for p in (f"segment {self.segment}" if self.segment else "",
                                     f"seq {self.seq}" if self.seq is not None else "") if p)
        return f"{where + ': ' if where else ''}{self.message} [{self.code}]"

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "segment": self.segment, "seq": self.seq}


@dataclass(slots=True)
class CheckpointScan:
    kind: str  # "checkpoint" or "seal"
    note: bytes
    checkpoint: Checkpoint | None
    subrange: tuple[bytes, ...]  # compact range [first_seq, size)
    signer: bytes | None  # raw public key whose signature verified, if any
    signer_name: str | None
    at_seq: int = 0  # records before this checkpoint in the ledger (what its size must be)


@dataclass(slots=True)
class SegmentScan:
    name: str
    number: int | None
    size_bytes: int
    header: SegmentHeader | None = None
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    first_prev: bytes | None = None
    first_hash: bytes | None = None
    last_hash: bytes | None = None
    first_ts: int | None = None
    last_ts: int | None = None
    end_range: tuple[bytes, ...] = ()
    checkpoints: list[CheckpointScan] = field(default_factory=list)
    rotations: list[tuple[int, PublicKey]] = field(default_factory=list)
    end_key: PublicKey | None = None  # key in force after the last frame
    pending_key: PublicKey | None = None  # introduced by a key.rotated record no checkpoint covers yet
    extra_ranges: dict[int, tuple[bytes, ...]] = field(default_factory=dict)
    sealed: bool = False
    damage: framing.FrameDamage | None = None
    types: Counter[str] = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)


def _check_signature(note: bytes, key: PublicKey) -> tuple[Checkpoint | None, bytes | None, str | None, str]:
    """Return (checkpoint, signer raw key, signer name, problem)."""
    try:
        body, sigs = split_note(note)
        cp = Checkpoint.parse_body(body)
    except NoteError as exc:
        return None, None, None, f"malformed note: {exc}"
    for sig in sigs:
        if sig.name == key.name and sig.key_id == key.key_id and key.verify(sig.signature, body):
            return cp, key.raw, key.name, ""
    names = ", ".join(f"{s.name} (key id {s.key_id.hex()})" for s in sigs)
    return cp, None, None, f"signed by {names}, expected a valid signature by {key.name} (key id {key.key_id.hex()})"


_FAST_HEAD = b'{"event":{'


_TAIL = re.compile(rb'"type":"([^"\\]*)"},"prev":"([0-9a-f]{64})","seq":(0|[1-9][0-9]*),"ts":"([0-9]+)","v":1}')


def _record_fields(data: bytes, start: int, stop: int) -> tuple[int, bytes, int, bytes] | None:
    """(seq, prev hex, ts, event type) read from a record's canonical envelope, or None.

    Canonical bytes sort keys, so a record is `{"event":{...,"type":"T"},"prev":"H","seq":N,
    "ts":"D","v":1}`: the envelope is read from the end without parsing the event object.
    Anything unexpected returns None and the caller parses the whole record.
    """
    if not data.startswith(_FAST_HEAD, start):
        return None
    m = _TAIL.fullmatch(data, data.rfind(b'"type":"', start, stop), stop)
    if m is None:
        return None
    return int(m.group(3)), m.group(2), int(m.group(4)), m.group(1)


def _record_fields_slow(body: bytes) -> tuple[tuple[int, bytes, int, bytes], dict[str, Any]]:
    """The same fields by a full parse; raises ValueError/KeyError/TypeError on a malformed record."""
    from sidecar.core.canonical import parse

    obj = parse(body)
    r_seq, r_prev, event, ts_s = obj["seq"], obj["prev"], obj["event"], obj["ts"]
    if obj["v"] != 1 or len(obj) != 5 or not isinstance(event, dict):
        raise ValueError("unexpected fields or version")
    if type(r_seq) is not int or not (isinstance(ts_s, str) and ts_s.isascii() and ts_s.isdigit()):
        raise ValueError("seq must be an integer and ts a string of decimal digits")
    if not isinstance(r_prev, str):
        raise ValueError("prev must be a hex string")
    return (r_seq, r_prev.encode(), int(ts_s), str(event.get("type")).encode()), event


def scan_segment(name: str, data: bytes, want_sizes: frozenset[int] = frozenset(), *,
                 thorough: bool = True) -> SegmentScan:
    """Phase 1: check one segment on its own. Never raises on bad input.

    `thorough=False` skips reading each record's envelope (seq, prev, ts, type) except the
    first and last and any `key.rotated`: every record is still hashed into the Merkle tree, so
    any change to a record covered by a checkpoint is a `root-mismatch` and any record after the
    last checkpoint is an `unsigned-tail`. Callers rescan thoroughly when that finds anything,
    to name the exact record (`verify_directory` does). What the quick scan cannot see is a
    ledger whose signer itself wrote inconsistent envelopes; `--thorough` checks that too.
    """
    from sidecar.core.segment import segment_number

    scan = SegmentScan(name=name, number=segment_number(name), size_bytes=len(data))
    add = scan.findings.append
    frames = framing.iter_frames(data)
    first = next(frames, None)
    if first is None:
        add(Finding("segment-empty", "segment file is empty", name))
        return scan
    if isinstance(first, framing.FrameDamage) or first.kind != framing.HEADER:
        what = first.reason if isinstance(first, framing.FrameDamage) else \
            f"first frame is a {framing.KIND_NAMES[first.kind]}, expected a header"
        add(Finding("header-missing", f"no segment header: {what}", name))
        return scan
    try:
        header = SegmentHeader.decode(first.body)
    except ValueError as exc:
        add(Finding("header-malformed", str(exc), name))
        return scan
    if header.first_seq < 0 or header.segment < 0:
        add(Finding("header-malformed", f"header has first_seq {header.first_seq}, segment {header.segment}", name))
        return scan
    scan.header = header
    if scan.number is not None and header.segment != scan.number:
        add(Finding("header-mismatch", f"header says segment {header.segment}, file name says {scan.number}", name))
    seq = header.first_seq
    prev = header.prev
    scan.first_seq = seq
    scan.first_prev = prev
    crange = CompactRange.empty(seq)
    sha256 = hashlib.sha256
    key = header.key
    pending: PublicKey | None = None
    last_ts = -1

    leaves: list[bytes] = []  # leaf hashes not yet folded into crange (folded in batches: much faster)
    extend = crange.extend
    mv = memoryview(data)
    end = len(data)
    pos = first.offset + framing.OVERHEAD + len(first.body)
    crc32 = zlib.crc32
    kinds = framing.KINDS
    max_frame = framing.MAX_FRAME
    head = framing._HEAD.unpack_from
    crc_at = framing._CRC.unpack_from
    types: dict[bytes, int] = {}
    prev_hex = prev.hex().encode()
    last_span: tuple[int, int] | None = None  # the last record the quick scan did not read
    while pos < end:
        # Inline frame walk (the generator in framing.iter_frames costs more than the hashing);
        # on anything unusual, iter_frames describes the damage exactly.
        frame_ok = False
        if end - pos >= framing.OVERHEAD:
            kind, length = head(data, pos)
            stop = pos + 5 + length
            frame_ok = (kind in kinds and length <= max_frame and stop + 4 <= end
                        and crc32(mv[pos:stop]) == crc_at(data, stop)[0])
        if not frame_ok:
            d = next(framing.iter_frames(mv[pos:]))
            assert isinstance(d, framing.FrameDamage)
            scan.damage = framing.FrameDamage(pos + d.offset, d.reason, d.torn)
            add(Finding("frame-damaged", f"offset {pos + d.offset}: {d.reason}"
                        + (" (a torn tail)" if d.torn else ""), name, seq))
            break
        offset, pos = pos, stop + 4
        if scan.sealed:
            kind_name = framing.KIND_NAMES[kind]
            add(Finding("after-seal", f"offset {offset}: a {kind_name} frame follows the seal", name, seq))
            break
        if kind == framing.RECORD:
            start = offset + 5
            leaf = sha256(_LEAF + data[start:stop]).digest()
            if not thorough and seq != header.first_seq and data.find(b'"key.rotated"', start, stop) < 0:
                t = data.rfind(b'"type":"', start, stop)
                etype = data[t + 8: data.find(b'"', t + 8, stop)] if t >= 0 else b"?"
                types[etype] = types.get(etype, 0) + 1
                last_span = (start, stop)
                leaves.append(leaf)
                prev = leaf
                seq += 1
                if seq in want_sizes:
                    extend(leaves)
                    leaves.clear()
                    scan.extra_ranges[seq] = tuple(crange.hashes)
                continue
            fields = _record_fields(data, start, stop)
            if fields is None or fields[3] == b"key.rotated":
                try:
                    fields, event = _record_fields_slow(data[start:stop])
                except (ValueError, KeyError, TypeError) as exc:
                    add(Finding("record-malformed", f"offset {offset}: record does not parse: {exc}", name, seq))
                    break
            else:
                event = None
            r_seq, r_prev, r_ts, etype = fields
            if r_seq != seq:
                add(Finding("seq-mismatch", f"expected seq {seq}, record says {r_seq}", name, seq))
                break
            if thorough and r_prev != prev_hex:
                shown = r_prev[:16].decode("ascii", "replace")
                add(Finding("chain-broken", f"previous hash is {shown}..., the record before it hashes to "
                            f"{prev.hex()[:16]}...", name, seq))
                break
            if thorough and r_ts < last_ts:
                add(Finding("time-backwards", f"time {r_ts} is before the previous record's {last_ts}", name, seq))
            last_ts = r_ts
            if scan.first_ts is None:
                scan.first_ts = r_ts
            types[etype] = types.get(etype, 0) + 1
            if event is not None and etype == b"key.rotated":
                try:
                    new_key = PublicKey.from_json(event["details"]["key"])
                except (KeyError, TypeError, ValueError) as exc:
                    add(Finding("rotation-malformed", f"key.rotated record has no usable key: {exc}", name, seq))
                else:
                    if pending is not None:
                        add(Finding("rotation-invalid", "a second key.rotated record before any checkpoint",
                                    name, seq))
                    scan.rotations.append((seq, new_key))
                    pending = new_key
            leaves.append(leaf)
            if scan.first_hash is None:
                scan.first_hash = leaf
            prev = leaf
            prev_hex = leaf.hex().encode()
            last_span = None
            seq += 1
            if seq in want_sizes:
                extend(leaves)
                leaves.clear()
                scan.extra_ranges[seq] = tuple(crange.hashes)
        elif kind in (framing.CHECKPOINT, framing.SEAL):
            extend(leaves)
            leaves.clear()
            note = data[offset + 5: stop]
            # A key.rotated record takes effect after the first checkpoint that follows it,
            # and that checkpoint must be signed by the outgoing key.
            cp, signer, signer_name, problem = _check_signature(note, key)
            if pending is not None:
                key, pending = pending, None
            label = "seal" if kind == framing.SEAL else "checkpoint"
            if problem:
                add(Finding("bad-signature", f"{label} at offset {offset}: {problem}", name, seq - 1))
            if cp is not None and cp.size != seq:
                add(Finding("checkpoint-size", f"{label} says tree size {cp.size}, but {seq} records precede it",
                            name, seq - 1))
            if cp is not None and (kind == framing.SEAL) != (cp.seal is not None):
                add(Finding("seal-malformed", f"{label} frame kind and seal line disagree", name, seq - 1))
            scan.checkpoints.append(CheckpointScan(label, note, cp, tuple(crange.hashes), signer, signer_name,
                                                   seq))
            if kind == framing.SEAL:
                scan.sealed = True
        else:  # a second header
            add(Finding("header-duplicate", f"offset {offset}: a second segment header", name, seq))
            break
    extend(leaves)
    if last_span is not None:  # the quick scan still reports the time span
        fields = _record_fields(data, *last_span)
        if fields is None:
            try:
                fields = _record_fields_slow(data[last_span[0]: last_span[1]])[0]
            except (ValueError, KeyError, TypeError):
                fields = None
        if fields is not None:
            last_ts = max(last_ts, fields[2])
    for etype_b, count in types.items():
        scan.types[etype_b.decode("utf-8", "replace")] += count
    scan.records = seq - header.first_seq
    scan.last_seq = seq - 1 if scan.records else None
    scan.last_hash = prev
    scan.last_ts = last_ts if last_ts >= 0 else None
    scan.end_range = tuple(crange.hashes)
    scan.end_key = key
    scan.pending_key = pending
    covered = scan.checkpoints[-1].at_seq if scan.checkpoints else header.first_seq
    if seq > covered and scan.damage is None and not any(f.code in _STOPS for f in scan.findings):
        add(Finding("unsigned-tail", f"{seq - covered} record(s) after the last checkpoint (seq {covered}..{seq - 1}) "
                    "are covered by no signature: appended by someone without the key, or a crash not yet "
                    "recovered", name, covered))
    return scan


@dataclass(slots=True)
class Report:
    segments: int = 0
    records: int = 0
    total_bytes: int = 0
    checkpoints: int = 0
    first_ts: int | None = None
    last_ts: int | None = None
    size: int = 0
    root: bytes = b""
    keys: list[str] = field(default_factory=list)
    types: Counter[str] = field(default_factory=Counter)
    external_checkpoints: int = 0
    findings: list[Finding] = field(default_factory=list)
    mode: str = "thorough"  # or "quick": record envelopes not read (see scan_segment)

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": "intact" if self.ok else "tampered-or-incomplete",
            "segments": self.segments, "records": self.records, "bytes": self.total_bytes,
            "checkpoints": self.checkpoints, "external_checkpoints": self.external_checkpoints,
            "tree_size": self.size, "root": self.root.hex(),
            "first_time_ns": self.first_ts, "last_time_ns": self.last_ts, "keys": self.keys,
            "event_types": dict(sorted(self.types.items())), "mode": self.mode,
            "findings": [f.to_json() for f in self.findings],
        }


# Findings after which a segment scan stopped before its end.
_STOPS = frozenset({"record-malformed", "seq-mismatch", "chain-broken", "after-seal", "header-duplicate"})


def _range_fits(size: int, hashes: Sequence[bytes]) -> bool:
    try:
        CompactRange(0, size, hashes)
    except ValueError:
        return False
    return True


def _root_at(prefix: CompactRange, subrange: Sequence[bytes], begin: int, end: int) -> bytes:
    rng = prefix.copy()
    rng.merge(CompactRange(begin, end, subrange))
    return rng.root()


def verify_scans(scans: Iterable[SegmentScan], trust: TrustAnchor,
                 external: Sequence[bytes] = ()) -> Report:
    """Phase 2: link the segment scans into one verdict."""
    report = Report()
    add = report.findings.append
    ordered = sorted(scans, key=lambda s: (s.number if s.number is not None else -1, s.name))
    key = trust.root_key
    report.keys.append(key.name)
    schedule: list[tuple[int, PublicKey]] = [(0, key)]  # (first tree size it signs beyond, key)
    prefix: CompactRange | None = CompactRange.empty(0)
    prev_hash = genesis_hash(trust.origin)
    next_seq = 0
    expected_segment = 0
    last_time = -1
    roots: dict[int, bytes] = {0: CompactRange.empty(0).root()}
    tree_ok = True
    last_record_ts = -1
    pending_ranges: dict[int, tuple[int, tuple[bytes, ...], CompactRange]] = {}
    for i, scan in enumerate(ordered):
        report.segments += 1
        report.total_bytes += scan.size_bytes
        report.findings.extend(scan.findings)
        report.types.update(scan.types)
        h = scan.header
        if scan.number is None:
            add(Finding("segment-name", "file name is not <8 digits>.seg", scan.name))
            continue
        if scan.number != expected_segment:
            missing = ", ".join(segment_name(n) for n in range(expected_segment, scan.number)) \
                if scan.number > expected_segment else ""
            add(Finding("segment-missing" if missing else "segment-order",
                        f"expected segment {segment_name(expected_segment)} next, found {scan.name}"
                        + (f"; missing: {missing}" if missing else ""), scan.name))
        expected_segment = scan.number + 1
        if h is None:
            continue
        if h.origin != trust.origin:
            add(Finding("origin-mismatch", f"segment belongs to origin {h.origin!r}, expected {trust.origin!r}",
                        scan.name))
            continue
        if h.first_seq != next_seq:
            add(Finding("seq-gap", f"segment starts at seq {h.first_seq}, expected {next_seq}", scan.name,
                        h.first_seq))
            # Records are missing (or extra): roots from here on cannot be checked against the records.
            # Carry on from the header's own claims so the rest of the ledger is still examined.
            tree_ok = False
            prefix = CompactRange(0, h.first_seq, h.range) if _range_fits(h.first_seq, h.range) else None
            next_seq = h.first_seq
        elif h.prev != prev_hash:
            add(Finding("chain-broken", f"previous hash is {h.prev.hex()[:16]}..., the record before it hashes to "
                        f"{prev_hash.hex()[:16]}...", scan.name, h.first_seq))
        if prefix is not None and tuple(h.range) != tuple(prefix.hashes) and h.first_seq == next_seq:
            add(Finding("range-mismatch", "header's Merkle range does not match the records before it",
                        scan.name, h.first_seq))
        if h.key != key:
            add(Finding("untrusted-key", f"segment names key {h.key.name} ({h.key.key_id.hex()}), but the key in force "
                        f"is {key.name} ({key.key_id.hex()})", scan.name, h.first_seq))
        # checkpoints and seal
        begin = h.first_seq
        for cps in scan.checkpoints:
            report.checkpoints += 1
            cp = cps.checkpoint
            if cp is None:
                continue
            if cp.origin != trust.origin:
                add(Finding("origin-mismatch", f"{cps.kind} of size {cp.size} names origin {cp.origin!r}",
                            scan.name, cp.size - 1))
            if prefix is not None and cp.size == cps.at_seq and cp.size >= begin:
                root = _root_at(prefix, cps.subrange, begin, cp.size)
                roots[cp.size] = root
                if root != cp.root:
                    add(Finding("root-mismatch", f"{cps.kind} of size {cp.size} has root {cp.root.hex()[:16]}..., "
                                f"the records hash to {root.hex()[:16]}...", scan.name, cp.size - 1))
            if cp.time_ns < last_time:
                add(Finding("time-backwards", f"{cps.kind} time {cp.time_ns} is before the previous checkpoint's "
                            f"{last_time}", scan.name, cp.size - 1))
            last_time = max(last_time, cp.time_ns)
            if cp.seal is not None:
                s = cp.seal
                last = h.first_seq + scan.records - 1
                if (s.segment, s.first_seq, s.last_seq) != (scan.number, h.first_seq, last) \
                        or s.last_hash != scan.last_hash or s.first_hash != scan.first_hash:
                    add(Finding("seal-mismatch", f"seal says segment {s.segment} seq {s.first_seq}..{s.last_seq} "
                                f"ending in {s.last_hash.hex()[:16]}..., the segment holds {scan.number} seq "
                                f"{h.first_seq}..{last} ending in {(scan.last_hash or b'').hex()[:16]}...",
                                scan.name, scan.last_seq))
                if s.policy_digest != h.policy:
                    add(Finding("policy-mismatch", f"seal's policy digest {s.policy_digest[:16]}... differs from the "
                                f"header's {h.policy[:16]}...", scan.name, scan.last_seq))
        # The scan checked every signature with the key the header names, following in-segment
        # rotations; here the header's key must be the one the key chain so far trusts.
        for seq, new_key in scan.rotations:
            if new_key.name != key_name(trust.origin, key.epoch + 1):
                add(Finding("rotation-invalid", f"key.rotated introduces {new_key.name}, expected "
                            f"{key_name(trust.origin, key.epoch + 1)}", scan.name, seq))
            key = new_key
            report.keys.append(key.name)
            schedule.append((seq + 1, key))
        if scan.pending_key is not None and i != len(ordered) - 1:
            add(Finding("rotation-unsigned", f"key.rotated to {scan.pending_key.name} is not followed by a "
                        "checkpoint signed by the outgoing key", scan.name, scan.last_seq))
        if not scan.sealed and i != len(ordered) - 1:
            add(Finding("not-sealed", f"segment is not sealed but {ordered[i + 1].name} follows it", scan.name))
        if scan.first_ts is not None and scan.first_ts < last_record_ts:
            add(Finding("time-backwards", f"first record time {scan.first_ts} is before the previous segment's "
                        f"last {last_record_ts}", scan.name, h.first_seq))
        if scan.last_ts is not None:
            last_record_ts = scan.last_ts
        # advance the global state
        if prefix is not None:
            for size, sub in scan.extra_ranges.items():
                pending_ranges[size] = (begin, sub, prefix.copy())
            if scan.damage is None and not any(f.code in _STOPS for f in scan.findings):
                prefix.merge(CompactRange(begin, begin + scan.records, scan.end_range))
            else:
                prefix = None  # the scan stopped early: later roots cannot be computed
        report.records += scan.records
        next_seq = begin + scan.records
        prev_hash = scan.last_hash if scan.last_hash is not None else prev_hash
        if scan.first_ts is not None and report.first_ts is None:
            report.first_ts = scan.first_ts
        if scan.last_ts is not None:
            report.last_ts = scan.last_ts
    report.size = next_seq
    if prefix is not None and tree_ok:
        report.root = prefix.root()
        roots[next_seq] = report.root
    for begin_size, (begin, sub, pre) in pending_ranges.items():
        roots.setdefault(begin_size, _root_at(pre, sub, begin, begin_size))
    for note in external:
        _check_external(note, trust, report, roots, schedule)
    return report


def _check_external(note: bytes, trust: TrustAnchor, report: Report, roots: dict[int, bytes],
                    schedule: Sequence[tuple[int, PublicKey]]) -> None:
    report.external_checkpoints += 1
    add = report.findings.append
    try:
        body, sigs = split_note(note)
        cp = Checkpoint.parse_body(body)
    except NoteError as exc:
        add(Finding("external-malformed", f"external checkpoint does not parse: {exc}"))
        return
    if cp.origin != trust.origin:
        add(Finding("external-origin", f"external checkpoint is for origin {cp.origin!r}, expected {trust.origin!r}"))
        return
    # The key in force at that size by the ledger's own key chain; beyond the ledger's end the
    # newest key is the only candidate (a checkpoint from the future can only be signed by it).
    # At a rotation's tree size both the outgoing and the incoming key sign checkpoints.
    valid = [k for i, (start, k) in enumerate(schedule)
             if start <= cp.size and (i + 1 == len(schedule) or cp.size <= schedule[i + 1][0])]
    ok = any(s.name == k.name and s.key_id == k.key_id and k.verify(s.signature, body) for s in sigs for k in valid)
    if not ok:
        add(Finding("external-signature", f"external checkpoint of size {cp.size} is not signed by a key in "
                    f"force at that size ({', '.join(k.name for k in valid)}); signed by "
                    f"{', '.join(s.name for s in sigs)}"))
        return
    if cp.size > report.size:
        add(Finding("tail-cut", f"an external checkpoint proves {cp.size} records, the ledger holds only "
                    f"{report.size}: the tail was cut or the ledger rolled back", seq=report.size))
        return
    root = roots.get(cp.size)
    if root is None:
        add(Finding("external-unchecked", f"no Merkle range kept for size {cp.size}; pass it as want_sizes"))
    elif root != cp.root:
        add(Finding("split-view", f"external checkpoint of size {cp.size} has root {cp.root.hex()[:16]}..., the "
                    f"ledger's records give {root.hex()[:16]}...: the ledger was rewritten or forked",
                    seq=cp.size - 1))


def external_sizes(notes: Sequence[bytes]) -> frozenset[int]:
    """Tree sizes for which scan_segment must keep a Merkle range."""
    sizes = set()
    for note in notes:
        try:
            sizes.add(Checkpoint.parse_body(split_note(note)[0]).size)
        except NoteError:
            continue
    return frozenset(sizes)
