"""`sidecar export --follow`: stream records as they are committed, verified, with a resumable cursor.

Each poll reads the segments from the cursor on, checks them with the same segment-local
proof the index lookups use (`sidecar.audit.reading._SegmentProver`: the segment is scanned,
every checkpoint's signature checked with a key that descends from the trust file, and its root
recomputed from the header's prefix range and the segment's records), and yields only records
a checked checkpoint covers. A record that fails stops the stream with `ReadRefused`.

The cursor file (JSON, replaced atomically after each batch the caller has written) holds the
next sequence number and the intents still waiting for their outcome, so a restarted follower
neither repeats nor loses an event, and pairs stay one event across restarts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson

from sidecar.audit.reading import ReadRefused, _SegmentProver, verify_settled
from sidecar.core import framing
from sidecar.core.record import record_object
from sidecar.core.trust import TrustAnchor
from sidecar.core.verify import Finding
from sidecar.durable import write_atomic
from sidecar.export.pairs import Paired, Pairer, is_intent


class Cursor:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.next_seq = 0
        self.pending: list[int] = []
        if path is not None and path.exists():
            try:
                obj = orjson.loads(path.read_bytes())
                self.next_seq = int(obj["next_seq"])
                self.pending = [int(s) for s in obj.get("pending", [])]
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise ReadRefused([Finding("cursor-unusable", f"cursor file {path} is unusable: {exc}")]) from exc

    def save(self, next_seq: int, pending: list[int]) -> None:
        self.next_seq, self.pending = next_seq, pending
        if self.path is None:
            return
        write_atomic(self.path, orjson.dumps({"next_seq": next_seq, "pending": pending}))


def follow(
    source: Path,
    trust: TrustAnchor,
    cursor: Cursor,
    *,
    interval_s: float = 1.0,
    keep: Callable[[dict[str, object]], bool] | None = None,
    stop: Callable[[], bool] = lambda: False,
    intent_wait_s: float = 60.0,
) -> Iterator[list[Paired]]:
    """Batches of newly committed, verified records (paired), one batch per poll with news.

    After the caller has written a batch it calls `cursor.save(...)` through the `commit`
    attribute the generator sets on the cursor (see cli); the generator itself never saves.
    """
    first = verify_settled(source, trust)
    if not first.ok:
        raise ReadRefused(first.findings, first)
    pairer = Pairer()
    start = min([cursor.next_seq, *cursor.pending])
    replay_intents = set(cursor.pending)
    next_seq = start
    while True:
        prover = _SegmentProver(source, trust)
        batch: list[Paired] = []
        for n in sorted(prover.files):
            h = prover.header(n)
            nxt = prover.header(n + 1) if n + 1 in prover.files else None
            if h is None or (nxt is not None and nxt.first_seq <= next_seq):
                continue  # wholly before the cursor
            cps = prover.checked_checkpoints(n)
            if cps is None:
                raise ReadRefused(prover.findings)
            covered = cps[-1][0] if cps else 0
            for frame in framing.iter_frames(prover._scans[n][1]):
                if isinstance(frame, framing.FrameDamage):
                    break
                if frame.kind != framing.RECORD:
                    continue
                rec = record_object(frame.body)
                seq = int(rec["seq"])
                if seq < next_seq or seq >= covered:
                    continue
                next_seq = seq + 1
                if seq < cursor.next_seq and not (seq in replay_intents and is_intent(rec)):
                    continue  # exported before the restart
                if keep is None or keep(rec):
                    batch.extend(pairer.feed(rec))
        batch.extend(pairer.flush(older_than_ns=time.time_ns() - int(intent_wait_s * 1e9)))
        cursor_next, cursor_pending = next_seq, sorted(pairer.pending)
        if batch:
            yield batch
        cursor.save(cursor_next, cursor_pending)
        if stop():
            return
        time.sleep(interval_s)
