"""Verify a ledger held in a directory: the I/O around the pure verifier.

A source is a directory that has a `segments/` folder (a sidecar's data
directory or a pulled bundle), or a folder of `*.seg` files. Segments are
scanned in parallel, one process per core, each reading its own file; the
results are linked in order by `sidecar.core.verify.verify_scans`.

`UnusableInput` (exit code 2) means there is nothing to verify: the path does
not exist, holds no segments, or the trust file cannot be read. Damage inside
segments is never an exception: it is a finding (exit code 1).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from sidecar.core.segment import SEGMENT_DIR, segment_number
from sidecar.core.trust import TrustAnchor
from sidecar.core.verify import Finding, Report, SegmentScan, external_sizes, scan_segment, verify_scans
from sidecar.errors import SidecarError


class UnusableInput(SidecarError):
    """There is nothing that can be verified at the given source."""


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


def verify_directory(source: Path, trust: TrustAnchor, *, external: Sequence[bytes] = (),
                     workers: int | None = None, thorough: bool = True,
                     progress: Callable[[int, int], None] | None = None) -> Report:
    """Verify every segment under `source` against `trust` and any external checkpoints.

    The procedure is always the full one of docs/format.md §15 (`thorough` is accepted for
    older callers and changes nothing).
    """
    del thorough
    files = segment_files(source)
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
