"""The witness client: gets the ledger's checkpoints cosigned, never on the request path.

It follows the writer's commits (like the replicator): each commit's checkpoint becomes
the newest one to witness. A task submits it to every witness at once with the C2SP
`add-checkpoint` call, `old` being the size that witness last cosigned and the RFC 6962
consistency proof from there (on a 409 it learns the witness's size and retries). Before
submitting, it adds the log witness key's signature line: witnesses know the log by that
long-lived key, since the epoch keys change (docs/format.md §14.1).

Cosigned checkpoints are kept as `witness/<size:012d>-<time:020d>.note` in the data
directory (written to a temporary name, fsynced, renamed) and, when a store is given,
put there under the same key, write-once. A witness that is down or refuses is retried
with exponential backoff (0.5 s to 30 s); appends never wait for witnesses. `status()`
says, per witness, the size it cosigned and the last error, and whether the newest
checkpoint has waited longer than `stale_after_s` for its quorum (health turns not-ready).

Memory: the leaf hashes of the whole ledger (32 bytes per record) are kept to build
consistency proofs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from sidecar.core import framing, merkle
from sidecar.core.keys import Signer
from sidecar.core.note import Note, NoteError, parse_note, sign_note
from sidecar.core.record import record_hash
from sidecar.core.segment import SEGMENT_DIR, segment_number
from sidecar.core.witness import (
    Witness,
    WitnessError,
    add_checkpoint_body,
    cosignature_lines,
    count_cosignatures,
    parse_size_body,
)
from sidecar.ledger.writer import Commit

log = logging.getLogger("sidecar.witness")
WITNESS_DIR = "witness"


def witnessed_name(size: int, time_ns: int) -> str:
    return f"{WITNESS_DIR}/{size:012d}-{time_ns:020d}.note"


@dataclass(slots=True)
class _Peer:
    witness: Witness
    size: int | None = None  # the size it last cosigned (for anyone), once known: the `old` line
    done: int = -1  # the largest of our checkpoints' sizes it cosigned
    ahead: bool = False  # it has cosigned more than this ledger holds: a cut or a rollback here
    error: str = ""
    backoff_s: float = 0.0
    retry_at: float = 0.0
    submitted: int = 0


@dataclass(slots=True)
class _Head:
    note: bytes  # the checkpoint as the ledger wrote it
    size: int
    time_ns: int


@dataclass
class WitnessClient:
    data_dir: Path
    witnesses: list[Witness]
    log_signer: Signer
    quorum: int = 1
    timeout_s: float = 5.0
    stale_after_s: float = 60.0
    min_interval_s: float = 1.0  # at most one submission round per interval (one witnessed file per round)
    store: Any = None  # an ObjectStore, or None
    monotonic: Callable[[], float] = time.monotonic
    _leaves: list[bytes] = field(default_factory=list)
    _head: _Head | None = None
    _cosigned: int = -1  # largest size with a quorum of cosignatures
    _waiting_since: float | None = None  # when the newest uncosigned checkpoint appeared

    def __post_init__(self) -> None:
        if not self.witnesses:
            raise ValueError("a witness client needs at least one witness")
        if not 1 <= self.quorum <= len(self.witnesses):
            raise ValueError(f"quorum {self.quorum} is not between 1 and {len(self.witnesses)}")
        self._peers = [_Peer(w) for w in self.witnesses]
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._puts: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._load()

    # ------------------------------------------------------------------ following the ledger
    def _load(self) -> None:
        """Leaf hashes and the newest checkpoint already in the segment files."""
        seg_dir = self.data_dir / SEGMENT_DIR
        paths = sorted(p for p in seg_dir.iterdir() if segment_number(p.name) is not None) if seg_dir.is_dir() else []
        newest: bytes | None = None
        for path in paths:
            for frame in framing.iter_frames(path.read_bytes()):
                if isinstance(frame, framing.FrameDamage):
                    break
                if frame.kind == framing.RECORD:
                    self._leaves.append(record_hash(frame.body))
                elif frame.kind in (framing.CHECKPOINT, framing.SEAL):
                    newest = frame.body
        if newest is not None:
            self._set_head(newest)

    def on_commit(self, commit: Commit) -> None:
        """Ledger subscriber (runs in the writer task after the fsync): cheap, never raises."""
        self._leaves.extend(record_hash(body) for _seq, _off, body in commit.records)
        self._set_head(commit.checkpoint)
        self._wake.set()

    def _set_head(self, note: bytes) -> None:
        try:
            cp = parse_note(note).checkpoint
        except NoteError:
            return
        if cp.size > len(self._leaves):
            return
        if self._head is None or cp.size > self._head.size:
            self._head = _Head(note, cp.size, cp.time_ns)
            if cp.size > self._cosigned and self._waiting_since is None:
                self._waiting_since = self.monotonic()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        self._task = asyncio.get_running_loop().create_task(self._run(), name="witness-client")
        self._wake.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._puts:
            await asyncio.gather(*self._puts, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the cancel that close() sends.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._next_wait()):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.step()
            except Exception:  # the client must never die; the next step retries
                log.exception("witness step failed")
            await asyncio.sleep(self.min_interval_s)

    def _next_wait(self) -> float:
        now = self.monotonic()
        pending = [p.retry_at - now for p in self._peers if p.error]
        return max(0.05, min(pending, default=30.0))

    async def step(self) -> None:
        """Submit the newest checkpoint to every witness that has not cosigned it yet."""
        head = self._head
        if head is None:
            return
        now = self.monotonic()
        due = [p for p in self._peers if p.done < head.size and p.retry_at <= now]
        if not due:
            return
        note = self._witness_note(head.note)
        results = await asyncio.gather(*(self._submit(p, head, note) for p in due))
        # Kept even without cosignatures: what was submitted is evidence too (a refused history).
        self._keep(head, note + b"".join(r for r in results if r))

    def _witness_note(self, note: bytes) -> bytes:
        """The checkpoint with the log witness key's signature line added (the body is unchanged)."""
        body = parse_note(note).body
        return note + sign_note(body, self.log_signer)[len(body) + 1 :]

    async def _submit(self, peer: _Peer, head: _Head, note: bytes) -> bytes:
        assert self._session is not None
        w = peer.witness
        if w.url is None:
            return b""
        try:
            for _attempt in range(3):
                old = peer.size if peer.size is not None and peer.size <= head.size else 0
                proof = merkle.consistency_proof(old, self._leaves[: head.size]) if old else []
                body = add_checkpoint_body(old, proof, note)
                async with self._session.post(f"{w.url}/add-checkpoint", data=body) as resp:
                    answer = await resp.read()
                    if resp.status == 409:
                        peer.size = parse_size_body(answer)
                        peer.ahead = peer.size > head.size
                        if peer.ahead:
                            raise WitnessError(
                                f"witness has cosigned size {peer.size}, larger than the ledger's {head.size}"
                            )
                        continue
                    if resp.status != 200:
                        raise WitnessError(f"add-checkpoint answered {resp.status}")
                    lines = cosignature_lines(answer, w, note)
                    peer.size, peer.done, peer.error, peer.backoff_s, peer.retry_at = head.size, head.size, "", 0.0, 0.0
                    peer.ahead = False
                    peer.submitted += 1
                    return lines
            raise WitnessError("the witness's size kept changing")
        except (aiohttp.ClientError, TimeoutError, WitnessError, ValueError) as exc:
            peer.error = f"{type(exc).__name__}: {exc}"[:200]
            peer.backoff_s = min(30.0, max(0.5, peer.backoff_s * 2))
            peer.retry_at = self.monotonic() + peer.backoff_s
            log.warning("witness %s: %s (retry in %.1f s)", w.name, peer.error, peer.backoff_s)
            return b""

    def _keep(self, head: _Head, note: bytes) -> None:
        """Store the cosigned checkpoint locally (atomic) and note the quorum."""
        try:
            parsed: Note = parse_note(note)
        except NoteError:
            return
        name = witnessed_name(head.size, head.time_ns)
        path = self.data_dir / name
        path.parent.mkdir(exist_ok=True)
        existing = path.read_bytes() if path.exists() else None
        if existing is not None:  # several rounds for one checkpoint: keep every cosignature
            extra = b"".join(s.line() for s in parsed.signatures if s.line() not in existing)
            note = existing + extra
            parsed = parse_note(note)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(note)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        if len(count_cosignatures(parsed, self.witnesses)) >= self.quorum and head.size > self._cosigned:
            self._cosigned = head.size
            self._waiting_since = None if self._head is None or self._head.size <= head.size else self.monotonic()
        if self.store is not None:
            task = asyncio.get_running_loop().create_task(self._put(name, note))
            self._puts.add(task)
            task.add_done_callback(self._put_done)

    async def _put(self, key: str, data: bytes) -> None:
        # Write-once: a later, fuller copy of the same checkpoint goes under a new key.
        stamp = f"{key[:-5]}-{len(data):06d}.note"
        await self.store.put(stamp, data)

    def _put_done(self, task: asyncio.Task[None]) -> None:
        self._puts.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("witnessed checkpoint not replicated: %s", task.exception())

    # ------------------------------------------------------------------ health
    def status(self) -> dict[str, Any]:
        waited = self.monotonic() - self._waiting_since if self._waiting_since is not None else 0.0
        head = self._head.size if self._head else 0
        return {
            "quorum": self.quorum,
            "head_size": head,
            "cosigned_size": max(self._cosigned, 0),
            "uncosigned_for_s": round(waited, 1),
            "stale_after_s": self.stale_after_s,
            "ready": waited <= self.stale_after_s,
            "witnesses": [
                {"name": p.witness.name, "size": p.size, "cosigned": p.done, "error": p.error} for p in self._peers
            ],
        }

    def not_ready_reason(self) -> str | None:
        ahead = [p for p in self._peers if p.ahead]
        if ahead:  # SECURITY: this ledger is shorter than what a witness saw: cut, rolled back or forked
            return f"witness {ahead[0].witness.name} has cosigned size {ahead[0].size}, more than this ledger holds"
        st = self.status()
        if st["ready"]:
            return None
        return (
            f"checkpoint of size {st['head_size']} has waited {st['uncosigned_for_s']} s for {self.quorum} "
            f"witness cosignature(s) (limit {self.stale_after_s} s)"
        )
