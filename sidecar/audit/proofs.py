"""Building proof bundles from a ledger directory (the I/O around sidecar.core.proof)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sidecar.audit.verifier import segment_files
from sidecar.core import framing
from sidecar.core.note import checkpoint_of
from sidecar.core.proof import consistency_bundle, inclusion_bundle
from sidecar.core.record import record_hash, record_object
from sidecar.errors import ConfigError


def _read(source: Path) -> tuple[list[bytes], dict[int, bytes], list[int], list[bytes]]:
    """(leaf hashes, record bodies by seq, seqs of key.rotated records, checkpoint notes) of a ledger."""
    leaves: list[bytes] = []
    bodies: dict[int, bytes] = {}
    rotations: list[int] = []
    notes: list[bytes] = []
    for path in segment_files(source):
        for frame in framing.iter_frames(path.read_bytes()):
            if isinstance(frame, framing.FrameDamage):
                break
            if frame.kind == framing.RECORD:
                seq = len(leaves)
                leaves.append(record_hash(frame.body))
                bodies[seq] = frame.body
                if b'"key.rotated"' in frame.body and record_object(frame.body)["event"].get("type") == "key.rotated":
                    rotations.append(seq)
            elif frame.kind in (framing.CHECKPOINT, framing.SEAL):
                notes.append(frame.body)
    return leaves, bodies, rotations, notes


def _size(note: bytes) -> int:
    return checkpoint_of(note).size


def prove_inclusion(source: Path, seq: int) -> dict[str, Any]:
    leaves, bodies, rotations, notes = _read(source)
    if not 0 <= seq < len(leaves):
        raise ConfigError(f"the ledger has records 0..{len(leaves) - 1}; there is no seq {seq}")
    note = notes[-1]
    return inclusion_bundle(leaves, {i: bodies[i] for i in [seq, *rotations]}, seq, note, rotations)


def prove_consistency(source: Path, old_size: int, new_size: int | None = None) -> dict[str, Any]:
    leaves, bodies, rotations, notes = _read(source)
    by_size = {_size(n): n for n in notes}
    if old_size not in by_size:
        raise ConfigError(
            f"no checkpoint of size {old_size}; sizes with checkpoints include "
            f"{sorted(by_size)[:5]}...{sorted(by_size)[-5:]}"
        )
    new_note = by_size[new_size] if new_size is not None and new_size in by_size else notes[-1]
    if new_size is not None and new_size not in by_size:
        raise ConfigError(f"no checkpoint of size {new_size}")
    return consistency_bundle(leaves, {i: bodies[i] for i in rotations}, by_size[old_size], new_note, rotations)
