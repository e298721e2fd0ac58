"""The lookup index: sequence number -> segment and offset, and who/what/when, in SQLite.

The segment files are the truth; this index only makes questions fast
("every record about user X", "which segment holds seq N", "what happened
between T1 and T2"). It is written off the acknowledgement path: the writer
hands each commit to `on_commit`, which only queues it (bounded; when full
the index is marked stale rather than slowing the writer), and a background
task inserts batches through aiosqlite, at most one transaction per
`flush_interval_s` (0.1 s): under light load every commit is a single record,
and a thread round trip plus a SQLite transaction for each would cost more CPU
than the record itself. The index lags the ledger by at most that interval. `rebuild()` recreates it from the
segments alone, and `sidecar verify` never reads it. Its one reader is `sidecar timeline --actor/--target`
(sidecar.audit.reading.lookup_verified), which proves every record it names against a signed checkpoint.

An index that dropped commits (queue full, a failed write) is marked stale in its `meta` table: readers
then scan the segments instead (`has_index` is False), and the next start rebuilds it (`catch_up`).

It holds ids, names, types and times — never request bodies or secrets, and never an
encrypted value (names encrypted under a subject key are searched through the key store).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiosqlite

from sidecar.core import framing
from sidecar.core.canonical import parse
from sidecar.core.segment import SEGMENT_DIR, segment_number
from sidecar.ledger.writer import Commit

log = logging.getLogger("sidecar.index")

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY, segment INTEGER NOT NULL, offset INTEGER NOT NULL, ts INTEGER NOT NULL,
    type TEXT NOT NULL, outcome TEXT, realm TEXT, actor_id TEXT, actor_name TEXT, actor_client TEXT,
    target_id TEXT, target_name TEXT, session TEXT, ip TEXT
);
CREATE INDEX IF NOT EXISTS records_actor ON records(actor_id);
CREATE INDEX IF NOT EXISTS records_actor_name ON records(actor_name);
CREATE INDEX IF NOT EXISTS records_target ON records(target_id);
CREATE INDEX IF NOT EXISTS records_ts ON records(ts);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""

Row = tuple[Any, ...]


def _clear(value: Any) -> str | None:
    """A plain string, or None: an encrypted value (docs/format.md §5.2) never enters the index,
    so erasing its subject's key leaves nothing readable here. Search by name goes through the
    subject key store's keyed tokens instead (`SubjectKeys.find`)."""
    return value if isinstance(value, str) else None


def row_for(segment: int, offset: int, body: bytes) -> Row:
    rec = parse(body)
    e = rec["event"]
    actor, target = e.get("actor") or {}, e.get("target") or {}
    return (
        rec["seq"],
        segment,
        offset,
        int(rec["ts"]),
        e.get("type"),
        e.get("outcome"),
        e.get("realm"),
        actor.get("id"),
        _clear(actor.get("username")),
        actor.get("client") or e.get("client"),
        target.get("id"),
        _clear(target.get("username")) or _clear(target.get("name")) or target.get("client"),
        e.get("session"),
        _clear(e.get("ip")),
    )


def rows_of_segment(path: Path) -> Iterable[Row]:
    n = segment_number(path.name)
    assert n is not None
    for frame in framing.iter_frames(path.read_bytes()):
        if isinstance(frame, framing.FrameDamage):
            return
        if frame.kind == framing.RECORD:
            yield row_for(n, frame.offset, frame.body)


