"""The ledger writer: one task that sequences, chains, signs and fsyncs records.

Invariants:

* One writer per data directory (an exclusive lock file enforces it).
* `append()` returns only after the record, and a checkpoint signed over the
  whole tree including it, are on stable storage (write + fsync). That is the
  acknowledgement the proxy waits for before answering a client.
* Group commit: records that arrive while a batch is being written go into the
  next batch; each batch ends with one signed checkpoint, so one Ed25519
  signature and one fsync cover the whole batch.
* The queue is bounded. When it is full, `append()` raises OverloadError at
  once (the proxy turns that into 503 + Retry-After); nothing grows without bound.
* A failed write is cut back to the last good offset; the waiting callers get
  StorageError and nothing they were told is durable is lost.
* Input cannot break the writer: a record that cannot be encoded (a value outside
  the canonical subset, or over `record_max_bytes`) fails only its own append, with
  RecordRejected; every other record of the batch is written.
* `broken` is only for storage faults (a failed write, cut-back or segment roll).
  While broken, appends fail at once (503) and the writer task probes storage with
  exponential back-off (`retry_initial_s` doubling up to `retry_max_s`) by redoing
  what failed and writing a checkpoint; the first probe that succeeds heals it.
  Error log lines while broken are rate-limited (one per `error_log_interval_s`).
* Segments are sealed by size or age with a signed seal and never change after.
  Keys rotate per epoch: a `key.rotated` record ends its segment, the old key
  signs the checkpoint after it and the seal, the next segment (and its opening
  checkpoint) is signed by the new key, then the old private key is destroyed.
* The writer produces kc-ledger/2 (docs/format.md): every checkpoint signs the
  digest of its segment's bytes before it. A kc-ledger/1 segment left open by an
  older version is continued in its own format until it is sealed.
* On start, a torn tail (from a crash mid-write) is cut back to the last whole
  frame, whole records after the last checkpoint are kept and signed, and a
  `ledger.recovered` record says what was cut. Damage that is not a torn tail
  stops the start: that is for `sidecar verify` and a human.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import hashlib
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidecar.clock import Clock, SystemClock
from sidecar.core import framing
from sidecar.core.events import EventType, IdentityEvent, Outcome
from sidecar.core.keys import PublicKey, Signer
from sidecar.core.merkle import CompactRange
from sidecar.core.note import Checkpoint, Seal, SegmentBytes, sign_note
from sidecar.core.record import encode_record, genesis_hash, record_hash
from sidecar.core.segment import SEGMENT_DIR, SegmentHeader, segment_name, segment_number
from sidecar.core.verify import scan_segment
from sidecar.durable import fsync_dir
from sidecar.errors import IntegrityError, OverloadError, RecordRejected, StorageError
from sidecar.ledger.keystore import KeyStore

log = logging.getLogger("sidecar.ledger")


@dataclass(frozen=True, slots=True)
class LedgerConfig:
    segment_max_bytes: int = 8 * 1024 * 1024
    segment_max_age_s: float = 3600.0
    epoch_s: float = 3600.0
    heartbeat_s: float = 30.0
    queue_max: int = 20_000
    batch_max: int = 2_000
    fsync: bool = True
    record_max_bytes: int = 256 * 1024  # a larger record is refused to its caller (RecordRejected)
    retry_initial_s: float = 0.1  # storage fault: first probe after this, doubling each failure ...
    retry_max_s: float = 10.0  # ... up to this
    error_log_interval_s: float = 10.0  # at most one storage error line per interval while broken


@dataclass(frozen=True, slots=True)
class Receipt:
    """Proof of acknowledgement: the record's place and the checkpoint that covers it."""

    seq: int
    hash: bytes
    tree_size: int


@dataclass(frozen=True, slots=True)
class Commit:
    """What one batch added, for the index and the replicator (never on the ack path)."""

    segment: int
    records: tuple[tuple[int, int, bytes], ...]  # (seq, file offset, record body)
    checkpoint: bytes
    sealed: bool
    end_offset: int


@dataclass(slots=True)
class _State:
    seq: int
    prev: bytes
    crange: CompactRange
    segment: int
    offset: int
    header: SegmentHeader
    first_hash: bytes | None
    last_ts: int
    signer: Signer
    epoch_start_ns: int
    segment_start_ns: int
    last_checkpoint_ns: int = 0
    digest: Any = None  # kc-ledger/2: running SHA-256 of the segment file's bytes (hashlib object)

    @property
    def version(self) -> int:
        return self.header.version


