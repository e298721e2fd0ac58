"""The SQLite index follows the writer off the acknowledgement path and can be rebuilt from segments alone."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sidecar.core.events import EventType, IdentityEvent, Outcome, Party
from sidecar.ledger.index import LedgerIndex
from sidecar.ledger.keystore import KeyStore
from sidecar.ledger.writer import Ledger, LedgerConfig


async def _fill(path: Path, n: int) -> None:
    KeyStore(path).init("index.test/ledger")
    ledger = await Ledger.open(path, config=LedgerConfig(segment_max_bytes=4096))
    index = LedgerIndex(path / "index.sqlite")
    await index.open()
    ledger.subscribers.append(index.on_commit)
    await index.catch_up(path)
    index.start()
    await asyncio.gather(
        *(
            ledger.append(
                IdentityEvent(
                    EventType.ROLE_GRANTED,
                    Outcome.SUCCEEDED,
                    realm="r",
                    actor=Party(id=f"admin-{i % 3}", username=f"adm{i % 3}"),
                    target=Party(id=f"user-{i % 5}", username=f"u{i % 5}"),
                    details={"roles": ["viewer"]},
                )
            )
            for i in range(n)
        )
    )
    await ledger.close()
    await index.close()


async def test_index_follows_commits_and_answers_lookups(tmp_path: Path) -> None:
    """Every committed record is in the index with its segment and offset, and lookups by actor and target work."""
    await _fill(tmp_path, 60)
    index = LedgerIndex(tmp_path / "index.sqlite")
    await index.open()
    assert await index.count() == 60 + 1  # the events and ledger.started (close() adds a checkpoint, no record)
    by_actor = await index.query(actor="adm1")
    assert by_actor and all(r["actor_name"] == "adm1" for r in by_actor)
    assert len(await index.query(target="user-2")) == 12
    where = await index.locate(30)
    assert where is not None
    segment, offset = where
    data = (tmp_path / "segments" / f"{segment:08d}.seg").read_bytes()
    assert b'"seq":30,' in data[offset : offset + 2000]
    await index.close()


async def test_rebuild_from_segments_gives_the_same_index(tmp_path: Path) -> None:
    """Deleting the index and rebuilding it from the segment files alone gives identical rows."""
    await _fill(tmp_path, 40)
    index = LedgerIndex(tmp_path / "index.sqlite")
    await index.open()
    before = await index.query(limit=10_000)
    await index.close()
    (tmp_path / "index.sqlite").unlink()
    rebuilt = LedgerIndex(tmp_path / "index.sqlite")
    await rebuilt.open()
    assert await rebuilt.rebuild(tmp_path) == len(before)
    assert await rebuilt.query(limit=10_000) == before
    await rebuilt.close()


async def test_an_index_that_dropped_commits_is_marked_stale_and_rebuilt_at_the_next_start(tmp_path: Path) -> None:
    """A full queue marks the index stale on disk: readers stop using it, and the next catch_up rebuilds it whole."""
    from sidecar.audit.reading import has_index
    from sidecar.core.framing import RECORD, Frame, iter_frames
    from sidecar.ledger.writer import Commit

    await _fill(tmp_path, 20)
    assert has_index(tmp_path)
    data = (tmp_path / "segments" / "00000000.seg").read_bytes()
    records = tuple(
        (i, f.offset, f.body)
        for i, f in enumerate(f for f in iter_frames(data) if isinstance(f, Frame) and f.kind == RECORD)
    )
    (tmp_path / "index.sqlite").unlink()
    index = LedgerIndex(tmp_path / "index.sqlite", queue_max=1)
    await index.open()
    index.on_commit(Commit(0, records[:1], b"", False, 0))
    index.on_commit(Commit(0, records[1:], b"", False, 0))  # the queue is full: this commit is lost
    assert index.stale
    index.start()
    await index.close()
    assert not has_index(tmp_path)  # it holds one record of many: a reader scans the segments instead

    again = LedgerIndex(tmp_path / "index.sqlite")
    await again.open()
    assert await again.count() == 1
    assert await again.catch_up(tmp_path) == 20 + 1  # rebuilt from the segments, every record
    await again.close()
    assert has_index(tmp_path)