class LedgerIndex:
    def __init__(self, path: Path, *, queue_max: int = 10_000, flush_interval_s: float = 0.1) -> None:
        self.path = path
        self.flush_interval_s = flush_interval_s
        self._db: aiosqlite.Connection | None = None
        self._queue: asyncio.Queue[Commit] = asyncio.Queue(queue_max)
        self._task: asyncio.Task[None] | None = None
        self.stale = False

    async def open(self) -> None:
        self._db = await aiosqlite.connect(self.path)
        await self._db.executescript(SCHEMA)
        await self._db.execute("PRAGMA journal_mode=WAL")
        # The index is rebuildable from the segments, so it does not need its own fsync per commit
        # (that would be a second fsync on the ledger's disk for every batch).
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.commit()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ledger-index")

    async def close(self) -> None:
        if self._task is not None:
            await self._queue.join()  # every queued commit written (or failed and marked stale)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._db is not None:
            await self._db.close()

    def on_commit(self, commit: Commit) -> None:
        """Ledger subscriber: queue only; never blocks or fails the writer."""
        try:
            self._queue.put_nowait(commit)
        except asyncio.QueueFull:
            if not self.stale:
                log.warning(
                    "index queue full; the index misses records until the next start rebuilds it from "
                    "the segments (timeline reads the segments meanwhile)"
                )
            self.stale = True

    async def _run(self) -> None:
        assert self._db is not None
        loop = asyncio.get_running_loop()
        last_flush = -1e9
        while True:
            commits = [await self._queue.get()]
            wait = last_flush + self.flush_interval_s - loop.time()
            if wait > 0:  # let the commits of the rest of this interval join one transaction
                await asyncio.sleep(wait)
            while not self._queue.empty() and len(commits) < 5000:
                commits.append(self._queue.get_nowait())
            last_flush = loop.time()
            rows = [row_for(c.segment, off, body) for c in commits for (_seq, off, body) in c.records]
            try:
                await self._db.executemany("INSERT OR REPLACE INTO records VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
                if self.stale:  # readers must not trust an index with holes; the next start rebuilds it
                    await self._db.execute("INSERT OR REPLACE INTO meta VALUES ('stale', '1')")
                await self._db.commit()
            except aiosqlite.Error as exc:
                self.stale = True
                log.error(
                    "index write failed (index stale until the next start rebuilds it, ledger unaffected): %s", exc
                )
            finally:
                for _ in commits:
                    self._queue.task_done()

    async def rebuild(self, data_dir: Path) -> int:
        """Drop and refill the index from the segment files; returns the number of records."""
        assert self._db is not None
        await self._db.execute("DELETE FROM records")
        count = 0
        for path in sorted((data_dir / SEGMENT_DIR).glob("*.seg")):
            rows = list(rows_of_segment(path))
            await self._db.executemany("INSERT OR REPLACE INTO records VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
            count += len(rows)
        await self._db.execute("DELETE FROM meta WHERE key = 'stale'")
        await self._db.commit()
        self.stale = False
        return count

    async def catch_up(self, data_dir: Path) -> int:
        """Index the records the segments hold beyond the index's newest; returns how many were added.

        An index marked stale (it dropped commits, so it has holes) is rebuilt from the segments instead.
        """
        assert self._db is not None
        async with self._db.execute("SELECT 1 FROM meta WHERE key = 'stale'") as cur:
            if await cur.fetchone() is not None:
                log.warning("the index was marked stale (it missed records); rebuilding it from the segments")
                return await self.rebuild(data_dir)
        async with self._db.execute("SELECT MAX(seq), MAX(segment) FROM records") as cur:
            row = await cur.fetchone()
        newest = row[0] if row and row[0] is not None else -1
        first_segment = row[1] if row and row[1] is not None else 0
        added = 0
        for path in sorted((data_dir / SEGMENT_DIR).glob("*.seg")):
            n = segment_number(path.name)
            if n is None or n < first_segment:
                continue
            rows = [r for r in rows_of_segment(path) if r[0] > newest]
            await self._db.executemany("INSERT OR REPLACE INTO records VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
            added += len(rows)
        await self._db.commit()
        return added

    async def query(
        self,
        *,
        actor: str | None = None,
        target: str | None = None,
        since_ns: int | None = None,
        until_ns: int | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Records about an actor or target (id or name) in a time window, oldest first."""
        assert self._db is not None
        where: list[str] = []
        args: list[Any] = []
        if actor:
            where.append("(actor_id = ? OR actor_name = ? OR actor_client = ?)")
            args += [actor, actor, actor]
        if target:
            where.append("(target_id = ? OR target_name = ?)")
            args += [target, target]
        if since_ns is not None:
            where.append("ts >= ?")
            args.append(since_ns)
        if until_ns is not None:
            where.append("ts <= ?")
            args.append(until_ns)
        sql = "SELECT * FROM records" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY seq LIMIT ?"
        self._db.row_factory = aiosqlite.Row
        async with self._db.execute(sql, [*args, limit]) as cur:
            return [dict(r) for r in await cur.fetchall()]

    async def count(self) -> int:
        assert self._db is not None
        async with self._db.execute("SELECT COUNT(*) FROM records") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def locate(self, seq: int) -> tuple[int, int] | None:
        assert self._db is not None
        async with self._db.execute("SELECT segment, offset FROM records WHERE seq = ?", (seq,)) as cur:
            row = await cur.fetchone()
        return (int(row[0]), int(row[1])) if row else None
