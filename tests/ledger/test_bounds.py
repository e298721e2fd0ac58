"""The writer is bounded and cannot be broken by input: a full queue is a 503, a bad record fails alone,
a storage fault backs off and heals, and idle ledgers keep checkpointing."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sidecar.capture.hooks import LedgerHooks
from sidecar.core import framing
from sidecar.errors import OverloadError
from sidecar.ledger.keystore import KeyStore
from sidecar.ledger.writer import Ledger, LedgerConfig


async def test_full_queue_raises_overload_at_once(tmp_path: Path) -> None:
    """With the queue full, append raises OverloadError with a Retry-After hint instead of waiting or growing."""
    KeyStore(tmp_path).init("bounds.test/ledger")
    ledger = await Ledger.open(tmp_path, config=LedgerConfig(queue_max=4), start_task=False)
    waiting = [
        asyncio.ensure_future(ledger.append({"type": "login.succeeded", "outcome": "succeeded"})) for _ in range(4)
    ]
    await asyncio.sleep(0)
    with pytest.raises(OverloadError) as err:
        await ledger.append({"type": "login.succeeded", "outcome": "succeeded"})
    assert err.value.retry_after >= 1 and "queue full" in str(err.value)
    ledger.start()  # the writer drains what was accepted: nothing accepted is lost
    receipts = await asyncio.gather(*waiting)
    assert sorted(r.seq for r in receipts) == [1, 2, 3, 4]
    await ledger.close()


async def test_overload_becomes_pushback_for_admin_changes(tmp_path: Path) -> None:
    """The capture hooks turn an overloaded ledger into a 503 Pushback for a mutating admin request."""
    from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

    from sidecar.capture.sessions import SessionDirectory
    from sidecar.capture.tokens import TokenVerifier
    from sidecar.core.exchange import Pushback, RequestHead, RequestView
    from sidecar.policy.schema import load_policy

    async def overloaded(event: object) -> object:
        raise OverloadError("ledger queue full (4 waiting)", retry_after=2)

    async def no_jwks(realm: str) -> None:
        return None

    async def no_whoami(realm: str, token: str, username: str | None, sid: str | None, client: str | None) -> None:
        return None

    hooks = LedgerHooks(
        overloaded, load_policy(), TokenVerifier(no_jwks), SessionDirectory(b"k" * 32), no_whoami, b"f" * 32
    )
    head = RequestHead(
        "POST",
        "/admin/realms/r/users/u1/role-mappings/realm",
        "/admin/realms/r/users/u1/role-mappings/realm",
        MultiDictProxy(MultiDict()),
        CIMultiDictProxy(CIMultiDict({"Content-Type": "application/json"})),
        "127.0.0.1",
        "http",
        "h",
        "rid",
    )
    answer = await hooks.before_forward(RequestView(head, b'[{"id":"x","name":"viewer"}]', False))
    assert isinstance(answer, Pushback) and answer.retry_after == 2


async def test_idle_ledger_writes_heartbeat_checkpoints(tmp_path: Path) -> None:
    """With nothing to append, the writer still signs a checkpoint every heartbeat, so silence is provable."""
    KeyStore(tmp_path).init("bounds.test/ledger")
    ledger = await Ledger.open(tmp_path, config=LedgerConfig(heartbeat_s=0.05))
    await asyncio.sleep(0.4)
    await ledger.close()
    data = (tmp_path / "segments" / "00000000.seg").read_bytes()
    kinds = [f.kind for f in framing.iter_frames(data) if isinstance(f, framing.Frame)]
    assert kinds.count(framing.RECORD) == 1  # ledger.started only
    assert kinds.count(framing.CHECKPOINT) >= 4, "a checkpoint per heartbeat while idle"


# ---------------------------------------------------------------------------- input never breaks the writer
_NEST: list[object] = []
for _ in range(5000):  # deeper than Python's recursion limit: the encoder must not take the writer down
    _NEST = [_NEST]
_HOSTILE: list[tuple[str, object]] = [
    ("float", {"sub": 1.5}),
    ("integer beyond 2^53", {"sub": 2**53 + 1}),
    ("non-ASCII key", {"süb": "x"}),
    ("non-string key", {1: "x"}),
    ("lone surrogate", {"sub": "\ud800"}),
    ("deep nesting", _NEST),
    ("oversize", {"claim": "x" * (300 * 1024)}),
    ("unknown type", {"when": object()}),
]


async def test_unencodable_records_fail_only_their_own_append(tmp_path: Path) -> None:
    """Each record that cannot be encoded raises RecordRejected to its caller while good records of the same batch commit."""
    from sidecar.audit.verifier import verify_directory
    from sidecar.errors import RecordRejected

    KeyStore(tmp_path).init("bounds.test/ledger")
    ledger = await Ledger.open(tmp_path, config=LedgerConfig(record_max_bytes=256 * 1024), start_task=False)
    good = [{"type": "login.succeeded", "outcome": "succeeded", "details": {"i": i}} for i in range(3)]
    bad = [{"type": "token.revoked", "outcome": "failed", "details": value} for _, value in _HOSTILE]
    # Interleaved in one batch: the writer task is started only after all of them are queued.
    tasks = [asyncio.ensure_future(ledger.append(p)) for pair in zip(good, bad[:3], strict=True) for p in pair]
    tasks += [asyncio.ensure_future(ledger.append(p)) for p in bad[3:]]
    await asyncio.sleep(0)
    ledger.start()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    kinds = [type(r).__name__ for r in results]
    assert kinds[0:6:2] == ["Receipt"] * 3, kinds
    rejected = [results[1], results[3], results[5], *results[6:]]
    for (name, _), result in zip(_HOSTILE, rejected, strict=True):
        assert isinstance(result, RecordRejected), f"{name}: {result!r}"
    assert "over the limit" in str(rejected[-2]) and "float" in str(rejected[0])
    assert ledger.broken is None and ledger.rejected == len(_HOSTILE)
    after = await ledger.append({"type": "login.succeeded", "outcome": "succeeded"})
    assert after.seq == 4  # ledger.started, three good records, then this one: no gap, no hole
    await ledger.close()
    report = verify_directory(tmp_path, KeyStore(tmp_path).trust(), workers=1)
    assert report.ok, [str(f) for f in report.findings]


# ---------------------------------------------------------------------------- storage faults back off and heal
class _Disk:
    """A faulting twin of the writer's pwrite+fdatasync seam: ENOSPC while `full`, counting attempts."""

    def __init__(self, real: Callable[[int, bytes, int, bool], None]) -> None:
        self.real = real
        self.full = False
        self.attempts = 0
        self.failed = 0

    def __call__(self, fd: int, data: bytes, offset: int, do_fsync: bool) -> None:
        self.attempts += 1
        if self.full:
            self.failed += 1
            os.pwrite(fd, data[: len(data) // 2], offset)  # a torn partial write, as a full disk leaves
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.real(fd, data, offset, do_fsync)


def _max_probes(elapsed: float, initial: float, cap: float) -> int:
    """How many probes exponential back-off allows in `elapsed` seconds (an upper bound, never a timing)."""
    n, t, delay = 0, 0.0, initial
    while t <= elapsed:
        n, t, delay = n + 1, t + delay, min(cap, delay * 2)
    return n


async def test_disk_full_backs_off_answers_fast_and_heals(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """With the disk full the writer probes with exponential back-off (bounded attempts and log lines), appends fail at once with a Retry-After, and the first good probe heals it."""
    from sidecar.audit.verifier import verify_directory
    from sidecar.errors import StorageError

    KeyStore(tmp_path).init("bounds.test/ledger")
    cfg = LedgerConfig(retry_initial_s=0.02, retry_max_s=0.3, error_log_interval_s=0.5, heartbeat_s=0.01)
    ledger = await Ledger.open(tmp_path, config=cfg)
    disk = _Disk(ledger.write_at)
    ledger.write_at = disk
    acked = [await ledger.append({"type": "login.succeeded", "outcome": "succeeded"}) for _ in range(3)]
    with caplog.at_level(logging.WARNING, logger="sidecar.ledger"):
        disk.full = True
        started = time.monotonic()
        with pytest.raises(StorageError):
            await ledger.append({"type": "login.succeeded", "outcome": "succeeded"})
        assert ledger.broken and "No space left" in ledger.broken
        while disk.failed < 8:  # let it probe a while (heartbeats are due every 10 ms all along)
            with pytest.raises(StorageError, match="ledger unavailable") as err:
                await ledger.append({"type": "login.succeeded", "outcome": "succeeded"})
            assert err.value.retry_after >= 1
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - started
        fault = ledger.fault()
        assert fault is not None and fault["failures"] == disk.failed
        # Every write attempt while broken is a probe, spaced by the back-off: the old writer retried every ms.
        assert disk.failed <= 1 + _max_probes(elapsed, cfg.retry_initial_s, cfg.retry_max_s)
        errors = [r for r in caplog.records if r.name == "sidecar.ledger" and r.levelno >= logging.ERROR]
        assert 1 <= len(errors) <= 2 + elapsed / cfg.error_log_interval_s, [r.getMessage() for r in errors]
        disk.full = False
        for _ in range(500):  # the next probe is at most retry_max_s away
            if ledger.fault() is None:
                break
            await asyncio.sleep(0.02)
        assert ledger.fault() is None
        assert any("works again" in r.getMessage() for r in caplog.records)
    acked.append(await ledger.append({"type": "login.succeeded", "outcome": "succeeded"}))
    assert [r.seq for r in acked] == [1, 2, 3, 4]  # nothing refused was given a place in the log
    await ledger.close()
    report = verify_directory(tmp_path, KeyStore(tmp_path).trust(), workers=1)
    assert report.ok, [str(f) for f in report.findings]
