"""Retries never wedge replication, and a real divergence still stops it: against every store driver.

The wedge seen on a loaded machine: a put of a tail chunk reached the store while the client saw a
failure (a timeout after the server kept the object); the retry, with more bytes committed since,
used the same key with longer content, and the write-once store refused it forever. `LostAck`
reproduces that exactly: the real put happens, then the caller gets `StoreUnavailable`.
"""

from __future__ import annotations

import builtins
from pathlib import Path

import pytest

from sidecar.errors import StoreIntegrityError
from sidecar.replicate.layout import chunk_key, parse_key
from sidecar.replicate.memory import MemoryStore
from sidecar.replicate.replicator import Replicator
from sidecar.replicate.store import ObjectInfo, ObjectStore, PutResult, StoreUnavailable

from .support import drain, event, init_keys, open_ledger, segment_records, verify_store, wait_for


class LostAck:
    """A store whose next `lose` puts of keys under `prefix` reach the store but report a failure."""

    def __init__(self, inner: ObjectStore, prefix: str = "tail/", lose: int = 1) -> None:
        self.inner = inner
        self.prefix = prefix
        self.lose = lose
        self.lost: list[str] = []

    @property
    def url(self) -> str:
        return self.inner.url

    async def put(self, key: str, data: bytes) -> PutResult:
        result = await self.inner.put(key, data)
        if self.lose and key.startswith(self.prefix):
            self.lose -= 1
            self.lost.append(key)
            raise StoreUnavailable(f"{self.url}: PutObject {key!r}: read timeout (the store kept the object)")
        return result

    async def get(self, key: str) -> bytes:
        return await self.inner.get(key)

    async def head(self, key: str) -> ObjectInfo | None:
        return await self.inner.head(key)

    async def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        return await self.inner.list(prefix)

    async def versions(self, key: str) -> builtins.list[ObjectInfo]:
        return await self.inner.versions(key)

    async def ensure_ready(self, *, create: bool = False) -> None:
        await self.inner.ensure_ready(create=create)

    async def close(self) -> None:
        await self.inner.close()


async def test_lost_ack_then_retry_with_more_bytes_does_not_wedge(store: ObjectStore, tmp_path: Path) -> None:
    """A tail-chunk put the store kept while the client saw a failure, retried after more commits: no alarm, all shipped."""
    data = tmp_path / "ledger"
    trust = init_keys(data)
    ledger = await open_ledger(data, segment_max_bytes=8 * 1024 * 1024)  # one open segment: the tail case
    flaky = LostAck(store)
    rep = Replicator(data, flaky, interval_s=0)
    ledger.subscribers.append(rep.on_commit)
    try:
        for i in range(5):
            await ledger.append(event(i))
        with pytest.raises(StoreUnavailable):
            await rep.step()
        assert flaky.lost and await store.head(flaky.lost[0]) is not None  # the store did keep it
        for i in range(5, 15):
            await ledger.append(event(i))  # the retry now has more committed bytes to ship
        assert await rep.step() > 0
        assert rep.backlog_bytes() == 0 and rep.integrity_error is None
    finally:
        await ledger.close()
    await rep.step()  # the closing checkpoint
    report = await verify_store(store, tmp_path / "pulled", trust)
    assert report.ok, report.findings
    assert segment_records(tmp_path / "pulled") == segment_records(data)
    assert all([len(await store.versions(o.key)) == 1 for o in await store.list()])


async def test_lost_ack_before_a_crash_is_adopted_on_restart(store: ObjectStore, tmp_path: Path) -> None:
    """A kept-but-failed put, then a new replicator (the old one died) over a grown WAL: it adopts, then ships the rest."""
    data = tmp_path / "ledger"
    trust = init_keys(data)
    ledger = await open_ledger(data, segment_max_bytes=8 * 1024 * 1024)
    first = Replicator(data, LostAck(store), interval_s=0)
    ledger.subscribers.append(first.on_commit)
    try:
        for i in range(5):
            await ledger.append(event(i))
        with pytest.raises(StoreUnavailable):
            await first.step()
        ledger.subscribers.remove(first.on_commit)
        for i in range(5, 15):
            await ledger.append(event(i))
        second = Replicator(data, store, interval_s=0)
        ledger.subscribers.append(second.on_commit)
        await second.step()
        assert second.cursor.offset > first.cursor.offset and second.integrity_error is None
    finally:
        await ledger.close()
    await second.step()
    report = await verify_store(store, tmp_path / "pulled", trust)
    assert report.ok, report.findings
    assert segment_records(tmp_path / "pulled") == segment_records(data)


