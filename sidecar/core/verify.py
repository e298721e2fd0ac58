"""Offline verification of a ledger: pure functions over bytes (docs/format.md §15).

Verification runs in two phases so it can use every core:

1. `scan_segment` (one call per segment, in parallel): checks framing, every
   record's bytes (canonical JSON of the documented shape), sequence numbers,
   the hash chain inside the segment, time order, the signatures on the
   segment's checkpoints and seal, and in kc-ledger/2 the digest each of them
   signs over the segment's bytes before it; it returns a small `SegmentScan`
   (compact Merkle ranges instead of leaf hashes).
2. `verify_scans` (once, in order): checks what links segments: numbering, the
   format order, the chain across segment boundaries, every checkpoint's root
   against the Merkle tree of all records before it, the key chain from the
   pinned root key (so a key is trusted only if an earlier trusted key
   introduced it), seals, time across segments, and any checkpoint obtained
   elsewhere (which finds a cut tail or a rollback).

There is one procedure, the full one: every record is parsed and checked.
Every problem becomes a `Finding` with the segment, the sequence number (the
rules of §15) where known, a stable code and a message that says what was
expected and what was found. Findings come in the order of §15.4. Nothing here
reads files, the clock or the network. Every reader goes through the one parser
of each format: `framing.iter_frames`, `SegmentHeader.decode`, `parse_record`,
`parse_note` and `signed_by`; the batched scan's fast paths (column checks in
Python, and the record loop in C, sidecar/core/native.py) only vouch for clean
records, and anything else goes back to those parsers.
"""

from __future__ import annotations

import hashlib
import operator
import re
import struct
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from sidecar.core import framing, native
from sidecar.core.canonical import _FLOAT as _FLOAT_RE
from sidecar.core.canonical import _FLOAT_HINT as _FLOAT_HINT_RE
from sidecar.core.canonical import _KEY as _KEY_RE
from sidecar.core.canonical import _STRING as _STRING_RE
from sidecar.core.keys import PublicKey, key_name
from sidecar.core.merkle import CompactRange
from sidecar.core.note import Checkpoint, Note, NoteError, parse_note, signed_by
from sidecar.core.record import RecordError, genesis_hash, parse_record
from sidecar.core.segment import HeaderError, SegmentHeader, segment_name, segment_number
from sidecar.core.trust import TrustAnchor

# The batched scan's record loop in C (sidecar/core/native.py): used unless not built or SIDECAR_NATIVE=0.
_native = native.ext
NATIVE = native.ENABLED

KEY_ROTATED = "key.rotated"
SUBJECT_ERASED = "subject.erased"
ENCRYPTED_MARK = b'"kc-enc":'  # an encrypted field value (docs/format.md §5.2)
WITHHELD_MARK = b'"erased_fields":'  # values left out: written after their subject's erasure (§5.2)

# What a kc-ledger/1 segment does not prove (docs/format.md §16); stated in every report that has one.
V1_LIMITATIONS = (
    "kc-ledger/1 segments: the segment header (created, policy) is covered by no signature",
    "kc-ledger/1 segments: records between a key.rotated record and the next checkpoint are accepted "
    "under the retired key",
    "kc-ledger/1 segments: a seal after a rotation is signed by the incoming key, so that key's holder "
    "can re-sign the segment's seal",
)


@dataclass(frozen=True, slots=True)
class Finding:
    code: str
    message: str
    segment: str | None = None
    seq: int | None = None

    def __str__(self) -> str:
        where = " ".join(
            p
            for p in (
                f"segment {self.segment}" if self.segment else "",
                f"seq {self.seq}" if self.seq is not None else "",
            )
            if p
        )
        return f"{where + ': ' if where else ''}{self.message} [{self.code}]"

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "segment": self.segment, "seq": self.seq}


