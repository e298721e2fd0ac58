"""Where ledger bytes live in a remote store. [pure]

    segments/<n:08d>.seg                  a sealed segment, whole (never changes)
    tail/<n:08d>/<start:012d>-<end:012d>.chunk
                                          bytes [start, end) of segment n, shipped while it was open
    checkpoints/<size:012d>-<time:020d>.note
                                          the newest signed checkpoint at each replication step
    snapshots/<sha256 hex>.json           a drift-monitor state snapshot, named by its digest (the
                                          `state.snapshot` record in the ledger carries the digest)

Every object is written once, and every key names its content exactly: a
segment number, a byte range of the local WAL (whose committed bytes never
change), a checkpoint's size and time. So a retry of any put, after any
failure, writes identical bytes under the same key, and a put the client saw
fail but the store kept is harmless: the next attempt that ships more bytes
names a different range. Tail chunks of one segment may therefore overlap
(a range and a longer one from the same start); a reader rebuilds an open
segment by sweeping the chunks in start order, requires every overlap to be
byte-identical (else the store diverges from the ledger) and reports a gap.
Once the segment is sealed its whole file is uploaded and the chunks are only
history.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SEG = re.compile(r"^segments/(\d{8})\.seg$")
_CHUNK = re.compile(r"^tail/(\d{8})/(\d{12})-(\d{12})\.chunk$")
_CP = re.compile(r"^checkpoints/(\d{12})-(\d{20})\.note$")
_SNAP = re.compile(r"^snapshots/([0-9a-f]{64})\.json$")


def segment_key(n: int) -> str:
    return f"segments/{n:08d}.seg"


def chunk_key(n: int, start: int, end: int) -> str:
    if not 0 <= start < end:
        raise ValueError(f"chunk range [{start}, {end}) is empty or negative")
    return f"tail/{n:08d}/{start:012d}-{end:012d}.chunk"


def chunk_prefix(n: int) -> str:
    """The list prefix of every tail chunk of segment n."""
    return f"tail/{n:08d}/"


def snapshot_key(hex_digest: str) -> str:
    return f"snapshots/{hex_digest}.json"


def checkpoint_key(size: int, time_ns: int) -> str:
    return f"checkpoints/{size:012d}-{time_ns:020d}.note"


@dataclass(frozen=True, slots=True)
class Parsed:
    kind: str  # "segment", "chunk", "checkpoint", "snapshot"
    segment: int = -1
    offset: int = -1  # a chunk's start
    end: int = -1  # a chunk's end (exclusive)
    size: int = -1
    time_ns: int = -1
    digest: str = ""


def parse_key(key: str) -> Parsed | None:
    """What an object key names, or None if it is not part of the layout."""
    if m := _SEG.match(key):
        return Parsed("segment", segment=int(m.group(1)))
    if m := _CHUNK.match(key):
        start, end = int(m.group(2)), int(m.group(3))
        if end <= start:
            return None  # an empty or backwards range is nothing the replicator writes
        return Parsed("chunk", segment=int(m.group(1)), offset=start, end=end)
    if m := _CP.match(key):
        return Parsed("checkpoint", size=int(m.group(1)), time_ns=int(m.group(2)))
    if m := _SNAP.match(key):
        return Parsed("snapshot", digest=m.group(1))
    return None