async def test_stored_bytes_that_are_not_the_local_wal_are_an_integrity_error(
    store: ObjectStore, tmp_path: Path
) -> None:
    """A chunk over the cursor holding bytes that are not the local WAL's stops a (re)starting replicator."""
    data = tmp_path / "ledger"
    init_keys(data)
    ledger = await open_ledger(data, segment_max_bytes=8 * 1024 * 1024)
    try:
        rep = Replicator(data, store, interval_s=0)
        ledger.subscribers.append(rep.on_commit)
        await rep.step()
        await ledger.append(event(1))
        at = rep.cursor.offset
        local = (data / "segments" / "00000000.seg").read_bytes()
        forged = bytearray(local[at:])
        forged[len(forged) // 2] ^= 0x01
        key = chunk_key(0, at, at + len(forged))
        await store.put(key, bytes(forged))
        again = Replicator(data, store, interval_s=0)
        with pytest.raises(StoreIntegrityError, match="diverge") as caught:
            await again.step()
        assert key in str(caught.value)
        assert again.cursor.offset == at  # nothing adopted, nothing shipped over the forgery
    finally:
        await ledger.close()


async def test_a_retry_that_finds_other_bytes_under_its_key_is_an_integrity_error(tmp_path: Path) -> None:
    """After a failed round, someone else's bytes under that round's key are refused on the retry, never adopted."""
    data = tmp_path / "ledger"
    init_keys(data)
    ledger = await open_ledger(data, segment_max_bytes=8 * 1024 * 1024)
    store = MemoryStore()
    flaky = LostAck(store)
    rep = Replicator(data, flaky, interval_s=0)
    try:
        with pytest.raises(StoreUnavailable):
            await rep.step()
        (key,) = flaky.lost
        parsed = parse_key(key)
        assert parsed is not None and parsed.kind == "chunk"
        # Someone with write access replaces the object the retry will find (what a versioned bucket allows).
        store.tamper(key, b"x" * (parsed.end - parsed.offset))
        with pytest.raises(StoreIntegrityError, match="different bytes"):
            await rep.step()
        assert rep.cursor.offset == 0
    finally:
        await ledger.close()


class Buggy(LostAck):
    """A store driver whose first put raises an exception no storage error class covers (a driver bug)."""

    async def put(self, key: str, data: bytes) -> PutResult:
        if self.lose:
            self.lose -= 1
            raise KeyError("a driver bug, not a storage condition")
        return await self.inner.put(key, data)


async def test_an_unexpected_driver_error_does_not_end_replication(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception outside the storage error tree is reported as retrying, and the loop ships everything after it."""
    data = tmp_path / "ledger"
    init_keys(data)
    store = MemoryStore()
    ledger = await open_ledger(data, segment_max_bytes=8 * 1024)
    buggy = Buggy(store)
    rep = Replicator(data, buggy, interval_s=0.01)
    ledger.subscribers.append(rep.on_commit)
    rep.start()
    try:
        for i in range(40):
            await ledger.append(event(i))
        await wait_for(lambda: buggy.lose == 0, 30, "the driver bug to happen")
        await drain(rep)
        assert any("failed unexpectedly" in r.getMessage() and r.exc_info for r in caplog.records)
        assert rep.status()["state"] == "ok" and rep.integrity_error is None
    finally:
        await ledger.close()
        await rep.stop()
    assert rep.backlog_bytes() == 0
    assert len(segment_records(data)) == ledger.size >= 40
    report = await verify_store(store, tmp_path / "pulled", data / "trust.json")
    assert report.ok and report.records == ledger.size, report.findings  # every record reached the store, verified