@dataclass(slots=True)
class CheckpointScan:
    kind: str  # "checkpoint" or "seal"
    note: bytes
    checkpoint: Checkpoint | None
    subrange: tuple[bytes, ...]  # compact range [first_seq, at_seq)
    signed: bool  # a valid signature by the key in force
    at_seq: int = 0  # records before this frame in the ledger (what its size must be)
    offset: int = 0
    signer: bytes | None = None  # raw public key whose signature verified, if any
    signer_name: str | None = None


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
    pending_key: PublicKey | None = None  # kc-ledger/1: introduced by a key.rotated record no checkpoint covers yet
    extra_ranges: dict[int, tuple[bytes, ...]] = field(default_factory=dict)
    sealed: bool = False
    stopped: bool = False  # the scan stopped before the end (records after that point are unknown)
    damage: framing.FrameDamage | None = None
    types: Counter[str] = field(default_factory=Counter)
    encrypted_records: int = 0  # records carrying at least one encrypted field value
    withheld_records: int = 0  # records with an erased subject's values left out (details.erased_fields)
    erased_subjects: set[str] = field(default_factory=set)
    subjects_by_record: list[frozenset[str]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


def _erased_by(details: dict[str, Any]) -> list[str]:
    """The subject ids a `subject.erased` record's details name: its subject and its `pseudonyms` (§5.2)."""
    extra = details.get("pseudonyms")
    return [details["subject"], *(p for p in (extra if isinstance(extra, list) else []) if isinstance(p, str))]


def _withheld(event: dict[str, Any]) -> bool:
    """Whether the writer left an erased subject's values out of this event (`details.erased_fields`)."""
    details = event.get("details")
    return isinstance(details, dict) and isinstance(details.get("erased_fields"), list)


def _before(at: int) -> int | None:
    """The seq a checkpoint finding carries: the last record before the frame (§15)."""
    return at - 1 if at > 0 else None


def _subjects(value: Any, out: set[str]) -> None:
    """Subject ids of the encrypted field values in an event (docs/format.md §5.2)."""
    if isinstance(value, dict):
        if value.get("kc-enc") == 1 and isinstance(value.get("sub"), str):
            out.add(value["sub"])
            return
        for item in value.values():
            _subjects(item, out)
    elif isinstance(value, list):
        for item in value:
            _subjects(item, out)


def scan_segment(
    name: str, data: bytes, want_sizes: frozenset[int] = frozenset(), *, thorough: bool = True
) -> SegmentScan:
    """Phase 1: check one segment on its own (§15.1). Never raises on bad input.

    Both paths do the full procedure. `_scan_batched` checks a segment's records a run at a time
    (a run: the records between two checkpoints) and gives up, returning None, at the first thing
    that would be a finding or that it does not handle (a key rotation); `scan_reference`, the
    record-by-record reference, then scans the segment again and reports exactly what is wrong.
    A clean segment gives the same `SegmentScan` either way (tests/core/test_verify.py checks
    it on every vector and on random damage). The batched scan runs its hot loop in C when the
    extension is there (`NATIVE`), a fast path that only vouches for clean records and leaves every
    other record to the Python code (tests/core/test_verify_native.py). `thorough` is accepted for
    callers of the old quick scan and ignored: every record is read.
    """
    del thorough
    fast = _scan_batched(name, data, want_sizes)
    return fast if fast is not None else scan_reference(name, data, want_sizes)


_HEAD = struct.Struct(">BI")  # sidecar.core.framing: kind, body length; a CRC-32 of both and the body follows
_CRC = struct.Struct(">I")
_CANON = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER
_RUN_MAX = 1024  # records checked together at most (a longer run between checkpoints is cut into pieces)
_NATIVE_MAX = 4096  # records the C loop takes per call at most (its leaf hashes: 128 KiB)
_ENVELOPE = operator.itemgetter("v", "seq", "ts", "prev", "event")
_HINT_MAP = bytes.maketrans(b"0123456789-.eE:,[", b"00000000000...:::")
_HINT_MAPPED = re.compile(rb":0+\.")
_NUMBER_START = b"-0123456789"


def _run_ok(bodies: list[bytes], objs: list[Any]) -> bool:
    """Whether every body is exactly the canonical encoding of its (separately parsed) value.

    Equivalent to `parse_canonical` on each body (canonical.py): one re-encoding of the run
    instead of one per record. Each body was parsed on its own, so the re-encoded list can equal
    the joined bodies only if every item's encoding equals its body (a complete JSON text is never
    a proper prefix of another's canonical encoding followed by a comma).
    """
    joined = b",".join(bodies)
    try:
        again = orjson.dumps(objs, option=_CANON)
    except TypeError:  # an integer beyond +/-(2^53-1)
        return False
    if len(again) != len(joined) + 2 or again[1:-1] != joined:
        return False
    if not joined.isascii():
        for body in bodies:
            if not body.isascii() and any(not m.group().isascii() for m in _KEY_RE.finditer(body)):
                return False
    # A float needs the canonical-check's hint (canonical.py `_FLOAT_HINT`: ':', ',' or '[', digits, then '.',
    # 'e' or 'E'). On a copy with every digit and '-' as '0', every '.eE' as '.' and every ':,[' as ':' that
    # is one pattern with a literal start, which the regex engine finds fast; only a hit costs the exact test.
    if joined[:1] in _NUMBER_START or _HINT_MAPPED.search(joined.translate(_HINT_MAP)):
        return not any(_FLOAT_HINT_RE.search(body) and _FLOAT_RE.search(_STRING_RE.sub(b"", body)) for body in bodies)
    return True


def _scan_batched(name: str, data: bytes, want_sizes: frozenset[int], native: bool | None = None) -> SegmentScan | None:
    """The full check of a clean segment, a run of records at a time; None as soon as anything is off.

    `native` picks the record loop: the C one (default: `NATIVE`) or the pure-Python one.
    """
    try:
        return _batched(name, data, want_sizes, NATIVE if native is None else native)
    except Exception:  # hostile bytes (a parse error, a missing member): the reference decides
        return None


def _batched(name: str, data: bytes, want_sizes: frozenset[int], use_native: bool) -> SegmentScan | None:
    end = len(data)
    unpack_head, unpack_crc, crc32 = _HEAD.unpack_from, _CRC.unpack_from, zlib.crc32
    if end < framing.OVERHEAD:
        return None
    view = memoryview(data)
    kind, length = unpack_head(data, 0)
    stop = 5 + length
    if kind != framing.HEADER or length > framing.MAX_FRAME or stop + 4 > end:
        return None
    if crc32(view[:stop]) != unpack_crc(data, stop)[0]:
        return None
    try:
        header = SegmentHeader.decode(data[5:stop])
    except HeaderError:
        return None
    number = segment_number(name)
    if number is not None and header.segment != number:
        return None
    version = header.version
    v2 = version >= 2
    scan = SegmentScan(name=name, number=number, size_bytes=end, header=header)
    seq = scan.first_seq = header.first_seq
    prev = scan.first_prev = header.prev
    crange = CompactRange.empty(seq)
    key = header.key
    digest = hashlib.sha256()
    digested = 0
    last_ts = -1
    types = scan.types
    bodies: list[bytes] = []
    sha256, loads = hashlib.sha256, orjson.loads
    pos = stop + 4

    def fold(leaves: bytes, n: int) -> None:
        """Fold n concatenated leaf hashes (of seq onwards) into crange, keeping the ranges asked for."""
        folded = 0
        for size in sorted(s for s in want_sizes if seq < s <= seq + n) if want_sizes else ():
            crange.extend_concatenated(leaves[folded * 32 : (size - seq) * 32])
            folded = size - seq
            scan.extra_ranges[size] = tuple(crange.hashes)
        crange.extend_concatenated(leaves[folded * 32 :])

    def records() -> bool:
        """Check the pending run of record bodies (column by column) and fold it into crange."""
        nonlocal seq, prev, last_ts
        n = len(bodies)
        if not n:
            return True
        objs = [loads(b) for b in bodies]
        if set(map(type, objs)) != {dict} or set(map(len, objs)) != {5} or not _run_ok(bodies, objs):
            return False
        vs, seqs, tss, prevs, events = zip(*map(_ENVELOPE, objs), strict=True)  # a KeyError: a member is missing
        if set(map(type, vs)) != {int} or set(vs) != {version} or set(map(type, seqs)) != {int}:
            return False
        if seqs != tuple(range(seq, seq + n)) or set(map(type, tss)) != {str} or set(map(type, events)) != {dict}:
            return False
        digits = "".join(tss)
        if not (digits.isascii() and digits.isdigit()):
            return False
        times = list(map(int, tss))
        if list(map(str, times)) != list(tss) or times[0] < last_ts or times != sorted(times):
            return False  # not decimal (a leading zero), or time runs backwards
        leaves = [sha256(b"\x00" + b).digest() for b in bodies]
        if set(map(type, prevs)) != {str} or set(map(len, prevs)) != {64}:
            return False
        if "".join(prevs) != (prev + b"".join(leaves[:-1])).hex():
            return False  # a prev that is not the hash of the record before it
        etypes = [e.get("type", "") for e in events]
        if v2 and (set(map(type, etypes)) != {str} or set(map(type, [e.get("outcome") for e in events])) != {str}):
            return False
        if KEY_ROTATED in etypes:
            return False  # rotations are rare and subtle: the reference handles them
        if scan.first_ts is None:
            scan.first_ts = times[0]
            scan.first_hash = leaves[0]
        types.update(etypes if v2 else [t if type(t) is str else str(t) for t in etypes])
        if SUBJECT_ERASED in etypes:
            for etype, event in zip(etypes, events, strict=True):
                details = event.get("details")
                if etype == SUBJECT_ERASED and isinstance(details, dict) and isinstance(details.get("subject"), str):
                    scan.erased_subjects.update(_erased_by(details))
        if any(WITHHELD_MARK in b for b in bodies):
            scan.withheld_records += sum(
                WITHHELD_MARK in body and _withheld(event) for body, event in zip(bodies, events, strict=True)
            )
        if any(ENCRYPTED_MARK in b for b in bodies):
            for body, event in zip(bodies, events, strict=True):
                if ENCRYPTED_MARK in body:
                    subjects: set[str] = set()
                    _subjects(event, subjects)
                    if subjects:
                        scan.encrypted_records += 1
                        scan.subjects_by_record.append(frozenset(subjects))
        fold(b"".join(leaves), n)
        last_ts = times[-1]
        prev = leaves[-1]
        seq += n
        bodies.clear()
        return True

    def vouched(at: int) -> int:
        """The C loop: fold in the clean records from `at` on; the offset of the first frame it left."""
        nonlocal seq, prev, last_ts
        at, n, leaves, first_ts, last, counts, subjects = _native.scan_records(
            data, at, version, seq, prev, last_ts, _NATIVE_MAX
        )
        if n:
            if scan.first_ts is None:
                scan.first_ts = first_ts
                scan.first_hash = leaves[:32]
            types.update(counts)
            if subjects:
                scan.encrypted_records += len(subjects)
                scan.subjects_by_record.extend(subjects)
            fold(leaves, n)
            last_ts = last
            prev = leaves[-32:]
            seq += n
        return at

    use_native = use_native and _native is not None
    record, max_frame, append = framing.RECORD, framing.MAX_FRAME, bodies.append
    while pos < end:
        if scan.sealed:
            return None
        if use_native:
            pos = vouched(pos)
            if pos >= end:
                break
        # A frame that runs past the end makes unpack_from raise: the reference then words the damage.
        kind, length = unpack_head(data, pos)
        if use_native and kind == record:
            # A record the C loop did not vouch for: the Python checks of this one record, then back to C.
            stop = pos + 5 + length
            if length > max_frame or crc32(view[pos:stop]) != unpack_crc(data, stop)[0]:
                return None
            append(data[pos + 5 : stop])
            pos = stop + 4
            if not records():
                return None
            continue
        while kind == record:  # the hot loop (pure Python): a run of records
            stop = pos + 5 + length
            if length > max_frame or crc32(view[pos:stop]) != unpack_crc(data, stop)[0]:
                return None
            append(data[pos + 5 : stop])
            pos = stop + 4
            if len(bodies) >= _RUN_MAX and not records():  # memory stays flat however long a run is
                return None
            if pos >= end:
                break
            kind, length = unpack_head(data, pos)
        if pos >= end:
            break
        start = pos + 5
        stop = start + length
        if length > max_frame or crc32(view[pos:stop]) != unpack_crc(data, stop)[0]:
            return None
        if kind == framing.CHECKPOINT or kind == framing.SEAL:
            if not records():
                return None
            body = data[start:stop]
            try:
                note = parse_note(body)
            except NoteError:
                return None
            cp = note.checkpoint
            if cp.size != seq or (kind == framing.SEAL) != (cp.seal is not None) or not signed_by(note, key):
                return None
            if v2:
                digest.update(view[digested:pos])
                digested = pos
                if cp.segment is None or (cp.segment.segment, cp.segment.offset, cp.segment.digest) != (
                    header.segment,
                    pos,
                    digest.digest(),
                ):
                    return None
            elif cp.segment is not None:
                return None
            label = "seal" if kind == framing.SEAL else "checkpoint"
            scan.checkpoints.append(
                CheckpointScan(label, body, cp, tuple(crange.hashes), True, seq, pos, key.raw, key.name)
            )
            scan.sealed = kind == framing.SEAL
        else:
            return None
        pos = stop + 4
    if not records():
        return None
    scan.records = seq - header.first_seq
    scan.last_seq = seq - 1 if scan.records else None
    scan.last_hash = prev
    scan.last_ts = last_ts if last_ts >= 0 else None
    scan.end_range = tuple(crange.hashes)
    scan.end_key = key
    covered = scan.checkpoints[-1].at_seq if scan.checkpoints else None
    if covered is None or seq > covered:
        return None  # an unsigned tail: the reference words the finding
    return scan


def scan_reference(name: str, data: bytes, want_sizes: frozenset[int] = frozenset()) -> SegmentScan:
    """Phase 1, record by record: the reference procedure, and what names every finding exactly."""
    scan = SegmentScan(name=name, number=segment_number(name), size_bytes=len(data))
    add = scan.findings.append
    frames = framing.iter_frames(data)
    first = next(frames, None)
    if first is None:
        add(Finding("segment-empty", "segment file is empty", name))
        return scan
    if isinstance(first, framing.FrameDamage) or first.kind != framing.HEADER:
        what = (
            first.reason
            if isinstance(first, framing.FrameDamage)
            else f"first frame is a {framing.KIND_NAMES[first.kind]}, expected a header"
        )
        add(Finding("header-missing", f"no segment header: {what}", name))
        return scan
    try:
        header = SegmentHeader.decode(first.body)
    except HeaderError as exc:
        add(Finding("header-malformed", str(exc), name))
        return scan
    scan.header = header
    if scan.number is not None and header.segment != scan.number:
        add(Finding("header-mismatch", f"header says segment {header.segment}, file name says {scan.number}", name))
    v2 = header.version >= 2
    seq = header.first_seq
    prev = header.prev
    scan.first_seq = seq
    scan.first_prev = prev
    crange = CompactRange.empty(seq)
    key = header.key
    pending: PublicKey | None = None
    rotated_at: int | None = None  # kc-ledger/2: the seq of this segment's key.rotated record
    last_ts = -1
    leaves: list[bytes] = []  # leaf hashes not yet folded into crange (folded in batches: much faster)
    sha256 = hashlib.sha256
    digest = sha256()
    digested = 0
    types: Counter[str] = scan.types
    for frame in frames:
        if isinstance(frame, framing.FrameDamage):
            scan.damage = frame
            add(
                Finding(
                    "frame-damaged",
                    f"offset {frame.offset}: {frame.reason}" + (" (a torn tail)" if frame.torn else ""),
                    name,
                    seq,
                )
            )
            break
        if scan.sealed:
            add(
                Finding(
                    "after-seal",
                    f"offset {frame.offset}: a {framing.KIND_NAMES[frame.kind]} frame follows the seal",
                    name,
                    seq,
                )
            )
            scan.stopped = True
            break
        kind, body = frame.kind, frame.body
        if kind == framing.RECORD:
            leaf = sha256(b"\x00" + body).digest()  # hash the bytes as read, then parse them
            try:
                rec = parse_record(body, header.version)
            except RecordError as exc:
                add(Finding(exc.code, f"offset {frame.offset}: {exc}", name, seq))
                scan.stopped = True
                break
            if rec.seq != seq:
                add(Finding("seq-mismatch", f"expected seq {seq}, record says {rec.seq}", name, seq))
                scan.stopped = True
                break
            if rec.prev != prev:
                add(
                    Finding(
                        "chain-broken",
                        f"previous hash is {rec.prev.hex()[:16]}..., the record before it "
                        f"hashes to {prev.hex()[:16]}...",
                        name,
                        seq,
                    )
                )
                scan.stopped = True
                break
            if rotated_at is not None:
                add(
                    Finding(
                        "rotation-window",
                        f"a record follows the key.rotated record of seq {rotated_at} in the "
                        "same segment: no key but the retired one covers it",
                        name,
                        seq,
                    )
                )
            if rec.ts_ns < last_ts:
                add(Finding("time-backwards", f"time {rec.ts_ns} is before the previous record's {last_ts}", name, seq))
            last_ts = max(last_ts, rec.ts_ns)
            if scan.first_ts is None:
                scan.first_ts = rec.ts_ns
                scan.first_hash = leaf
            etype = rec.type
            types[etype] += 1
            if etype == KEY_ROTATED:
                try:
                    details = rec.event.get("details")
                    new_key = PublicKey.from_json(
                        details["key"] if isinstance(details, dict) else {}, require_key_id=True
                    )
                except (KeyError, TypeError, ValueError) as exc:
                    add(
                        Finding("rotation-malformed", f"key.rotated record has no usable details.key: {exc}", name, seq)
                    )
                else:
                    if pending is not None or (v2 and rotated_at is not None):
                        add(
                            Finding(
                                "rotation-invalid",
                                "a second key.rotated record before any checkpoint"
                                if not v2
                                else "a second key.rotated record in one segment",
                                name,
                                seq,
                            )
                        )
                    pending = new_key
                    scan.rotations.append((seq, new_key))
                    if v2:
                        rotated_at = seq
            elif etype == SUBJECT_ERASED:
                details = rec.event.get("details")
                if isinstance(details, dict) and isinstance(details.get("subject"), str):
                    scan.erased_subjects.update(_erased_by(details))
            if WITHHELD_MARK in body and _withheld(rec.event):
                scan.withheld_records += 1
            if ENCRYPTED_MARK in body:
                subjects: set[str] = set()
                _subjects(rec.event, subjects)
                if subjects:
                    scan.encrypted_records += 1
                    scan.subjects_by_record.append(frozenset(subjects))
            leaves.append(leaf)
            prev = leaf
            seq += 1
            if seq in want_sizes:
                crange.extend(leaves)
                leaves.clear()
                scan.extra_ranges[seq] = tuple(crange.hashes)
        elif kind in (framing.CHECKPOINT, framing.SEAL):
            crange.extend(leaves)
            leaves.clear()
            label = "seal" if kind == framing.SEAL else "checkpoint"
            at = seq
            where = _before(at)
            note: Note | None = None
            try:
                note = parse_note(body)
            except NoteError as exc:
                add(Finding("bad-signature", f"{label} at offset {frame.offset}: malformed note: {exc}", name, where))
            checker = key
            signed = note is not None and signed_by(note, checker)
            if note is not None and not signed:
                names = ", ".join(f"{s.name} (key id {s.key_id.hex()})" for s in note.signatures)
                add(
                    Finding(
                        "bad-signature",
                        f"{label} at offset {frame.offset}: signed by {names}, expected a valid "
                        f"signature by {key.name} (key id {key.key_id.hex()})",
                        name,
                        where,
                    )
                )
            if pending is not None:  # the rotation is covered by this checkpoint of the outgoing key
                if not v2:  # kc-ledger/1: it takes effect after this frame; kc-ledger/2: at the next segment
                    key = pending
                pending = None
            cp = note.checkpoint if note is not None else None
            if cp is not None:
                if cp.size != at:
                    add(
                        Finding(
                            "checkpoint-size",
                            f"{label} says tree size {cp.size}, but {at} records precede it",
                            name,
                            where,
                        )
                    )
                if (kind == framing.SEAL) != (cp.seal is not None):
                    add(Finding("seal-malformed", f"{label} frame kind and seal line disagree", name, where))
                if v2:
                    digest.update(data[digested : frame.offset])
                    digested = frame.offset
                    want = (header.segment, frame.offset, digest.digest())
                    got = (cp.segment.segment, cp.segment.offset, cp.segment.digest) if cp.segment else None
                    if got != want:
                        add(
                            Finding(
                                "segment-digest",
                                f"{label} at offset {frame.offset} signs "
                                + (
                                    f"segment {got[0]}, {got[1]} bytes hashing to {got[2].hex()[:16]}..."
                                    if got
                                    else "no segment line"
                                )
                                + f"; the segment is {want[0]}, its {want[1]} bytes before the frame hash to "
                                f"{want[2].hex()[:16]}...",
                                name,
                                where,
                            )
                        )
                elif cp.segment is not None:
                    add(
                        Finding(
                            "bad-signature",
                            f"{label} at offset {frame.offset}: malformed note: a segment line "
                            "in a kc-ledger/1 segment",
                            name,
                            where,
                        )
                    )
            scan.checkpoints.append(
                CheckpointScan(
                    label,
                    body,
                    cp,
                    tuple(crange.hashes),
                    signed,
                    at,
                    frame.offset,
                    checker.raw if signed else None,
                    checker.name if signed else None,
                )
            )
            if kind == framing.SEAL:
                scan.sealed = True
        else:  # a second header
            add(Finding("header-duplicate", f"offset {frame.offset}: a second segment header", name, seq))
            scan.stopped = True
            break
    crange.extend(leaves)
    scan.records = seq - header.first_seq
    scan.last_seq = seq - 1 if scan.records else None
    scan.last_hash = prev
    scan.last_ts = last_ts if last_ts >= 0 else None
    scan.end_range = tuple(crange.hashes)
    scan.end_key = key
    scan.pending_key = pending
    if scan.damage is None and not scan.stopped:
        covered = scan.checkpoints[-1].at_seq if scan.checkpoints else None
        if covered is None and v2:
            add(
                Finding(
                    "unsigned-tail",
                    f"no checkpoint in the segment: its header and {scan.records} record(s) "
                    "are covered by no signature",
                    name,
                    header.first_seq,
                )
            )
        elif seq > (covered if covered is not None else header.first_seq):
            start = covered if covered is not None else header.first_seq
            add(
                Finding(
                    "unsigned-tail",
                    f"{seq - start} record(s) after the last checkpoint (seq {start}..{seq - 1})"
                    " are covered by no signature: appended by someone without the key, or a crash not yet "
                    "recovered",
                    name,
                    start,
                )
            )
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
    formats: Counter[str] = field(default_factory=Counter)
    limitations: list[str] = field(default_factory=list)
    encrypted_records: int = 0
    erased_records: int = 0
    withheld_records: int = 0
    erased_subjects: int = 0
    external_checkpoints: int = 0
    witnesses: dict[str, Any] | None = None
    findings: list[Finding] = field(default_factory=list)
    mode: str = "full"  # the one procedure of docs/format.md §15
    # For checking further checkpoints later (witnesses): roots kept, and when each key signs.
    roots: dict[int, bytes] = field(default_factory=dict)
    schedule: list[tuple[int, PublicKey]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_json(self) -> dict[str, Any]:
        out = {
            "verdict": "intact" if self.ok else "tampered-or-incomplete",
            "segments": self.segments,
            "records": self.records,
            "bytes": self.total_bytes,
            "checkpoints": self.checkpoints,
            "external_checkpoints": self.external_checkpoints,
            "tree_size": self.size,
            "root": self.root.hex(),
            "first_time_ns": self.first_ts,
            "last_time_ns": self.last_ts,
            "keys": self.keys,
            "event_types": dict(sorted(self.types.items())),
            "formats": dict(sorted(self.formats.items())),
            "limitations": self.limitations,
            "encrypted_records": self.encrypted_records,
            "erased_records": self.erased_records,
            "withheld_records": self.withheld_records,
            "erased_subjects": self.erased_subjects,
            "mode": self.mode,
            "findings": [f.to_json() for f in self.findings],
        }
        if self.witnesses is not None:
            out["witnesses"] = self.witnesses
        return out


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


def verify_scans(scans: Iterable[SegmentScan], trust: TrustAnchor, external: Sequence[bytes] = ()) -> Report:
    """Phase 2: link the segment scans into one verdict (§15.2, §15.3)."""
    report = Report()
    add = report.findings.append
    ordered = sorted(scans, key=lambda s: (s.number if s.number is not None else -1, s.name))
    key = trust.root_key
    report.keys.append(key.name)
    schedule: list[tuple[int, PublicKey]] = [(0, key)]  # (first tree size it signs, key)
    prefix: CompactRange | None = CompactRange.empty(0)
    prev_hash = genesis_hash(trust.origin)
    next_seq = 0
    expected_segment = 0
    last_time = -1
    roots: dict[int, bytes] = {0: CompactRange.empty(0).root()}
    tree_ok = True
    last_record_ts = -1
    last_version = 0
    erased: set[str] = set()
    subject_sets: list[frozenset[str]] = []
    pending_ranges: dict[int, tuple[int, tuple[bytes, ...], CompactRange]] = {}
    for i, scan in enumerate(ordered):
        report.segments += 1
        report.total_bytes += scan.size_bytes
        report.findings.extend(scan.findings)
        report.types.update(scan.types)
        report.encrypted_records += scan.encrypted_records
        report.withheld_records += scan.withheld_records
        erased |= scan.erased_subjects
        subject_sets.extend(scan.subjects_by_record)
        h = scan.header
        if scan.number is None:
            add(Finding("segment-name", "file name is not <8 digits>.seg", scan.name))
            continue
        if scan.number != expected_segment:
            missing = (
                ", ".join(segment_name(n) for n in range(expected_segment, scan.number))
                if scan.number > expected_segment
                else ""
            )
            add(
                Finding(
                    "segment-missing" if missing else "segment-order",
                    f"expected segment {segment_name(expected_segment)} next, found {scan.name}"
                    + (f"; missing: {missing}" if missing else ""),
                    scan.name,
                )
            )
        expected_segment = scan.number + 1
        if h is None:
            continue
        report.formats[h.format] += 1
        if h.version < last_version:
            add(
                Finding(
                    "format-downgrade",
                    f"a {h.format} segment follows a kc-ledger/{last_version} segment",
                    scan.name,
                    h.first_seq,
                )
            )
        last_version = max(last_version, h.version)
        if h.origin != trust.origin:
            add(
                Finding(
                    "origin-mismatch", f"segment belongs to origin {h.origin!r}, expected {trust.origin!r}", scan.name
                )
            )
            continue
        if h.first_seq != next_seq:
            add(Finding("seq-gap", f"segment starts at seq {h.first_seq}, expected {next_seq}", scan.name, h.first_seq))
            # Records are missing (or extra): roots from here on cannot be checked against the records.
            # Carry on from the header's own claims so the rest of the ledger is still examined.
            tree_ok = False
            prefix = CompactRange(0, h.first_seq, h.range) if _range_fits(h.first_seq, h.range) else None
            next_seq = h.first_seq
        else:
            if h.prev != prev_hash:
                add(
                    Finding(
                        "chain-broken",
                        f"previous hash is {h.prev.hex()[:16]}..., the record before it hashes "
                        f"to {prev_hash.hex()[:16]}...",
                        scan.name,
                        h.first_seq,
                    )
                )
            if prefix is not None and tuple(h.range) != tuple(prefix.hashes):
                add(
                    Finding(
                        "range-mismatch",
                        "header's Merkle range does not match the records before it",
                        scan.name,
                        h.first_seq,
                    )
                )
        if h.key != key:
            add(
                Finding(
                    "untrusted-key",
                    f"segment names key {h.key.name} ({h.key.key_id.hex()}), but the key in force "
                    f"is {key.name} ({key.key_id.hex()})",
                    scan.name,
                    h.first_seq,
                )
            )
        begin = h.first_seq
        for cps in scan.checkpoints:
            report.checkpoints += 1
            cp = cps.checkpoint
            if cp is None:
                continue
            where = _before(cps.at_seq)
            if cp.origin != trust.origin:
                add(
                    Finding(
                        "origin-mismatch", f"{cps.kind} of size {cp.size} names origin {cp.origin!r}", scan.name, where
                    )
                )
            # A checkpoint of the wrong size is `checkpoint-size` (15.1) and its root is not compared.
            if prefix is not None and cp.size == cps.at_seq:
                root = _root_at(prefix, cps.subrange, begin, cp.size)
                roots[cp.size] = root
                if root != cp.root:
                    add(
                        Finding(
                            "root-mismatch",
                            f"{cps.kind} of size {cp.size} has root {cp.root.hex()[:16]}..., "
                            f"the records hash to {root.hex()[:16]}...",
                            scan.name,
                            where,
                        )
                    )
            if cp.time_ns < last_time:
                add(
                    Finding(
                        "time-backwards",
                        f"{cps.kind} time {cp.time_ns} is before the previous checkpoint's {last_time}",
                        scan.name,
                        where,
                    )
                )
            last_time = max(last_time, cp.time_ns)
            if cp.seal is not None:
                s = cp.seal
                last = h.first_seq + scan.records - 1
                if (
                    (s.segment, s.first_seq, s.last_seq) != (scan.number, h.first_seq, last)
                    or s.last_hash != scan.last_hash
                    or s.first_hash != scan.first_hash
                ):
                    add(
                        Finding(
                            "seal-mismatch",
                            f"seal says segment {s.segment} seq {s.first_seq}..{s.last_seq} "
                            f"ending in {s.last_hash.hex()[:16]}..., the segment holds {scan.number} seq "
                            f"{h.first_seq}..{last} ending in {(scan.last_hash or b'').hex()[:16]}...",
                            scan.name,
                            where,
                        )
                    )
                if s.policy_digest != h.policy:
                    add(
                        Finding(
                            "policy-mismatch",
                            f"seal's policy digest {s.policy_digest[:16]}... differs from the "
                            f"header's {h.policy[:16]}...",
                            scan.name,
                            where,
                        )
                    )
        # The scan checked every signature with the key the header names (following in-segment
        # rotations in kc-ledger/1); here the header's key must be the one the key chain trusts.
        for seq, new_key in scan.rotations:
            if new_key.name != key_name(trust.origin, key.epoch + 1):
                add(
                    Finding(
                        "rotation-invalid",
                        f"key.rotated introduces {new_key.name}, expected {key_name(trust.origin, key.epoch + 1)}",
                        scan.name,
                        seq,
                    )
                )
            key = new_key
            report.keys.append(key.name)
            schedule.append((seq + 1, key))
        if scan.pending_key is not None and i != len(ordered) - 1:
            add(
                Finding(
                    "rotation-unsigned",
                    f"key.rotated to {scan.pending_key.name} is not followed by a "
                    "checkpoint signed by the outgoing key",
                    scan.name,
                    scan.last_seq,
                )
            )
        if not scan.sealed and i != len(ordered) - 1:
            add(Finding("not-sealed", f"segment is not sealed but {ordered[i + 1].name} follows it", scan.name))
        if scan.first_ts is not None and scan.first_ts < last_record_ts:
            add(
                Finding(
                    "time-backwards",
                    f"first record time {scan.first_ts} is before the previous segment's last {last_record_ts}",
                    scan.name,
                    h.first_seq,
                )
            )
        if scan.last_ts is not None:
            last_record_ts = scan.last_ts
        if prefix is not None:
            for size, sub in scan.extra_ranges.items():
                pending_ranges[size] = (begin, sub, prefix.copy())
            if scan.damage is None and not scan.stopped:
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
    if report.formats.get("kc-ledger/1"):
        report.limitations.extend(V1_LIMITATIONS)
    report.erased_subjects = len(erased)
    report.erased_records = sum(1 for subjects in subject_sets if subjects & erased)
    report.size = next_seq
    if prefix is not None and tree_ok:
        report.root = prefix.root()
        roots[next_seq] = report.root
    for begin_size, (begin, sub, pre) in pending_ranges.items():
        roots.setdefault(begin_size, _root_at(pre, sub, begin, begin_size))
    report.roots, report.schedule = roots, schedule
    for note in external:
        check_external(note, trust, report, roots, schedule)
    return report


def valid_keys(schedule: Sequence[tuple[int, PublicKey]], size: int) -> list[PublicKey]:
    """The keys valid for a checkpoint of tree size `size` (docs/format.md §12)."""
    return [
        k
        for i, (start, k) in enumerate(schedule)
        if start <= size and (i + 1 == len(schedule) or size <= schedule[i + 1][0])
    ]


def check_external(
    note: bytes,
    trust: TrustAnchor,
    report: Report,
    roots: dict[int, bytes],
    schedule: Sequence[tuple[int, PublicKey]],
    source: str = "external checkpoint",
) -> None:
    """§15.3: one checkpoint held outside the ledger against the ledger's roots."""
    report.external_checkpoints += 1
    add = report.findings.append
    try:
        parsed = parse_note(note)
    except NoteError as exc:
        add(Finding("external-malformed", f"{source} does not parse: {exc}"))
        return
    cp = parsed.checkpoint
    if cp.origin != trust.origin:
        add(Finding("external-origin", f"{source} is for origin {cp.origin!r}, expected {trust.origin!r}"))
        return
    signers = ", ".join(s.name for s in parsed.ed25519)
    newest = schedule[-1][1]
    if cp.size > report.size:
        # The size is checked first: a cut across a rotation also removes the key.rotated record
        # that introduced the key signing the external checkpoint.
        later = [s for s in parsed.ed25519 if _later_epoch(s.name, trust.origin, newest.epoch)]
        if signed_by(parsed, newest) or later:
            what = f"an {source}" if source.startswith("external") else source
            add(
                Finding(
                    "tail-cut",
                    f"{what} proves {cp.size} records, the ledger holds only {report.size}: the "
                    "tail was cut or the ledger rolled back"
                    + (
                        f" (signed by {later[0].name}, a key the cut ledger no longer introduces)"
                        if later and not signed_by(parsed, newest)
                        else ""
                    ),
                    seq=report.size,
                )
            )
        else:
            add(
                Finding(
                    "external-signature",
                    f"{source} of size {cp.size} is beyond the ledger's end and not signed "
                    f"by its newest key {newest.name} or a later epoch's; signed by {signers}",
                )
            )
        return
    valid = valid_keys(schedule, cp.size)
    if not any(signed_by(parsed, k) for k in valid):
        add(
            Finding(
                "external-signature",
                f"{source} of size {cp.size} is not signed by a key in force at that "
                f"size ({', '.join(k.name for k in valid)}); signed by {signers}",
            )
        )
        return
    root = roots.get(cp.size)
    if root is None:
        add(Finding("external-unchecked", f"no Merkle range kept for size {cp.size}; pass it as want_sizes"))
    elif root != cp.root:
        add(
            Finding(
                "split-view",
                f"{source} of size {cp.size} has root {cp.root.hex()[:16]}..., the ledger's "
                f"records give {root.hex()[:16]}...: the ledger was rewritten or forked",
                seq=cp.size - 1,
            )
        )


def _later_epoch(name: str, origin: str, epoch: int) -> bool:
    base, sep, tail = name.rpartition("#")
    return bool(sep) and base == origin and tail.isascii() and tail.isdigit() and int(tail) > epoch


def external_sizes(notes: Sequence[bytes]) -> frozenset[int]:
    """Tree sizes for which scan_segment must keep a Merkle range."""
    sizes = set()
    for note in notes:
        try:
            sizes.add(parse_note(note).checkpoint.size)
        except NoteError:
            continue
    return frozenset(sizes)
