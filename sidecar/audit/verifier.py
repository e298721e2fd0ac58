"""Verify a ledger held in a directory: the I/O around the pure verifier.

A source is a directory that has a `segments/` folder (a sidecar's data
directory or a pulled bundle), or a folder of `*.seg` files. Segments are
scanned in parallel, one process per core, each reading its own file; the
results are linked in order by `sidecar.core.verify.verify_scans`.

`UnusableInput` (exit code 2) means there is nothing to verify: the path does
not exist, holds no segments, or the trust file cannot be read. Damage inside
segments is never an exception: it is a finding (exit code 1).

A cut tail or a rollback is only visible against a newer signed checkpoint
held elsewhere, so every verification uses the newest one it can see: the
newest note in a bundle's `checkpoints/` (what the store held at pull time),
those passed in (`--checkpoint`, the store's newest), and an auditor's
last-seen pin (`LastSeen`: a checkpoint file that a clean run moves forward,
trust on first use, so a later run finds a ledger or store shorter than what
was once verified).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from sidecar.core import framing
from sidecar.core.note import Checkpoint, NoteError, split_note
from sidecar.core.segment import SEGMENT_DIR, segment_number
from sidecar.core.trust import TrustAnchor
from sidecar.core.verify import Finding, Report, SegmentScan, external_sizes, scan_segment, verify_scans
from sidecar.durable import write_atomic
from sidecar.errors import UnusableInput as UnusableInput  # re-exported: readers and the CLI import it here


def segment_files(source: Path) -> list[Path]:
    if not source.exists():
        raise UnusableInput(f"{source} does not exist")
    folder = source / SEGMENT_DIR if (source / SEGMENT_DIR).is_dir() else source
    if not folder.is_dir():
        raise UnusableInput(f"{source} is not a directory")
    files = sorted(p for p in folder.iterdir() if p.suffix == ".seg")
    if not files:
        raise UnusableInput(f"no segment files (*.seg) in {folder}")
    return files


def load_trust(path: Path) -> TrustAnchor:
    try:
        return TrustAnchor.decode(path.read_bytes())
    except OSError as exc:
        raise UnusableInput(f"cannot read trust file {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise UnusableInput(f"{path}: {exc}") from exc


def _scan_file(args: tuple[str, frozenset[int]]) -> SegmentScan:
    path = Path(args[0])
    try:
        data = path.read_bytes()
    except OSError as exc:
        scan = SegmentScan(name=path.name, number=segment_number(path.name), size_bytes=0)
        scan.findings.append(Finding("segment-unreadable", f"cannot read: {exc.strerror}", path.name))
        return scan
    return scan_segment(path.name, data, args[1])


def verify_directory(
    source: Path,
    trust: TrustAnchor,
    *,
    external: Sequence[bytes] = (),
    workers: int | None = None,
    thorough: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> Report:
    """Verify every segment under `source` against `trust` and any external checkpoints.

    The procedure is always the full one of docs/format.md §15 (`thorough` is accepted for
    older callers and changes nothing). A bundle's newest checkpoint (`bundle_checkpoint`) joins
    the external ones, so a bundle whose segments were cut behind its own checkpoints is `tail-cut`.
    """
    del thorough
    files = segment_files(source)
    external = _unique([*external, *([note] if (note := bundle_checkpoint(source)) else [])])
    sizes = external_sizes(external)
    jobs = [(str(p), sizes) for p in files]
    workers = workers or os.cpu_count() or 1
    scans: list[SegmentScan] = []
    if workers > 1 and len(files) > 1:
        with ProcessPoolExecutor(min(workers, len(files))) as pool:
            for scan in pool.map(_scan_file, jobs, chunksize=1):
                scans.append(scan)
                if progress:
                    progress(len(scans), len(files))
    else:
        for job in jobs:
            scans.append(_scan_file(job))
            if progress:
                progress(len(scans), len(files))
    return verify_scans(scans, trust, external)


_NOTE_NAME = re.compile(r"(\d{12})-(\d{20})\.note")


def _unique(notes: Sequence[bytes]) -> list[bytes]:
    return list(dict.fromkeys(notes))


def read_checkpoints(paths: Sequence[Path]) -> list[bytes]:
    """The notes in checkpoint files an auditor names (`--checkpoint`); an unreadable one is unusable input."""
    notes = []
    for path in paths:
        try:
            notes.append(path.read_bytes())
        except OSError as exc:
            raise UnusableInput(f"cannot read checkpoint {path}: {exc.strerror}") from exc
    return notes


def bundle_checkpoint(source: Path) -> bytes | None:
    """The newest checkpoint in a pulled bundle's `checkpoints/` folder (by the size and time its name
    states; the note itself is checked by the verifier like any external one), or None."""
    folder = source / "checkpoints"
    try:
        names = [(m.group(1), m.group(2), p) for p in folder.iterdir() if (m := _NOTE_NAME.fullmatch(p.name))]
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise UnusableInput(f"cannot read {folder}: {exc.strerror}") from exc
    if not names:
        return None
    newest = max(names)[2]
    try:
        return newest.read_bytes()
    except OSError as exc:
        raise UnusableInput(f"cannot read checkpoint {newest}: {exc.strerror}") from exc


def newest_note(source: Path) -> bytes | None:
    """The last checkpoint or seal note in the ledger's segment files (the newest it signs), or None."""
    for path in reversed(segment_files(source)):
        latest = None
        for frame in framing.iter_frames(path.read_bytes()):
            if isinstance(frame, framing.FrameDamage):
                break
            if frame.kind in (framing.CHECKPOINT, framing.SEAL):
                latest = frame.body
        if latest is not None:
            return latest
    return None


def note_size(note: bytes) -> int | None:
    """The tree size a checkpoint note states, or None if it does not parse."""
    try:
        return Checkpoint.parse_body(split_note(note)[0]).size
    except NoteError:
        return None


class LastSeen:
    """An auditor's pin: the newest checkpoint a clean verification saw, in one file (trust on first use).

    `note()` is passed to the verifier as an external checkpoint; after a clean run `advance()`
    replaces the file (atomically) with the verified ledger's newest checkpoint if that is larger,
    so the pin only ever moves forward and a later, shorter ledger or store is `tail-cut`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def note(self) -> bytes | None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None  # first use: nothing pinned yet
        except OSError as exc:
            raise UnusableInput(f"cannot read the last-seen checkpoint {self.path}: {exc.strerror}") from exc
        if note_size(data) is None:
            raise UnusableInput(f"{self.path} is not a signed checkpoint (a last-seen file holds one note)")
        return data

    def advance(self, verified: Path) -> tuple[int | None, bool]:
        """Pin the newest checkpoint of the (clean) ledger at verified; (pinned size, whether it moved)."""
        pinned = self.note()
        old = note_size(pinned) if pinned is not None else None
        new = newest_note(verified)
        size = note_size(new) if new is not None else None
        if new is None or size is None or (old is not None and size <= old):
            return old, False
        try:
            write_atomic(self.path, new)
        except OSError as exc:
            raise UnusableInput(f"cannot write the last-seen checkpoint {self.path}: {exc.strerror}") from exc
        return size, True
