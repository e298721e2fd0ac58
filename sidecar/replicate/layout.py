"""Where ledger bytes live in a remote store. [pure]

    segments/<n:08d>.seg                  a sealed segment, whole (never changes)
    tail/<n:08d>/<offset:012d>.chunk      bytes [offset, offset+len) of segment n while it is open
    checkpoints/<size:012d>-<time:020d>.note
                                          the newest signed checkpoint at each replication step
    snapshots/<sha256 hex>.json           a drift-monitor state snapshot, named by its digest (the
                                          `state.snapshot` record in the ledger carries the digest)

Every object is written once. Tail chunks of one segment are contiguous from
offset 0; once the segment is sealed its whole file is uploaded and the chunks
are only history. A reader rebuilds an open segment by concatenating its chunks
in offset order and checks they leave no gap or overlap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SEG = re.compile(r"^segments/(\d{8})\.seg$")
_CHUNK = re.compile(r"^tail/(\d{8})/(\d{12})\.chunk$")
_CP = re.compile(r"^checkpoints/(\d{12})-(\d{20})\.note$")
_SNAP = re.compile(r"^snapshots/([0-9a-f]{64})\.json$")


def segment_key(n: int) -> str:
    return f"segments/{n:08d}.seg"


def chunk_key(n: int, offset: int) -> str:
    return f"tail/{n:08d}/{offset:012d}.chunk"


def snapshot_key(hex_digest: str) -> str:
    return f"snapshots/{hex_digest}.json"


def checkpoint_key(size: int, time_ns: int) -> str:
    return f"checkpoints/{size:012d}-{time_ns:020d}.note"


@dataclass(frozen=True, slots=True)
class Parsed:
    kind: str  # "segment", "chunk", "checkpoint", "snapshot"
    segment: int = -1
    offset: int = -1
    size: int = -1
    time_ns: int = -1
    digest: str = ""


def parse_key(key: str) -> Parsed | None:
    """What an object key names, or None if it is not part of the layout."""
    if m := _SEG.match(key):
        return Parsed("segment", segment=int(m.group(1)))
    if m := _CHUNK.match(key):
        return Parsed("chunk", segment=int(m.group(1)), offset=int(m.group(2)))
    if m := _CP.match(key):
        return Parsed("checkpoint", size=int(m.group(1)), time_ns=int(m.group(2)))
    if m := _SNAP.match(key):
        return Parsed("snapshot", digest=m.group(1))
    return None
