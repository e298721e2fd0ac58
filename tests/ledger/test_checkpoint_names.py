"""A checkpoint's (size, time) names one note: the store key `checkpoints/<size>-<time>.note` is its own.

A sealing batch ends a segment with a checkpoint and a seal of the same size and time; the next
segment opens with a checkpoint of that same size. If the opening took the seal's time too, two
different notes would share one store key (a replica could hold either, an auditor's list and get
could disagree, Object Lock would keep whichever came first). The writer gives every checkpoint a
time later than the one before it, even when the clock stands still.
"""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

from sidecar.audit.verifier import verify_directory
from sidecar.clock import FixedClock
from sidecar.core import framing
from sidecar.core.events import EventType, IdentityEvent, Outcome
from sidecar.core.note import checkpoint_of
from sidecar.core.segment import SEGMENT_DIR
from sidecar.ledger.keystore import KeyStore
from sidecar.ledger.writer import Ledger, LedgerConfig
from sidecar.replicate.layout import checkpoint_key


def _event(n: int) -> IdentityEvent:
    return IdentityEvent(EventType.LOGIN_SUCCEEDED, Outcome.SUCCEEDED, realm="names", request_id=f"r{n}")


def _frames(data: Path) -> list[tuple[str, int, int, int, bytes]]:
    """(segment, kind, size, time, note) of every checkpoint and seal frame, in file order."""
    out = []
    for path in sorted((data / SEGMENT_DIR).glob("*.seg")):
        for frame in framing.iter_frames(path.read_bytes()):
            assert not isinstance(frame, framing.FrameDamage), path
            if frame.kind in (framing.CHECKPOINT, framing.SEAL):
                cp = checkpoint_of(frame.body)
                out.append((path.name, frame.kind, cp.size, cp.time_ns, frame.body))
    return out


async def test_checkpoint_keys_are_unique_when_the_clock_stands_still(tmp_path: Path) -> None:
    """With a clock that never moves and a segment sealed after every batch, no two checkpoints share a key."""
    KeyStore(tmp_path).init("names.test/ledger")
    ledger = await Ledger.open(tmp_path, config=LedgerConfig(segment_max_bytes=1), clock=FixedClock(step_ns=0))
    try:
        for i in range(12):
            await ledger.append(_event(i))
    finally:
        await ledger.close()
    reopened = await Ledger.open(tmp_path, config=LedgerConfig(segment_max_bytes=1), clock=FixedClock(step_ns=0))
    try:  # a restart with a clock behind the ledger's last checkpoint continues the order too
        await ledger_append_all(reopened, range(12, 15))
    finally:
        await reopened.close()

    frames = _frames(tmp_path)
    segments = {f[0] for f in frames}
    assert len(segments) >= 12, "every batch sealed its segment"
    checkpoints = [f for f in frames if f[1] == framing.CHECKPOINT]
    keys = Counter(checkpoint_key(size, t) for _seg, _k, size, t, _note in checkpoints)
    assert max(keys.values()) == 1, [k for k, n in keys.items() if n > 1]
    times = [t for _seg, kind, _s, t, _n in frames if kind == framing.CHECKPOINT]
    assert times == sorted(times) and len(set(times)) == len(times), "checkpoint times strictly increase"
    for (_s1, k1, size1, t1, _n1), (_s2, k2, size2, t2, _n2) in itertools.pairwise(frames):
        if k2 == framing.SEAL:  # a seal repeats the checkpoint just before it
            assert (k1, size1, t1) == (framing.CHECKPOINT, size2, t2)
    report = verify_directory(tmp_path, KeyStore(tmp_path).trust())
    assert report.ok, report.findings
    assert report.records >= 15


async def ledger_append_all(ledger: Ledger, numbers: range) -> None:
    for i in numbers:
        await ledger.append(_event(i))
