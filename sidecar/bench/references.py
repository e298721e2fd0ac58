"""The reference loops every figure is compared with: Ed25519 sign and verify, this disk's fsync of a
small append, SHA-256 per record body, the signature trade-off and the record encoder's own rate."""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sidecar.bench.common import percentile
from sidecar.core import framing
from sidecar.core.record import encode_record, record_hash


def rates(step: Callable[[], int], seconds: float) -> tuple[float, float]:
    """Call `step` (some work; returns how many operations) for ~seconds: (ops per wall s, ops per CPU s)."""
    done = 0
    began, cpu0 = time.perf_counter(), time.process_time()
    deadline = began + seconds
    while True:
        done += step()
        now = time.perf_counter()
        if now >= deadline:
            cpu = time.process_time() - cpu0
            return done / (now - began), (done / cpu if cpu > 0 else 0.0)


def timed_loop(step: Callable[[], int], seconds: float) -> float:
    """ops per wall-clock second of `step`, run for ~seconds."""
    return rates(step, seconds)[0]


def ed25519_sign_rate(seconds: float = 1.0, *, per_cpu_second: bool = False) -> float:
    """Single-core Ed25519 signatures per second over a 32-byte message (a hash or a Merkle root).

    Per wall-clock second, or with `per_cpu_second` per second of this process' CPU time (which
    does not change when other work on the machine takes CPU away).
    """
    key = Ed25519PrivateKey.generate()
    msg = hashlib.sha256(b"bench").digest()
    sign = key.sign

    def step() -> int:
        for _ in range(200):
            sign(msg)
        return 200

    wall, cpu = rates(step, seconds)
    return cpu if per_cpu_second else wall


def ed25519_verify_rate(seconds: float = 1.0) -> float:
    """Single-core Ed25519 verifications per second over a 32-byte message."""
    key = Ed25519PrivateKey.generate()
    msg = hashlib.sha256(b"bench").digest()
    sig = key.sign(msg)
    verify = key.public_key().verify

    def step() -> int:
        for _ in range(50):
            verify(sig, msg)
        return 50

    return timed_loop(step, seconds)


class FsyncProbe:
    """This disk's latency of one small durable append: write(size bytes) + fdatasync, on a growing file.

    The same system calls the ledger makes per commit (pwrite at the end of the segment, then
    fdatasync). The probe file lives in the directory measured; `sample(n)` adds n timings, so
    a benchmark can take them in small blocks between its own measurements (the disk is shared
    and its latency drifts). Close it to remove the file.
    """

    def __init__(self, directory: Path, size: int = 400) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._fd, self._name = tempfile.mkstemp(prefix=".fsync-probe-", dir=directory)
        self._data = os.urandom(size)
        self.size = size
        self.times_us: list[float] = []
        for _ in range(20):  # warm-up: first extents, journal
            os.write(self._fd, self._data)
            os.fdatasync(self._fd)

    def sample(self, n: int = 10) -> None:
        for _ in range(n):
            t0 = time.perf_counter_ns()
            os.write(self._fd, self._data)
            os.fdatasync(self._fd)
            self.times_us.append((time.perf_counter_ns() - t0) / 1000)

    def summary(self) -> dict[str, float]:
        return {
            "p50_us": percentile(self.times_us, 50),
            "p99_us": percentile(self.times_us, 99),
            "samples": len(self.times_us),
            "bytes": self.size,
        }

    def close(self) -> None:
        os.close(self._fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._name)


def sha256_record_rate(bodies: Sequence[bytes], seconds: float = 1.0) -> float:
    """Single-core records/s of the bare loop `sha256(body)` over record bodies already in memory."""
    if not bodies:
        return 0.0
    sha = hashlib.sha256

    def step() -> int:
        for body in bodies:
            sha(body).digest()
        return len(bodies)

    return timed_loop(step, seconds)


def signing_tradeoff(bodies: Sequence[bytes], seconds: float = 1.0, batch: int = 100) -> dict[str, float]:
    """Records/s of leaf hash + signature on every record, against leaf hash + one signature per batch."""
    key = Ed25519PrivateKey.generate()
    sign = key.sign
    sample = list(bodies[:5000]) or [b"{}"]

    def every_record() -> int:
        for body in sample:
            sign(record_hash(body))
        return len(sample)

    def per_batch() -> int:
        leaf = b""
        for n, body in enumerate(sample, 1):
            leaf = record_hash(body)
            if n % batch == 0:
                sign(leaf)  # stands for the checkpoint over the batch's Merkle root
        return len(sample)

    each = timed_loop(every_record, seconds)
    batched = timed_loop(per_batch, seconds)
    return {
        "sign_every_record_per_s": each,
        f"sign_per_{batch}_per_s": batched,
        "batch": batch,
        "speedup": batched / each if each else 0.0,
        "sign_cost_us_per_record_every": 1e6 / each if each else 0.0,
        "sign_cost_us_per_record_batched": 1e6 / batched if batched else 0.0,
    }


def encode_rate(events: Sequence[dict[str, Any]], seconds: float = 1.0) -> float:
    """Records/s of the ledger's own record encoding (`encode_record`: canonical check + orjson)."""
    sample = list(events[:5000]) or [{}]
    prev = bytes(32)

    def step() -> int:
        for n, event in enumerate(sample):
            encode_record(n, 1_764_000_000_000_000_000 + n, prev, event)
        return len(sample)

    return timed_loop(step, seconds)


_FRAME_HEAD = struct.Struct(">BI")  # sidecar.core.framing: kind, body length; a CRC-32 follows the body


def _walk_and_hash(path: str) -> int:
    """The bare loop: read one segment file, walk its frames, SHA-256 each record body once."""
    data = Path(path).read_bytes()
    view = memoryview(data)
    unpack = _FRAME_HEAD.unpack_from
    sha = hashlib.sha256
    head, record = _FRAME_HEAD.size, framing.RECORD
    pos, end, count = 0, len(data), 0
    while pos + head <= end:
        kind, length = unpack(data, pos)
        start = pos + head
        if kind == record:
            sha(view[start : start + length]).digest()
            count += 1
        pos = start + length + 4
    return count


def read_walk_hash_rate(paths: Sequence[Path], workers: int) -> tuple[float, int]:
    """(records/s, records) of the bare loop over `paths` with `workers` processes, pool start included.

    The reference of the verification target (brief §9): what reading the same segment files, walking
    their frames and hashing each record body once costs on all cores, with nothing else checked.
    """
    t0 = time.perf_counter()
    if workers > 1 and len(paths) > 1:  # as the verifier runs its workers (sidecar/audit/verifier.py)
        with ProcessPoolExecutor(min(workers, len(paths))) as pool:
            count = sum(pool.map(_walk_and_hash, [str(p) for p in paths], chunksize=1))
    else:
        count = sum(_walk_and_hash(str(p)) for p in paths)
    elapsed = time.perf_counter() - t0
    return (count / elapsed if elapsed else 0.0), count