_Item = tuple[dict[str, Any], "asyncio.Future[Receipt]"]
_Batch = list[tuple[dict[str, Any], "asyncio.Future[Receipt] | None"]]
WriteAt = Callable[[int, bytes, int, bool], None]


@dataclass(slots=True)
class _Fault:
    """A storage fault being healed: what failed, and when the writer task probes again."""

    reason: str
    since: float  # time.monotonic() of the first failure
    failures: int = 1
    retry_at: float = 0.0
    logged_at: float = 0.0
    suppressed: int = 0  # error lines not written since logged_at
    healed_at: float | None = None  # set when a probe succeeded; a fault soon after continues this one
    heal_logged_at: float | None = None


@dataclass
class Ledger:
    data_dir: Path
    config: LedgerConfig
    clock: Clock
    policy_digest: str
    keys: KeyStore
    origin: str
    _state: _State
    _fd: int
    _lock_fd: int
    subscribers: list[Callable[[Commit], None]] = field(default_factory=list)
    recovered: dict[str, Any] | None = None
    broken: str | None = None  # why appends fail now (a storage fault being healed, or the task ended)
    # The seam for the one syscall sequence that writes WAL bytes; tests put a faulting twin here.
    write_at: WriteAt = field(default_factory=lambda: _write_at)
    # Encrypts identifying values under their subject's key (sidecar.ledger.subjects.Protector);
    # None: no subject key store, values are written as given.
    protect: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]] | None = None

    def __post_init__(self) -> None:
        # Appends wait here for the writer task; `_wake` is the one future the idle task waits on.
        self._queue: collections.deque[_Item] = collections.deque()
        self._wake: asyncio.Future[None] | None = None
        self._pool = _FileThread()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._cut_back_to: int | None = None
        self._roll_at: int | None = None  # a sealed segment whose successor is not created yet
        self._fault: _Fault | None = None
        self._healed: _Fault | None = None  # the last fault healed, for a flapping disk
        self.rejected = 0  # records refused to their callers since start (RecordRejected)

    # ------------------------------------------------------------------ opening
    @classmethod
    async def open(
        cls,
        data_dir: Path,
        *,
        config: LedgerConfig | None = None,
        clock: Clock | None = None,
        policy_digest: str = "",
        start_task: bool = True,
    ) -> Ledger:
        """Open (recovering if needed) the ledger in `data_dir` and start its writer task."""
        config = config or LedgerConfig()
        clock = clock or SystemClock()
        keys = KeyStore(data_dir)
        trust = keys.trust()
        seg_dir = data_dir / SEGMENT_DIR
        seg_dir.mkdir(exist_ok=True)
        lock_fd = os.open(data_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(lock_fd)
            raise StorageError(f"another sidecar is writing the ledger in {data_dir}") from exc
        try:
            return await cls._open_locked(
                data_dir, config, clock, policy_digest, start_task, keys, trust.origin, seg_dir, lock_fd
            )
        except BaseException:
            fcntl.flock(lock_fd, fcntl.LOCK_UN)  # a failed open must not leave the directory locked
            os.close(lock_fd)
            raise

    @classmethod
    async def _open_locked(
        cls,
        data_dir: Path,
        config: LedgerConfig,
        clock: Clock,
        policy_digest: str,
        start_task: bool,
        keys: KeyStore,
        origin: str,
        seg_dir: Path,
        lock_fd: int,
    ) -> Ledger:
        now = clock.now_ns()
        recovered: dict[str, Any] | None = None
        # Opening runs once before any request is served; its file I/O blocks on purpose.
        numbers = sorted(n for p in seg_dir.iterdir() if (n := segment_number(p.name)) is not None)  # noqa: ASYNC240
        found = _recover(seg_dir, numbers[-1], keys, origin, policy_digest, now, config) if numbers else None
        if found is None:
            signer = keys.load(0)
            state = _new_segment_state(
                0, 0, genesis_hash(origin), CompactRange.empty(0), signer, origin, policy_digest, now, now, -1
            )
            fd = _create_segment(seg_dir, state, now)
            pending: list[tuple[Signer, PublicKey]] = []
            seal_needed = False
        else:
            state, fd, recovered, pending, seal_needed = found
        ledger = cls(data_dir, config, clock, policy_digest, keys, origin, state, fd, lock_fd, recovered=recovered)
        await ledger._finish_recovery(pending, seal_needed)
        start = IdentityEvent(
            EventType.LEDGER_RECOVERED if recovered else EventType.LEDGER_STARTED,
            Outcome.SUCCEEDED,
            details=recovered or {"policy": policy_digest},
        )
        await ledger._commit([(start.to_json(), None)])
        if start_task:
            ledger.start()
        return ledger

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="ledger-writer")

    async def _finish_recovery(self, pending: list[tuple[Signer, PublicKey]], seal_needed: bool) -> None:
        """Sign what a crash left unsigned: whole records without a checkpoint, a rotation without its seal."""
        st = self._state
        if not pending:
            return
        old_signer, _ = pending[0]
        now = max(self.clock.now_ns(), st.last_checkpoint_ns + 1)  # a checkpoint's (size, time) names it
        digest = st.digest.copy() if st.digest is not None else None
        root = st.crange.root()
        data = _note_frame(
            framing.CHECKPOINT, (self.origin, st.seq, root, now), old_signer, st.header, digest, st.offset
        )
        if digest is not None:
            digest.update(data)
        if seal_needed:  # kc-ledger/2: a key.rotated record ends its segment; the outgoing key seals it
            assert st.first_hash is not None
            line = Seal(st.segment, st.header.first_seq, st.seq - 1, st.first_hash, st.prev, st.header.policy)
            seal = _note_frame(
                framing.SEAL,
                (self.origin, st.seq, root, now, line),
                old_signer,
                st.header,
                digest,
                st.offset + len(data),
            )
            if digest is not None:
                digest.update(seal)
            data += seal
        await self._write(data, st.offset)
        st.offset += len(data)
        st.digest = digest
        st.last_checkpoint_ns = now
        if seal_needed:
            self._close_sealed()
            await self._open_next_segment(now)
        for signer, _new in pending:
            if signer.public.epoch != st.signer.public.epoch:
                self.keys.destroy(signer.public.epoch)

    # ------------------------------------------------------------------ appending
    async def append(self, event: IdentityEvent | dict[str, Any]) -> Receipt:
        """Append one event; returns once it is durable and covered by a signed checkpoint."""
        if self._task is not None and self._task.done() and not self.broken:
            self.broken = "writer task ended"
        if self.broken:
            err = StorageError(f"ledger unavailable: {self.broken}")
            if self._fault is not None:
                err.retry_after = max(1, min(60, round(self._fault.retry_at - time.monotonic() + 0.5)))
            raise err
        if self._closing:
            raise StorageError("ledger is closing")
        payload = event.to_json() if isinstance(event, IdentityEvent) else event
        if self.protect is not None:
            # After the typed boundary (IdentityEvent), before the queue: a failure to get a subject's
            # key fails this append (StorageError), never writes the value in the clear.
            payload = await self.protect(payload)
        if len(self._queue) >= self.config.queue_max:
            raise OverloadError(f"ledger queue full ({self.config.queue_max} waiting)", retry_after=1)
        fut: asyncio.Future[Receipt] = asyncio.get_running_loop().create_future()
        self._queue.append((payload, fut))
        self._wake_writer()
        return await fut

    def _wake_writer(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    @property
    def size(self) -> int:
        return self._state.seq

    @property
    def segment(self) -> int:
        return self._state.segment

    @property
    def durable_end(self) -> tuple[int, int]:
        """(segment, offset) of the end of the last durable commit: what a reader may ship or serve."""
        return self._state.segment, self._state.offset

    def queue_depth(self) -> int:
        return len(self._queue)

    def fault(self) -> dict[str, Any] | None:
        """The storage fault being healed, for health: reason, failures, seconds until the next probe."""
        f = self._fault
        if f is None:
            return None
        now = time.monotonic()
        return {
            "reason": f.reason,
            "failures": f.failures,
            "for_s": round(now - f.since, 3),
            "next_probe_s": round(max(0.0, f.retry_at - now), 3),
        }

    @property
    def public_key(self) -> PublicKey:
        return self._state.signer.public

    async def close(self) -> None:
        """Commit what is queued, write a final checkpoint, and release the directory."""
        self._closing = True
        if self._task is not None:
            self._queue.append(({}, asyncio.get_running_loop().create_future()))  # wake-up sentinel
            self._wake_writer()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._pool.shutdown()
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
        fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        os.close(self._lock_fd)

    # ------------------------------------------------------------------ the writer task
    async def _run(self) -> None:
        q = self._queue
        loop = asyncio.get_running_loop()
        while True:
            if not q:
                # Idle: one future, set by the next append() or by the timer of the next deadline.
                wake = self._wake = loop.create_future()
                timer = loop.call_later(max(self._next_deadline(), 0.001), _set_none, wake)
                try:
                    await wake
                finally:
                    timer.cancel()
                    self._wake = None
                if not q:
                    if self._fault is not None:
                        await self._probe()
                    elif not self.broken:
                        await self._commit_guarded([])  # heartbeat / age-based seal / rotation
                    continue
            # (a due timer never starves queued records: they are taken first)
            batch: _Batch = []
            while q and len(batch) < self.config.batch_max:
                item = q.popleft()
                if item[0]:
                    batch.append(item)
            if batch and self.broken:  # queued before the fault: fail them now, the probe owns the disk
                _fail_waiters(batch, StorageError(f"ledger unavailable: {self.broken}"))
            elif batch:
                await self._commit_guarded(batch)
            if self._closing and not q:
                if not self.broken:
                    await self._commit_guarded([])
                return

    async def _commit_guarded(self, batch: _Batch) -> None:
        """Commit; an unexpected error fails this batch and is handled as a storage fault, never kills the task."""
        try:
            await self._commit(batch)
        except Exception as exc:
            # Nothing is known about the file after an unexpected error: cut it back to the last
            # acknowledged offset before anything else is written (the probe does that first).
            self._cut_back_to = self._state.offset
            self._storage_fault(f"writer failed: {type(exc).__name__}", exc_info=exc)
            _fail_waiters(batch, StorageError(f"ledger unavailable: {self.broken}"))

    def _storage_fault(self, reason: str, exc_info: BaseException | None = None) -> None:
        """Enter (or stay in) the broken state and schedule the next probe with exponential back-off."""
        now = time.monotonic()
        cfg = self.config
        f = self._fault
        recent = self._healed
        if (
            f is None
            and recent is not None
            and recent.healed_at is not None
            and now - recent.healed_at < 2 * cfg.retry_max_s
        ):
            # A nearly full disk takes a small checkpoint and refuses the next batch: that is the same
            # fault flapping, so its back-off keeps growing and its log lines stay rate-limited.
            f = self._fault = recent
            f.healed_at = None
        if f is None:
            f = self._fault = _Fault(reason, now)
            log.error(
                "ledger storage fault: %s; appends fail with 503 while the writer probes storage "
                "(back-off %.2f s doubling to %.0f s)",
                reason,
                cfg.retry_initial_s,
                cfg.retry_max_s,
                exc_info=exc_info,
            )
            f.logged_at = now
        else:
            f.failures += 1
            f.reason = reason
            if now - f.logged_at >= cfg.error_log_interval_s:
                log.error(
                    "ledger storage still failing after %d attempts over %.1f s (%d lines suppressed): %s",
                    f.failures,
                    now - f.since,
                    f.suppressed,
                    reason,
                )
                f.logged_at, f.suppressed = now, 0
            else:
                f.suppressed += 1
        f.retry_at = now + min(cfg.retry_max_s, cfg.retry_initial_s * 2 ** (f.failures - 1))
        self.broken = reason

    async def _probe(self) -> None:
        """Redo what failed (cut-back, segment roll), then write a checkpoint; success heals the ledger."""
        f = self._fault
        assert f is not None
        if self._cut_back_to is not None and self._fd >= 0:
            try:
                await self._in_pool(_truncate, self._fd, self._cut_back_to)
            except OSError as exc:
                self._storage_fault(f"cannot cut back the partial write: {exc.strerror or exc}")
                return
            self._cut_back_to = None
        if self._roll_at is not None:
            try:
                await self._open_next_segment(self._roll_at)
            except OSError as exc:
                self._storage_fault(f"cannot open the next segment: {exc.strerror or exc}")
                return
        failures = f.failures
        await self._commit_guarded([])  # appends keep failing fast until it is durable
        if f.failures == failures:  # no new fault: storage works
            now = time.monotonic()
            if f.heal_logged_at is None or now - f.heal_logged_at >= self.config.error_log_interval_s:
                log.warning(
                    "ledger storage works again after %d failed attempts over %.1f s; appends resume",
                    f.failures,
                    now - f.since,
                )
                f.heal_logged_at = now
            f.healed_at = now
            self._healed = f
            self._fault = None
            self.broken = None

    async def _in_pool(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self._pool.run(fn, *args)

    def _next_deadline(self) -> float:
        if self._fault is not None:
            return max(0.0, self._fault.retry_at - time.monotonic())
        st = self._state
        now = self.clock.now_ns()
        due = min(
            st.last_checkpoint_ns + int(self.config.heartbeat_s * 1e9),
            st.epoch_start_ns + int(self.config.epoch_s * 1e9),
        )
        if st.seq > st.header.first_seq:  # only a segment with records is sealed by age
            due = min(due, st.segment_start_ns + int(self.config.segment_max_age_s * 1e9))
        return max(0.0, (due - now) / 1e9)

    async def _commit(self, batch: _Batch) -> None:
        st = self._state
        cfg = self.config
        # Checkpoint times strictly increase (a seal shares its checkpoint's): (size, time) names one note.
        now = max(self.clock.now_ns(), st.last_checkpoint_ns + 1)
        seq, prev, last_ts = st.seq, st.prev, st.last_ts
        crange = st.crange.copy()
        first_hash = st.first_hash
        buf = bytearray()
        records: list[tuple[int, int, bytes]] = []
        offset = st.offset
        receipts: list[tuple[asyncio.Future[Receipt] | None, int, bytes]] = []
        leaves: list[bytes] = []  # folded into the compact range once per batch (extend_concatenated)
        version, now_ns, frame = st.version, self.clock.now_ns, framing.encode_frame

        def add_record(payload: dict[str, Any], fut: asyncio.Future[Receipt] | None) -> None:
            nonlocal seq, prev, last_ts, first_hash
            ts = max(now_ns(), last_ts)
            try:
                body = encode_record(seq, ts, prev, payload, version)
            except Exception as exc:  # SECURITY: a hostile value fails its own append, never the writer
                self._reject(fut, f"record cannot be encoded: {str(exc)[:200]}")
                return
            if len(body) > cfg.record_max_bytes:
                self._reject(fut, f"record of {len(body)} bytes is over the limit of {cfg.record_max_bytes}")
                return
            leaf = record_hash(body)
            records.append((seq, offset + len(buf), body))
            buf.extend(frame(framing.RECORD, body))
            leaves.append(leaf)
            receipts.append((fut, seq, leaf))
            if first_hash is None:
                first_hash = leaf
            prev, last_ts = leaf, ts
            seq += 1

        for payload, fut in batch:
            add_record(payload, fut)
        if batch and not receipts:
            return  # every record was refused: nothing to write
        new_signer: Signer | None = None
        if now - st.epoch_start_ns >= cfg.epoch_s * 1e9:
            try:
                new_signer = self.keys.create(st.signer.public.epoch + 1)
            except StorageError as exc:
                log.error("key rotation failed, keeping the current key: %s", exc)
            else:
                add_record(
                    IdentityEvent(
                        EventType.KEY_ROTATED,
                        Outcome.SUCCEEDED,
                        details={
                            "key": new_signer.public.to_json(),
                            "epoch": new_signer.public.epoch,
                            "previous": st.signer.public.to_json(),
                        },
                    ).to_json(),
                    None,
                )
        if len(leaves) == 1:  # one appender: one leaf per commit, no concatenated buffer to hash
            crange.append(leaves[0])
        else:
            crange.extend_concatenated(b"".join(leaves))
        root = crange.root()
        digest = st.digest.copy() if st.digest is not None else None
        if digest is not None:
            digest.update(buf)
        checkpoint = _signed_note((self.origin, seq, root, now), st.signer, st.header, digest, offset + len(buf))
        cp_frame = framing.encode_frame(framing.CHECKPOINT, checkpoint)
        buf.extend(cp_frame)
        if digest is not None:
            digest.update(cp_frame)
        # A rotation ends the segment (kc-ledger/2): no record may follow a key.rotated record under
        # the retired key, and the seal is signed by the segment's own (outgoing) key.
        seal = (
            new_signer is not None
            or offset + len(buf) >= cfg.segment_max_bytes
            or now - st.segment_start_ns >= cfg.segment_max_age_s * 1e9
        ) and seq > st.header.first_seq
        if seal:
            assert first_hash is not None
            # The seal repeats the digest of the policy the segment was opened under (its header's).
            seal_line = Seal(st.segment, st.header.first_seq, seq - 1, first_hash, prev, st.header.policy)
            # kc-ledger/1 only: after a rotation's checkpoint the new key is in force and signs the seal.
            sealer = new_signer if new_signer is not None and st.version < 2 else st.signer
            seal_frame = _note_frame(
                framing.SEAL,
                (self.origin, seq, root, now, seal_line),
                sealer,
                st.header,
                digest,
                offset + len(buf),
            )
            buf.extend(seal_frame)
            if digest is not None:
                digest.update(seal_frame)
        try:
            await self._write(bytes(buf), offset)
        except StorageError as exc:
            self._fail(batch, exc, offset)
            if new_signer is not None:
                self.keys.destroy(new_signer.public.epoch)
            return
        # durable: advance the state, then release the waiters
        st.seq, st.prev, st.last_ts, st.crange, st.first_hash = seq, prev, last_ts, crange, first_hash
        st.digest = digest
        st.offset = offset + len(buf)
        st.last_checkpoint_ns = now
        for fut, r_seq, r_hash in receipts:
            if fut is not None and not fut.done():
                fut.set_result(Receipt(r_seq, r_hash, seq))
        if new_signer is not None:
            old_epoch = st.signer.public.epoch
            st.signer = new_signer
            st.epoch_start_ns = now
            self.keys.destroy(old_epoch)
            log.info("signing key rotated to epoch %d; epoch %d key destroyed", new_signer.public.epoch, old_epoch)
        commit = Commit(st.segment, tuple(records), checkpoint, seal, st.offset)
        if seal:
            self._close_sealed()
            try:
                await self._open_next_segment(now)
            except OSError as exc:  # the batch is durable; the next segment cannot be opened (yet)
                self._storage_fault(f"cannot open the next segment: {exc.strerror or exc}")
        for sub in self.subscribers:
            try:
                sub(commit)
            except Exception:  # a subscriber must never break the write path
                log.exception("ledger subscriber failed")

    async def _write(self, data: bytes, offset: int) -> None:
        if self._fd < 0:
            raise StorageError("WAL write failed: no open segment")
        try:
            await self._in_pool(self.write_at, self._fd, data, offset, self.config.fsync)
        except OSError as exc:
            raise StorageError(f"WAL write failed: {exc.strerror or exc}") from exc

    def _reject(self, fut: asyncio.Future[Receipt] | None, reason: str) -> None:
        """Refuse one record to its own caller; the batch and the writer go on."""
        self.rejected += 1
        if fut is not None and not fut.done():
            fut.set_exception(RecordRejected(reason))

    def _fail(self, batch: _Batch, exc: StorageError, offset: int) -> None:
        """A write failed: cut the file back to the last acknowledged offset, fail the batch, enter the fault."""
        try:
            if self._fd >= 0:
                _truncate(self._fd, offset)
        except OSError as exc2:
            self._cut_back_to = offset  # the probe retries the cut-back before anything else is written
            self._storage_fault(f"{exc}; could not cut back the partial write: {exc2.strerror or exc2}")
        else:
            self._storage_fault(str(exc))
        _fail_waiters(batch, StorageError(str(exc)))

    def _close_sealed(self) -> None:
        """Close the segment just sealed and make it read-only; its successor is opened next."""
        st = self._state
        os.close(self._fd)
        self._fd = -1
        self._roll_at = self.clock.now_ns()
        with contextlib.suppress(OSError):  # read-only is a courtesy; the seal is what protects it
            os.chmod(self.data_dir / SEGMENT_DIR / segment_name(st.segment), 0o444)

    async def _open_next_segment(self, now: int) -> None:
        st = self._state
        # The opening checkpoint has the seal's size: a later time keeps its store key its own.
        now = max(now, st.last_checkpoint_ns + 1)
        new = _new_segment_state(
            st.segment + 1,
            st.seq,
            st.prev,
            st.crange,
            st.signer,
            self.origin,
            self.policy_digest,
            now,
            st.epoch_start_ns,
            st.last_ts,
        )
        new.last_checkpoint_ns = now
        self._fd = await self._in_pool(_create_segment, self.data_dir / SEGMENT_DIR, new, now)
        self._state = new
        self._roll_at = None


def _set_none(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _FileThread:
    """The ledger's one thread for blocking file calls (pwrite + fdatasync, truncate, a new segment).

    One hand-off each way: the job goes on a deque and an eventfd wakes the thread, and its result
    comes back with a single `call_soon_threadsafe` that resolves the awaiting future (no executor
    work item, no concurrent future chained to an asyncio one). Jobs run one at a time, in order.
    The wake-up is a write to the eventfd because `os.eventfd_write` lets go of the GIL around the
    system call: the woken thread can take the GIL at once instead of waiting for the event loop to
    be scheduled again (a lock-based queue wakes it while the loop still holds the GIL).
    """

    def __init__(self) -> None:
        self._jobs: collections.deque[tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any]] | None] = (
            collections.deque()
        )
        self._thread: threading.Thread | None = None
        self._wake_fd = -1

    def run(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self._thread is None:
            self._wake_fd = os.eventfd(0, os.EFD_CLOEXEC)
            self._thread = threading.Thread(target=self._work, args=(self._wake_fd,), name="ledger-fsync", daemon=True)
            self._thread.start()
        self._jobs.append((fn, args, fut))
        os.eventfd_write(self._wake_fd, 1)
        return fut

    def _work(self, wake_fd: int) -> None:
        jobs = self._jobs
        while True:
            os.eventfd_read(wake_fd)  # blocks (without the GIL) until at least one job was queued
            while jobs:
                job = jobs.popleft()
                if job is None:
                    return
                fn, args, fut = job
                loop = fut.get_loop()
                try:
                    result, exc = fn(*args), None
                except BaseException as error:  # handed to the awaiting task, which decides
                    result, exc = None, error
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                    loop.call_soon_threadsafe(_resolve, fut, result, exc)

    def shutdown(self) -> None:
        """Finish the queued jobs and end the thread."""
        if self._thread is not None:
            self._jobs.append(None)
            os.eventfd_write(self._wake_fd, 1)
            self._thread.join()
            self._thread = None
            os.close(self._wake_fd)
            self._wake_fd = -1


def _resolve(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if fut.done():  # the awaiting task was cancelled
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


def _fail_waiters(batch: _Batch, exc: Exception) -> None:
    for _payload, fut in batch:
        if fut is not None and not fut.done():
            fut.set_exception(exc)


def _truncate(fd: int, offset: int) -> None:
    os.ftruncate(fd, offset)
    os.fsync(fd)


def _write_at(fd: int, data: bytes, offset: int, do_fsync: bool) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n
    if do_fsync:
        os.fdatasync(fd)


def _new_segment_state(
    number: int,
    seq: int,
    prev: bytes,
    crange: CompactRange,
    signer: Signer,
    origin: str,
    policy: str,
    now: int,
    epoch_start: int,
    last_ts: int,
) -> _State:
    header = SegmentHeader(origin, number, seq, prev, tuple(crange.hashes), signer.public, policy, now)
    return _State(seq, prev, crange.copy(), number, 0, header, None, last_ts, signer, epoch_start, now, now)


# A checkpoint's (origin, size, root, time) and, for a seal, its seal line; the note adds the segment line.
_NoteParts = tuple[str, int, bytes, int] | tuple[str, int, bytes, int, Seal]


def _note_frame(kind: int, cp: _NoteParts, signer: Signer, header: SegmentHeader, digest: Any, offset: int) -> bytes:
    """A signed checkpoint or seal frame at `offset`; in kc-ledger/2 it signs `digest` (the bytes before it)."""
    return framing.encode_frame(kind, _signed_note(cp, signer, header, digest, offset))


def _signed_note(cp: _NoteParts, signer: Signer, header: SegmentHeader, digest: Any, offset: int) -> bytes:
    # Built once with its segment line (kc-ledger/2), not built and then copied with one field replaced.
    seal = cp[4] if len(cp) == 5 else None
    segment = SegmentBytes(header.segment, offset, digest.digest()) if header.version >= 2 else None
    return sign_note(Checkpoint(cp[0], cp[1], cp[2], cp[3], seal, segment).body(), signer)


def _create_segment(seg_dir: Path, state: _State, now: int) -> int:
    """Create the segment file: its header and the opening checkpoint that signs it, in one write."""
    path = seg_dir / segment_name(state.header.segment)
    head = framing.encode_frame(framing.HEADER, state.header.encode())
    digest = hashlib.sha256(head)
    opening = _note_frame(
        framing.CHECKPOINT,
        (state.header.origin, state.seq, state.crange.root(), now),
        state.signer,
        state.header,
        digest,
        len(head),
    )
    digest.update(opening)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        _write_at(fd, head + opening, 0, True)
        fsync_dir(seg_dir)
    except OSError:
        # A half-made successor (disk full mid-header) goes, so the next attempt can create it again.
        os.close(fd)
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    state.offset = len(head) + len(opening)
    state.digest = digest
    return fd


_Recovered = tuple["_State", int, dict[str, Any] | None, list[tuple[Signer, PublicKey]], bool]


def _recover(
    seg_dir: Path, last: int, keys: KeyStore, origin: str, policy: str, now: int, config: LedgerConfig
) -> _Recovered | None:
    """Reopen the newest segment, cutting a torn tail; see the module docstring."""
    path = seg_dir / segment_name(last)
    data = path.read_bytes()
    scan = scan_segment(path.name, data)
    h = scan.header
    if h is None:
        if all(b == 0 for b in data) or (
            scan.findings and scan.findings[0].code == "header-missing" and len(data) < framing.OVERHEAD + 4096
        ):
            # The crash hit while the header of a fresh segment was being written.
            path.unlink()
            if last == 0:
                return None  # nothing was ever written: start the ledger afresh
            return _recover(seg_dir, last - 1, keys, origin, policy, now, config)
        raise IntegrityError(f"{path}: {scan.findings[0]}")
    cut: dict[str, Any] | None = None
    if scan.damage is not None:
        if not scan.damage.torn:
            raise IntegrityError(
                f"{path}: damage that is not a torn tail, refusing to start: {scan.damage.reason} "
                f"at offset {scan.damage.offset}; run `sidecar verify`"
            )
        cut = {
            "segment": last,
            "offset": scan.damage.offset,
            "bytes_cut": len(data) - scan.damage.offset,
            "reason": scan.damage.reason,
        }
        with open(path, "r+b") as f:
            f.truncate(scan.damage.offset)
            f.flush()
            os.fsync(f.fileno())
        data = data[: scan.damage.offset]
        scan = scan_segment(path.name, data)
    # A torn tail and whole records without a checkpoint are what a crash leaves; recovery repairs both.
    serious = [f for f in scan.findings if f.code not in ("frame-damaged", "unsigned-tail")]
    if serious:
        raise IntegrityError(f"{path}: {serious[0]}; refusing to start, run `sidecar verify`")
    assert scan.header is not None
    h = scan.header
    size = h.first_seq + scan.records
    crange = CompactRange(0, h.first_seq, h.range)
    crange.merge(CompactRange(h.first_seq, size, scan.end_range))
    assert scan.end_key is not None
    covered = max((c.checkpoint.size for c in scan.checkpoints if c.checkpoint), default=h.first_seq)
    v2 = h.version >= 2
    # kc-ledger/2: a key.rotated record ends its segment, and the next segment is the new key's.
    rotated = scan.rotations[-1][1] if v2 and scan.rotations else None
    seal_needed = rotated is not None and not scan.sealed
    pending: list[tuple[Signer, PublicKey]] = []
    in_force = rotated or scan.pending_key or scan.end_key
    if size > covered or scan.pending_key is not None or seal_needed:
        # Whole records a crash left without a checkpoint, or a rotation without its seal: sign with
        # the key of the segment (kc-ledger/1: the key in force), which then hands over to the new key.
        pending.append((keys.load(scan.end_key.epoch), in_force))
        if cut is not None and size > covered:
            cut["records_without_checkpoint"] = size - covered
    signer = keys.load(in_force.epoch)
    if signer.public != in_force:
        raise IntegrityError(f"{path}: the key on disk ({signer.name}) is not the key in force")
    for epoch in keys.epochs():  # keys from an interrupted rotation, or not yet destroyed
        if epoch > signer.public.epoch or (epoch < signer.public.epoch and not pending):
            keys.destroy(epoch)
    state = _State(
        size,
        scan.last_hash or h.prev,
        crange,
        last,
        len(data),
        h,
        scan.first_hash,
        scan.last_ts if scan.last_ts is not None else -1,
        signer,
        now,
        h.created_ns,
        now,
        digest=hashlib.sha256(data) if v2 else None,
    )
    if scan.checkpoints and scan.checkpoints[-1].checkpoint is not None:
        state.last_checkpoint_ns = scan.checkpoints[-1].checkpoint.time_ns
    if not scan.sealed:
        fd = os.open(path, os.O_RDWR)
    else:  # a crash came between the seal and the next segment: start that segment now
        now = max(now, state.last_checkpoint_ns + 1)
        new = _new_segment_state(last + 1, size, state.prev, crange, signer, origin, policy, now, now, state.last_ts)
        fd = _create_segment(seg_dir, new, now)
        state = new
    return state, fd, cut, pending, seal_needed
