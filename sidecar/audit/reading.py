"""Verified reads: every record a timeline, export, report or drift check shows was verified first.

Two ways to read, both refusing (`ReadRefused`, exit code 1, with the findings) when the
bytes do not verify against the pinned trust file:

* `read_verified()` (full scan): the whole ledger is verified through `verify_source()` (the
  one narrow seam to the reference verifier, `sidecar.audit.verifier.verify_directory`), then
  the records are read again and their Merkle root recomputed as they stream past; records
  beyond the verified tree size (a live ledger keeps growing) are not shown, and bytes that
  changed between the check and the read are a finding, never silently shown.
* `lookup_verified()` (filtered, via the SQLite index): the index names the matching
  records' segment and offset; each record is then checked against a signed checkpoint of its
  own segment (the segment is scanned with the reference `scan_segment` in its quick mode, which
  hashes every record and checks every checkpoint's signature; its Merkle range is
  joined to the prefix range the header carries and must give the checkpoint's root), and that
  checkpoint's key must descend from the trust file's root key through `key.rotated` records
  that are themselves checked the same way. Only segments holding a hit or a rotation are
  read, so a lookup on a large ledger reads a few segments, not all of them. What the index
  cannot prove is completeness (a damaged index can leave a record out); the full scan can.

`read_unverified()` is for forensics on a damaged ledger: it reads every whole record and marks
each one unverified.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidecar.audit.verifier import segment_files, verify_directory
from sidecar.core import framing
from sidecar.core.canonical import parse
from sidecar.core.keys import PublicKey, key_name
from sidecar.core.merkle import CompactRange
from sidecar.core.record import record_hash
from sidecar.core.segment import SegmentHeader, segment_number
from sidecar.core.trust import TrustAnchor
from sidecar.core.verify import Finding, Report, scan_segment
from sidecar.errors import SidecarError

Keep = Callable[[dict[str, Any]], bool]

# Findings a live writer can cause in its own open segment while we read it (a batch half written).
_LIVE_TAIL = frozenset({"frame-damaged", "unsigned-tail"})


class ReadRefused(SidecarError):
    """The ledger did not verify; nothing is shown as if it did. Carries the findings."""

    exit_code = 1  # as for IntegrityError: what was checked does not verify

    def __init__(self, findings: list[Finding], report: Report | None = None) -> None:
        super().__init__(
            f"the ledger did not verify ({len(findings)} findings); nothing was read. "
            "Run `sidecar verify` for details, or pass --unverified for forensics"
        )
        self.findings = findings
        self.report = report


def verify_source(
    source: Path, trust: TrustAnchor, *, workers: int | None = None, external: Sequence[bytes] = ()
) -> Report:
    """The one call into the reference verifier (kept narrow so the format can evolve behind it)."""
    return verify_directory(source, trust, workers=workers, external=external)


def _live_race(report: Report, source: Path) -> bool:
    last = segment_files(source)[-1].name
    return bool(report.findings) and all(f.code in _LIVE_TAIL and f.segment == last for f in report.findings)


def verify_settled(
    source: Path, trust: TrustAnchor, *, attempts: int = 4, workers: int | None = None, external: Sequence[bytes] = ()
) -> Report:
    """Verify; when the only findings are a half-written batch at the live tail, look again.

    A running writer appends a batch and its checkpoint with one write; a reader can catch it
    half way. A real cut or an unsigned append stays put and is reported after the last try.
    """
    report = verify_source(source, trust, workers=workers, external=external)
    for _ in range(attempts - 1):
        if not _live_race(report, source):
            break
        time.sleep(0.25)
        report = verify_source(source, trust, workers=workers, external=external)
    return report


@dataclass
class Reading:
    """What a verified read covered: the verifier's report and how many records were shown."""

    report: Report | None
    verified: bool
    shown: int = 0


def _frames_of(path: Path) -> Iterator[tuple[int, bytes]]:
    """(kind, body) of every whole record, checkpoint and seal frame."""
    for frame in framing.iter_frames(path.read_bytes()):
        if isinstance(frame, framing.FrameDamage):
            return
        if frame.kind != framing.HEADER:
            yield frame.kind, frame.body


def _records_of(path: Path) -> Iterator[tuple[int, bytes]]:
    for frame in framing.iter_frames(path.read_bytes()):
        if isinstance(frame, framing.FrameDamage):
            return
        if frame.kind == framing.RECORD:
            yield frame.offset, frame.body


