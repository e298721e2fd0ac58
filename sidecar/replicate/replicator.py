"""The replicator: copies the ledger to a store nobody can rewrite, as it is written.

It follows the writer's commits (never on the acknowledgement path): each
round ships the bytes appended to the open segment since the last round as
tail chunks (each ending on a commit boundary, keyed by its byte range),
uploads every segment that was sealed in full, and uploads the newest
checkpoint. Each put is read back and compared before the cursor moves. The
cursor (`replication.json` in the data directory, replaced atomically) makes
restarts resume where they stopped.

Only durable bytes are shipped: the replicator never reads past the newest
commit the writer announced (`on_commit` runs after the fsync), or, before
the first announcement, past the writer's durable end it was given (or, with
no writer running, the last checkpoint found in the files when it was
created). A write the ledger later cuts back (failed fsync) never reaches
the store.

Retries never wedge: every key names its bytes exactly (see
`sidecar.replicate.layout`), and a failed round is retried with the same
puts, so a put that reached the store while we saw an error is simply found
again (identical bytes). Resuming after a crash: the store may hold chunks
beyond the saved cursor; on (re)start the replicator adopts those that cover
the cursor, checking each is byte-identical to the local WAL over its range.
A chunk that differs, like any put that finds other bytes under its key, is a
`StoreIntegrityError`: the remote and the local copy tell different stories.

Errors back off exponentially (0.2 s to 10 s). The backlog (bytes committed
but not yet in the store) is exposed with the lag; past `high_water_bytes`
`over_high_water()` turns true and the capture layer applies the failure
policy (admin changes fail closed by default), so local disk stays bounded.
Crossing the mark either way is logged once, and `status()` (shown in
/.sidecar/health) carries the state and the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from sidecar.core import framing
from sidecar.core.note import Checkpoint, split_note
from sidecar.core.segment import SEGMENT_DIR, segment_name
from sidecar.durable import write_atomic
from sidecar.errors import StorageError, StoreIntegrityError
from sidecar.ledger.writer import Commit
from sidecar.replicate.layout import checkpoint_key, chunk_key, chunk_prefix, parse_key, segment_key
from sidecar.replicate.store import ObjectStore, sha256_hex

log = logging.getLogger("sidecar.replicate")


@dataclass
class _Round:
    """One planned round of puts and where the cursor stands once all of them are in the store."""

    puts: list[tuple[str, bytes]]
    cursor: Cursor
    shipped: int  # bytes of the WAL this round ships
    lag_end: tuple[int, int] | None  # (segment, offset) up to which commits are then in the store
    done: int = 0  # puts already acknowledged (a retry starts here; redoing one would be harmless)


@dataclass
class Cursor:
    segment: int = 0
    offset: int = 0  # bytes of `segment` already in the store

    def to_json(self) -> dict[str, int]:
        return {"segment": self.segment, "offset": self.offset}


class Replicator:
    def __init__(
        self,
        data_dir: Path,
        store: ObjectStore,
        *,
        interval_s: float = 0.2,
        max_chunk_bytes: int = 4 * 1024 * 1024,
        high_water_bytes: int = 256 * 1024 * 1024,
        durable_end: tuple[int, int] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.store = store
        self.interval_s = interval_s
        self.max_chunk = max_chunk_bytes
        self.high_water = high_water_bytes
        self._cursor_path = data_dir / "replication.json"
        self.cursor = self._load_cursor()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()  # set by stop(): no more backing off
        self._commits: deque[tuple[int, int, int]] = deque(maxlen=100_000)  # (segment, end offset, commit ns)
        # Newest durable position: the running writer's (`durable_end`), else what the files held at
        # creation (no writer running), then each commit the writer announces. Scanning the files under a
        # running writer could see a write in progress, not yet fsynced.
        start = durable_end if durable_end is not None else self._committed_on_disk()
        self._head: tuple[int, int] = max(start, (self.cursor.segment, self.cursor.offset))
        self._task: asyncio.Task[None] | None = None
        self._hw_checked = -1.0
        self._reconciled = False  # chunks already in the store at the cursor adopted (see the docstring)
        self._pending: _Round | None = None  # a planned round not yet fully in the store
        self.last_error: str | None = None
        self.last_error_ns: int | None = None
        self.last_success_ns: int | None = None
        self.lags_ms: deque[float] = deque(maxlen=10_000)
        self.integrity_error: str | None = None
        self.uploaded_objects = 0
        self._was_over = False

    # ------------------------------------------------------------------ wiring
    def on_commit(self, commit: Commit) -> None:
        """Ledger subscriber: remember what became durable, and wake the loop."""
        end = (commit.segment + 1, 0) if commit.sealed else (commit.segment, commit.end_offset)
        self._head = max(self._head, end)
        self._commits.append((commit.segment, commit.end_offset, time.time_ns()))
        self._wake.set()

    def start(self) -> None:
        self._reconciled = False  # a previous run may have been cancelled between a put and the cursor save
        self._pending = None
        self._stopping.clear()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="replicator")

    async def stop(self, drain_timeout_s: float = 5.0) -> None:
        """Try to ship what is left (bounded), then stop."""
        if self._task is None:
            return
        self._stopping.set()
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

    def over_high_water(self, max_age_s: float = 0.0) -> bool:
        """Whether the backlog is past the mark; `max_age_s` lets a hot path reuse a recent answer
        (the capture layer asks on every append, and each answer costs a stat per segment)."""
        now = time.monotonic()
        if max_age_s and now - self._hw_checked < max_age_s:
            return self._was_over
        self._hw_checked = now
        backlog = self.backlog_bytes()
        over = backlog > self.high_water
        if over != self._was_over:
            self._was_over = over
            if over:
                log.error(
                    "REPLICATION BACKLOG %d bytes is above the high-water mark of %d bytes (%s): the "
                    "failure policy now applies to new records (admin changes fail closed by default)",
                    backlog,
                    self.high_water,
                    self.last_error or "store behind",
                )
            else:
                log.warning(
                    "replication backlog %d bytes is back under the high-water mark of %d bytes",
                    backlog,
                    self.high_water,
                )
        return over

    def pending_since_ms(self) -> float | None:
        """Age of the oldest commit not yet in the store (the lag right now), or None if none waits."""
        if not self._commits or self.backlog_bytes() == 0:
            return None
        return (time.time_ns() - self._commits[0][2]) / 1e6

    def status(self) -> dict[str, Any]:
        lags = sorted(self.lags_ms)
        backlog = self.backlog_bytes()
        over = self.over_high_water()
        if self.integrity_error:
            state, reason = "integrity-error", self.integrity_error
        elif over:
            state = "over-high-water"
            reason = (
                f"backlog {backlog} bytes above the high-water mark {self.high_water}; "
                f"{self.last_error or 'the store is behind'}"
            )
        elif self.last_error:
            state, reason = "retrying", self.last_error
        else:
            state, reason = "ok", None
        return {
            "state": state,
            "reason": reason,
            "store": self.store.url,
            "cursor": self.cursor.to_json(),
            "backlog_bytes": backlog,
            "high_water_bytes": self.high_water,
            "over_high_water": over,
            "last_error": self.last_error,
            "integrity_error": self.integrity_error,
            "last_error_ns": self.last_error_ns,
            "last_success_ns": self.last_success_ns,
            "pending_since_ms": self.pending_since_ms(),
            "lag_ms_p50": lags[len(lags) // 2] if lags else None,
            "lag_ms_p99": lags[min(len(lags) - 1, int(len(lags) * 0.99))] if lags else None,
            "lag_ms_max": lags[-1] if lags else None,
            "objects": self.uploaded_objects,
        }

    def _committed_on_disk(self) -> tuple[int, int]:
        """The end of the last committed frame in the files now, as (segment, offset)."""
        seg_dir = self.data_dir / SEGMENT_DIR
        n = self.cursor.segment
        head = (n, self.cursor.offset)
        while True:
            try:
                data = _read_from(seg_dir / segment_name(n), 0)
            except FileNotFoundError:
                return head
            ends, sealed, _ = _scan_new(data)
            if not sealed:
                return (n, ends[-1] if ends else 0)
            n += 1
            head = (n, 0)

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
        write_atomic(self._cursor_path, orjson.dumps(self.cursor.to_json()))

    # ------------------------------------------------------------------ the loop
    async def _run(self) -> None:
        backoff = 0.2
        while True:
            await _wait(self._wake, max(self.interval_s * 10, 1.0))
            self._wake.clear()
            try:
                await self.step()
                self._succeeded()
                backoff = 0.2
            except StoreIntegrityError as exc:
                # Someone else wrote into our keys: loud, and never retried into silence.
                self.integrity_error = str(exc)
                log.error("REMOTE STORE INTEGRITY: %s", exc)
                if self._stopping.is_set():
                    return  # nothing more can ship; stop() finds the loop ended
                await _wait(self._stopping, 10)
            except Exception as exc:  # the loop must outlive any one failure, expected or not
                self.last_error = str(exc) or type(exc).__name__
                self.last_error_ns = time.time_ns()
                if isinstance(exc, (StorageError, OSError)):
                    log.warning("replication to %s failed, retrying in %.1fs: %s", self.store.url, backoff, exc)
                else:  # not a storage condition we know: say so with its traceback, and keep trying
                    log.exception("replication to %s failed unexpectedly, retrying in %.1fs", self.store.url, backoff)
                await _wait(self._stopping, backoff)  # stop() cuts the wait short for a last try
                backoff = min(backoff * 2, 10.0)
                self._wake.set()
            else:
                if self.interval_s:
                    await asyncio.sleep(self.interval_s)

    async def step(self) -> int:
        """Ship everything committed so far; returns the number of bytes shipped.

        Each round plans a fixed list of puts (chunks ending on commit boundaries, the newest
        checkpoint, a sealed segment whole) and the cursor they lead to. A round that fails is
        retried as planned, so a retry writes the same keys with the same bytes; bytes committed
        meanwhile go to the next round, under keys of their own.
        """
        if not self._reconciled:
            await self._reconcile()
        shipped = 0
        while True:
            if self._pending is None:
                self._pending = await self._plan()
                if self._pending is None:
                    return shipped
            plan = self._pending
            # Puts go in order (a checkpoint object never lands before the chunk holding it); each
            # read-back runs beside the next put, and all of them must match before the cursor moves.
            checks: list[asyncio.Task[None]] = []
            try:
                while plan.done < len(plan.puts):
                    key, data = plan.puts[plan.done]
                    await self._put(key, data)
                    checks.append(asyncio.ensure_future(self._read_back(key, data)))  # noqa: TID251 (kept in checks, gathered below)
                    plan.done += 1
                await asyncio.gather(*checks)
            except BaseException:
                for check in checks:
                    check.cancel()
                await asyncio.gather(*checks, return_exceptions=True)
                plan.done = 0  # read-backs are part of a put: redo the round (identical bytes, same keys)
                raise
            self.cursor = plan.cursor
            self._pending = None
            await asyncio.to_thread(self._save_cursor)
            if plan.lag_end is not None:
                self._record_lag(*plan.lag_end)
            shipped += plan.shipped
            self._succeeded()  # under steady load step() may not return for a while: say so per round

    def _succeeded(self) -> None:
        if self.last_error is not None:
            log.warning("replication to %s works again", self.store.url)
        self.last_error = None
        self.last_success_ns = time.time_ns()

    async def _plan(self) -> _Round | None:
        """The puts that ship the next committed bytes after the cursor, or None if there are none."""
        seg_dir = self.data_dir / SEGMENT_DIR
        segment, offset = self.cursor.segment, self.cursor.offset
        path = seg_dir / segment_name(segment)
        head_segment, head_offset = self._head
        if head_offset == 0:
            # A segment rolled by a sealing commit: its header was fsynced before the commit was
            # announced, so it is durable and ships on its own.
            head_offset = await asyncio.to_thread(_header_end, seg_dir / segment_name(head_segment))
        if (segment, offset) >= (head_segment, head_offset):
            return None
        # Segments before the head's are sealed and whole; in the head's segment stop at the head.
        limit = head_offset if segment == head_segment else None
        try:
            new = await asyncio.to_thread(_read_from, path, offset, limit)
        except FileNotFoundError:
            return None
        # The cursor always sits on a commit boundary, so the new bytes parse on their own.
        ends, sealed, latest = _scan_new(new)
        puts: list[tuple[str, bytes]] = []
        start = 0
        for end in _split(ends, self.max_chunk):
            puts.append((chunk_key(segment, offset + start, offset + end), new[start:end]))
            start = end
        if latest is not None:
            cp = Checkpoint.parse_body(split_note(latest)[0])
            puts.append((checkpoint_key(cp.size, cp.time_ns), latest))
        shipped = ends[-1] if ends else 0
        lag_end = (segment, offset + shipped) if shipped else None
        # A segment before the head's with nothing left to read had its seal shipped already (as a
        # chunk, by a run that stopped before uploading the whole segment).
        if sealed or (segment < head_segment and not new):
            puts.append((segment_key(segment), await asyncio.to_thread(path.read_bytes)))
            return _Round(puts, Cursor(segment + 1, 0), shipped, lag_end)
        if not shipped:
            return None
        return _Round(puts, Cursor(segment, offset + shipped), shipped, lag_end)

    async def _reconcile(self) -> None:
        """Adopt tail chunks a previous run stored at (and beyond) the cursor before it could save it.

        Each one must be the local WAL's bytes over its range: the store may hold more than the
        cursor says (a put that landed although its caller died or saw an error), never other bytes.
        """
        seg, offset = self.cursor.segment, self.cursor.offset
        path = self.data_dir / SEGMENT_DIR / segment_name(seg)
        stored_chunks = sorted(
            (p.offset, p.end, info.key)
            for info in await self.store.list(chunk_prefix(seg))
            if (p := parse_key(info.key)) is not None and p.kind == "chunk"
        )
        adopted = 0
        for start, end, key in stored_chunks:
            if end <= offset or start > offset:
                continue  # history behind the cursor, or beyond a gap (never adopted across one)
            stored = await self.store.get(key)
            try:
                local = await asyncio.to_thread(_read_from, path, start, end)
            except FileNotFoundError:
                local = b""
            if local != stored:
                raise StoreIntegrityError(
                    f"{self.store.url}: {key} ({len(stored)} bytes, sha256 {sha256_hex(stored)[:16]}...) "
                    f"is not the local WAL over that range ({len(local)} bytes, sha256 "
                    f"{sha256_hex(local)[:16]}...): the remote copy and the local ledger diverge; "
                    "run `sidecar verify DATA_DIR --remote STORE`"
                )
            offset = end
            adopted += 1
        if adopted:
            log.info(
                "replication resumes after %d chunk(s) of segment %d already in %s (cursor %d -> %d)",
                adopted,
                seg,
                self.store.url,
                self.cursor.offset,
                offset,
            )
            self.cursor = Cursor(seg, offset)
            self._head = max(self._head, (seg, offset))
            await asyncio.to_thread(self._save_cursor)
        self._reconciled = True

    async def _put(self, key: str, data: bytes) -> None:
        result = await self.store.put(key, data)
        if result.created:
            self.uploaded_objects += 1

    async def _read_back(self, key: str, data: bytes) -> None:
        back = await self.store.get(key)  # what the store now holds
        if sha256_hex(back) != sha256_hex(data):
            raise StoreIntegrityError(
                f"{self.store.url}: read-back of {key} differs from what was written "
                f"(sha256 {sha256_hex(data)[:16]}..., read {sha256_hex(back)[:16]}...)"
            )

    def _record_lag(self, segment: int, end: int) -> None:
        now = time.time_ns()
        while self._commits and (
            self._commits[0][0] < segment or (self._commits[0][0] == segment and self._commits[0][1] <= end)
        ):
            _, _, t = self._commits.popleft()
            self.lags_ms.append((now - t) / 1e6)


def _read_from(path: Path, offset: int, end: int | None = None) -> bytes:
    """Bytes [offset, end) of a file (to its end when end is None)."""
    with path.open("rb") as f:
        f.seek(offset)
        return f.read() if end is None else f.read(max(0, end - offset))


def _header_end(path: Path) -> int:
    """The end of a segment's header frame, or 0 if the file is missing or has no whole header yet."""
    try:
        data = _read_from(path, 0, 64 * 1024)
    except FileNotFoundError:
        return 0
    for frame in framing.iter_frames(data):
        if isinstance(frame, framing.Frame) and frame.kind == framing.HEADER:
            return frame.offset + framing.OVERHEAD + len(frame.body)
        break
    return 0


