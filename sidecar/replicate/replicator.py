"""The replicator: copies the ledger to a store nobody can rewrite, as it is written.

It follows the writer's commits (never on the acknowledgement path): each
step ships the bytes appended to the open segment since the last step as one
tail chunk, uploads every segment that was sealed in full, and uploads the
newest checkpoint. Each put is read back and compared before the cursor
moves. The cursor (`replication.json` in the data directory, replaced
atomically) makes restarts resume where they stopped.

Errors back off exponentially (0.2 s to 10 s). The backlog (bytes committed
but not yet in the store) is exposed with the lag; past `high_water_bytes`
`over_high_water()` turns true and the capture layer applies the failure
policy (admin changes fail closed by default), so local disk stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from sidecar.core import framing
from sidecar.core.note import Checkpoint, split_note
from sidecar.core.segment import SEGMENT_DIR, segment_name
from sidecar.errors import StorageError, StoreIntegrityError
from sidecar.ledger.writer import Commit
from sidecar.replicate.layout import checkpoint_key, chunk_key, segment_key
from sidecar.replicate.store import ObjectStore, sha256_hex

log = logging.getLogger("sidecar.replicate")


@dataclass
class Cursor:
    segment: int = 0
    offset: int = 0  # bytes of `segment` already in the store

    def to_json(self) -> dict[str, int]:
        return {"segment": self.segment, "offset": self.offset}


class Replicator:
    def __init__(self, data_dir: Path, store: ObjectStore, *, interval_s: float = 0.2,
                 max_chunk_bytes: int = 4 * 1024 * 1024, high_water_bytes: int = 256 * 1024 * 1024) -> None:
        self.data_dir = data_dir
        self.store = store
        self.interval_s = interval_s
        self.max_chunk = max_chunk_bytes
        self.high_water = high_water_bytes
        self._cursor_path = data_dir / "replication.json"
        self.cursor = self._load_cursor()
        self._wake = asyncio.Event()
        self._commits: deque[tuple[int, int, int]] = deque(maxlen=100_000)  # (segment, end offset, commit ns)
        self._head: tuple[int, int] = (self.cursor.segment, self.cursor.offset)  # newest committed position
        self._task: asyncio.Task[None] | None = None
        self.last_error: str | None = None
        self.lags_ms: deque[float] = deque(maxlen=10_000)
        self.integrity_error: str | None = None
        self.uploaded_objects = 0

    # ------------------------------------------------------------------ wiring
    def on_commit(self, commit: Commit) -> None:
        """Ledger subscriber: remember what became durable, and wake the loop."""
        end = (commit.segment + 1, 0) if commit.sealed else (commit.segment, commit.end_offset)
        self._head = max(self._head, end)
        self._commits.append((commit.segment, commit.end_offset, time.time_ns()))
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="replicator")

    async def stop(self, drain_timeout_s: float = 5.0) -> None:
        """Try to ship what is left (bounded), then stop."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained(), drain_timeout_s)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _drained(self) -> None:
        while self.backlog_bytes() > 0 and self.integrity_error is None:
            self._wake.set()
            await asyncio.sleep(0.05)

    # ------------------------------------------------------------------ state
    def backlog_bytes(self) -> int:
        seg_dir = self.data_dir / SEGMENT_DIR
        total = 0
        n = self.cursor.segment
        while True:
            path = seg_dir / segment_name(n)
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                break
            total += size - (self.cursor.offset if n == self.cursor.segment else 0)
            n += 1
        return total

    def over_high_water(self) -> bool:
        return self.backlog_bytes() > self.high_water

    def status(self) -> dict[str, Any]:
        lags = sorted(self.lags_ms)
        return {"store": self.store.url, "cursor": self.cursor.to_json(), "backlog_bytes": self.backlog_bytes(),
                "last_error": self.last_error, "integrity_error": self.integrity_error,
                "lag_ms_p50": lags[len(lags) // 2] if lags else None,
                "lag_ms_p99": lags[min(len(lags) - 1, int(len(lags) * 0.99))] if lags else None,
                "objects": self.uploaded_objects}

    def _load_cursor(self) -> Cursor:
        try:
            obj = orjson.loads(self._cursor_path.read_bytes())
            return Cursor(int(obj["segment"]), int(obj["offset"]))
        except FileNotFoundError:
            return Cursor()
        except (orjson.JSONDecodeError, KeyError, ValueError, TypeError):
            log.warning("replication cursor unreadable; starting from the beginning (puts are idempotent)")
            return Cursor()

    def _save_cursor(self) -> None:
        tmp = self._cursor_path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(self.cursor.to_json()))
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._cursor_path)

    # ------------------------------------------------------------------ the loop
    async def _run(self) -> None:
        backoff = 0.2
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s * 10)
            self._wake.clear()
            try:
                await self.step()
                self.last_error = None
                backoff = 0.2
            except StoreIntegrityError as exc:
                # Someone else wrote into our keys: loud, and never retried into silence.
                self.integrity_error = str(exc)
                log.error("REMOTE STORE INTEGRITY: %s", exc)
                await asyncio.sleep(10)
            except (StorageError, OSError) as exc:
                self.last_error = str(exc)
                log.warning("replication to %s failed, retrying in %.1fs: %s", self.store.url, backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                self._wake.set()
            else:
                if self.interval_s:
                    await asyncio.sleep(self.interval_s)

    async def step(self) -> int:
        """Ship everything committed so far; returns the number of bytes shipped."""
        seg_dir = self.data_dir / SEGMENT_DIR
        shipped = 0
        while True:
            path = seg_dir / segment_name(self.cursor.segment)
            try:
                new = await asyncio.to_thread(_read_from, path, self.cursor.offset)
            except FileNotFoundError:
                return shipped
            # The cursor always sits on a frame boundary, so the new bytes parse on their own.
            end_rel, sealed, latest = _scan_new(new)
            if end_rel:
                start = self.cursor.offset
                end = start + end_rel
                for pos in range(0, end_rel, self.max_chunk):
                    await self._put(chunk_key(self.cursor.segment, start + pos),
                                    new[pos: min(end_rel, pos + self.max_chunk)])
                if latest is not None:
                    cp = Checkpoint.parse_body(split_note(latest)[0])
                    await self._put(checkpoint_key(cp.size, cp.time_ns), latest)
                shipped += end_rel
                self.cursor.offset = end
                self._record_lag(self.cursor.segment, end)
            if not sealed:
                if end_rel:
                    await asyncio.to_thread(self._save_cursor)
                return shipped
            await self._put(segment_key(self.cursor.segment), await asyncio.to_thread(path.read_bytes))
            self.cursor = Cursor(self.cursor.segment + 1, 0)
            await asyncio.to_thread(self._save_cursor)

    async def _put(self, key: str, data: bytes) -> None:
        result = await self.store.put(key, data)
        back = await self.store.get(key)  # read back what the store now holds
        if sha256_hex(back) != sha256_hex(data):
            raise StoreIntegrityError(f"{self.store.url}: read-back of {key} differs from what was written "
                                      f"(sha256 {sha256_hex(data)[:16]}..., read {sha256_hex(back)[:16]}...)")
        if result.created:
            self.uploaded_objects += 1

    def _record_lag(self, segment: int, end: int) -> None:
        now = time.time_ns()
        while self._commits and (self._commits[0][0] < segment or
                                 (self._commits[0][0] == segment and self._commits[0][1] <= end)):
            _, _, t = self._commits.popleft()
            self.lags_ms.append((now - t) / 1e6)


def _read_from(path: Path, offset: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read()


def _scan_new(data: bytes) -> tuple[int, bool, bytes | None]:
    """(end of the committed part, whether it ends with a seal, the last checkpoint note in it).

    Committed means up to the end of the last header, checkpoint or seal frame: records after the
    last checkpoint are not acknowledged yet (or are a torn tail) and wait for the next step.
    """
    end, sealed, latest = 0, False, None
    for frame in framing.iter_frames(data):
        if isinstance(frame, framing.FrameDamage):
            break
        if frame.kind in (framing.HEADER, framing.CHECKPOINT, framing.SEAL):
            end = frame.offset + framing.OVERHEAD + len(frame.body)
            sealed = frame.kind == framing.SEAL
            if frame.kind != framing.HEADER:
                latest = frame.body
    return end, sealed, latest