def read_verified(
    source: Path,
    trust: TrustAnchor,
    keep: Keep | None = None,
    *,
    reading: Reading | None = None,
    workers: int | None = None,
    external: Sequence[bytes] = (),
    on_note: Callable[[bytes], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Records of a verified ledger, in order; raises ReadRefused before yielding anything if it fails.

    The records are hashed again as they are read: if the Merkle root of what was read differs
    from the verified one (the files changed in between), ReadRefused is raised at the end.
    """
    report = verify_settled(source, trust, workers=workers, external=external)
    if not report.ok:
        raise ReadRefused(report.findings, report)
    if reading is not None:
        reading.report, reading.verified = report, True
    size = report.size
    crange = CompactRange.empty(0)
    seq = 0
    for path in segment_files(source):
        for kind, body in _frames_of(path):
            if kind != framing.RECORD:
                if on_note is not None and seq <= size:
                    on_note(body)
                continue
            if seq >= size:
                break
            crange.append(record_hash(body))
            seq += 1
            rec = parse(body)
            if keep is None or keep(rec):
                if reading is not None:
                    reading.shown += 1
                yield rec
    if seq < size or crange.root() != report.root:
        raise ReadRefused(
            [
                Finding(
                    "changed-while-reading",
                    f"the records read again ({seq}) do not give the "
                    f"verified root of size {size}: the ledger changed during the read",
                )
            ],
            report,
        )


def read_unverified(source: Path, keep: Keep | None = None) -> Iterator[dict[str, Any]]:
    """Every whole record, without any check (forensics); the caller marks each as unverified."""
    for path in segment_files(source):
        for _offset, body in _records_of(path):
            try:
                rec = parse(body)
            except ValueError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("event"), dict) and (keep is None or keep(rec)):
                yield rec


# --------------------------------------------------------------------------------------- index lookups
@dataclass(frozen=True, slots=True)
class Checked:
    """A record and the signed checkpoint of its own segment that was shown to include it."""

    record: dict[str, Any]
    checkpoint_size: int
    checkpoint_root: str
    key: str


def _header(path: Path) -> SegmentHeader | None:
    with path.open("rb") as f:
        head = f.read(framing.OVERHEAD)
        if len(head) < framing.OVERHEAD:
            return None
        kind, length = framing._HEAD.unpack_from(head, 0)
        if kind != framing.HEADER or length > framing.MAX_FRAME:
            return None
        f.seek(0)
        first = next(iter(framing.iter_frames(f.read(framing.OVERHEAD + length))), None)
    if not isinstance(first, framing.Frame):
        return None
    try:
        return SegmentHeader.decode(first.body)
    except ValueError:
        return None


class _SegmentProver:
    """Scans segments on demand and proves records against their checkpoints (see module doc)."""

    def __init__(self, source: Path, trust: TrustAnchor) -> None:
        self.trust = trust
        self.files = {n: p for p in segment_files(source) if (n := segment_number(p.name)) is not None}
        self.headers: dict[int, SegmentHeader] = {}
        self.findings: list[Finding] = []
        self._scans: dict[int, tuple[Any, bytes]] = {}
        self._trusted: dict[int, bool] = {}
        self._checked: dict[int, list[tuple[int, str, str]] | None] = {}

    def header(self, n: int) -> SegmentHeader | None:
        if n not in self.headers:
            h = _header(self.files[n]) if n in self.files else None
            if h is None:
                self.findings.append(Finding("header-missing", "segment header unreadable", f"{n:08d}.seg"))
                return None
            self.headers[n] = h
        return self.headers[n]

    def scan(self, n: int) -> Any:
        if n not in self._scans:
            data = self.files[n].read_bytes()
            scan = scan_segment(self.files[n].name, data, thorough=False)
            # The open segment of a live ledger may end in a half-written batch: only what a
            # checkpoint covers is used below, so that alone is not a finding here.
            serious = [f for f in scan.findings if not (f.code in _LIVE_TAIL and n == max(self.files))]
            self.findings.extend(serious)
            self._scans[n] = (scan, data)
        return self._scans[n][0]

    def key_trusted(self, n: int) -> bool:
        """Whether the key segment n's header names descends from the trust file's root key."""
        if n in self._trusted:
            return self._trusted[n]
        ok = self._key_trusted(n)
        self._trusted[n] = ok
        return ok

    def _key_trusted(self, n: int) -> bool:
        h = self.header(n)
        if h is None or h.origin != self.trust.origin:
            if h is not None:
                self.findings.append(
                    Finding("origin-mismatch", f"segment belongs to origin {h.origin!r}", f"{n:08d}.seg")
                )
            return False
        if h.key.epoch == 0:
            if h.key != self.trust.root_key:
                self.findings.append(
                    Finding(
                        "untrusted-key",
                        f"segment names key {h.key.name}, not the trust file's root key",
                        f"{n:08d}.seg",
                        h.first_seq,
                    )
                )
                return False
            return True
        # Find the segment whose records introduced this key: the newest earlier segment that
        # starts under an older key is where a key.rotated record handed over to it.
        for m in sorted((m for m in self.files if m < n), reverse=True):
            hm = self.header(m)
            if hm is None:
                return False
            if hm.key == h.key:
                continue
            if not self.key_trusted(m):
                return False
            scan = self.scan(m)
            if self._segment_ok(scan) and self._introduces(hm.key, scan, h.key):
                return True
            self.findings.append(
                Finding(
                    "untrusted-key", f"no checked key.rotated record leads to {h.key.name}", f"{n:08d}.seg", h.first_seq
                )
            )
            return False
        self.findings.append(
            Finding("untrusted-key", f"no earlier segment introduces {h.key.name}", f"{n:08d}.seg", h.first_seq)
        )
        return False

    def _introduces(self, start: PublicKey, scan: Any, target: PublicKey) -> bool:
        """Whether the segment's checked key.rotated records lead from `start` to `target`."""
        key = start
        for seq, new in scan.rotations:
            if new.name != key_name(self.trust.origin, key.epoch + 1):
                self.findings.append(
                    Finding(
                        "rotation-invalid",
                        f"key.rotated introduces {new.name}, expected {key_name(self.trust.origin, key.epoch + 1)}",
                        scan.name,
                        seq,
                    )
                )
                return False
            key = new
        return key == target

    def _segment_ok(self, scan: Any) -> bool:
        return not any(f.segment == scan.name for f in self.findings)

    def checked_checkpoints(self, n: int) -> list[tuple[int, str, str]] | None:
        """(size, root hex, key name) of every signed checkpoint of segment n, each root recomputed.

        None when the segment, its key or any of its checkpoints fails (the findings say why).
        """
        if n in self._checked:
            return self._checked[n]
        h = self.header(n)
        out: list[tuple[int, str, str]] | None = None
        if h is not None and self.key_trusted(n):
            scan = self.scan(n)
            if self._segment_ok(scan):
                out = []
                prefix = CompactRange(0, h.first_seq, h.range) if _fits(h.first_seq, h.range) else None
                for cps in scan.checkpoints:
                    cp = cps.checkpoint
                    if cp is None or cps.signer is None:
                        continue
                    rng = prefix.copy() if prefix is not None else None
                    if rng is not None:
                        rng.merge(CompactRange(h.first_seq, cp.size, cps.subrange))
                    if rng is None or rng.root() != cp.root:
                        self.findings.append(
                            Finding(
                                "root-mismatch",
                                f"checkpoint of size {cp.size} does not match "
                                "the records and the header's prefix range",
                                scan.name,
                                cp.size - 1,
                            )
                        )
                        out = None
                        break
                    out.append((cp.size, cp.root.hex(), cps.signer_name or ""))
        self._checked[n] = out
        return out

    def prove(self, n: int, offset: int, seq: int) -> Checked | None:
        """The record at `offset` of segment n, checked against the first checkpoint after it."""
        cps = self.checked_checkpoints(n)
        if cps is None:
            return None
        scan, data = self._scans[n]
        frame = next(iter(framing.iter_frames(memoryview(data)[offset:])), None)
        if not isinstance(frame, framing.Frame) or frame.kind != framing.RECORD:
            self.findings.append(
                Finding(
                    "index-mismatch", f"the index points at offset {offset}, where no record starts", scan.name, seq
                )
            )
            return None
        rec = parse(bytes(frame.body))
        if rec.get("seq") != seq:
            self.findings.append(
                Finding(
                    "index-mismatch", f"the index says seq {seq}, the record there is {rec.get('seq')}", scan.name, seq
                )
            )
            return None
        for size, root, key in cps:
            if size > seq:
                return Checked(rec, size, root, key)
        self.findings.append(Finding("unsigned-tail", "no signed checkpoint covers this record yet", scan.name, seq))
        return None


SegmentProver = _SegmentProver  # public name: the drift monitor's peer follower checks segments the same way


def _fits(size: int, hashes: tuple[bytes, ...]) -> bool:
    try:
        CompactRange(0, size, hashes)
    except ValueError:
        return False
    return True


def _index_rows(index: Path, actor: str | None, target: str | None) -> list[tuple[int, int, int]]:
    where, args = [], []
    if actor:
        where.append("(actor_id = ? OR actor_name = ? OR actor_client = ?)")
        args += [actor, actor, actor]
    if target:
        where.append("(target_id = ? OR target_name = ?)")
        args += [target, target]
    sql = (
        "SELECT seq, segment, offset FROM records"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY seq"
    )
    db = sqlite3.connect(f"file:{index}?mode=ro", uri=True)
    try:
        return [(int(a), int(b), int(c)) for a, b, c in db.execute(sql, args)]
    finally:
        db.close()


def has_index(source: Path) -> bool:
    """Whether `source` has a lookup index a reader may use: present, and not marked stale (it has holes)."""
    path = source / "index.sqlite"
    if not path.is_file():
        return False
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return db.execute("SELECT 1 FROM meta WHERE key = 'stale'").fetchone() is None
        finally:
            db.close()
    except sqlite3.Error:  # unreadable or another schema: scan the segments instead
        return False


def lookup_verified(
    source: Path, trust: TrustAnchor, keep: Keep, *, actor: str | None, target: str | None
) -> Iterator[Checked]:
    """Records the index names for an actor or target, each checked against a signed checkpoint.

    Raises ReadRefused (after the records already checked) when any named record fails.
    """
    prover = _SegmentProver(source, trust)
    for seq, segment, offset in _index_rows(source / "index.sqlite", actor, target):
        checked = prover.prove(segment, offset, seq)
        if checked is None:
            raise ReadRefused(prover.findings or [Finding("unverifiable", "record could not be checked", seq=seq)])
        if keep(checked.record):
            yield checked