def _scan_new(data: bytes) -> tuple[list[int], bool, bytes | None]:
    """(the commit boundaries in data, whether it ends with a seal, the last checkpoint note in it).

    A commit boundary is the end of a header, checkpoint or seal frame: records after the last
    checkpoint are not acknowledged yet (or are a torn tail) and wait for the next step. Only
    checkpoint frames are published as checkpoint objects: a sealing commit writes a checkpoint and
    a seal with the same size and time, so a seal under the same key would be other bytes for a key
    a previous round (which read the commit up to its checkpoint) may already have filled.
    """
    ends: list[int] = []
    sealed, latest = False, None
    for frame in framing.iter_frames(data):
        if isinstance(frame, framing.FrameDamage):
            break
        if frame.kind in (framing.HEADER, framing.CHECKPOINT, framing.SEAL):
            ends.append(frame.offset + framing.OVERHEAD + len(frame.body))
            sealed = frame.kind == framing.SEAL
            if frame.kind == framing.CHECKPOINT:
                latest = frame.body
    return ends, sealed, latest


def _split(ends: list[int], max_bytes: int) -> list[int]:
    """Chunk ends: commit boundaries at most max_bytes apart where possible (a larger commit ships whole)."""
    out: list[int] = []
    start = 0
    for i, end in enumerate(ends):
        last = i + 1 == len(ends)
        if last or ends[i + 1] - start > max_bytes:
            out.append(end)
            start = end
    return out


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Until `event` is set or `seconds` pass. It always yields to the loop once, and a cancellation
    always goes through (Python 3.11's `asyncio.wait_for` drops one that meets an already-set event,
    which left a stopping replicator spinning)."""
    await asyncio.sleep(0)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
