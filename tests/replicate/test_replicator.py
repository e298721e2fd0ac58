"""The replicator against real stores: steady load, resume after a stop, integrity, the high-water mark.

A real `Ledger` (small segments, so they seal) feeds a `Replicator` through its commit
subscription, as `sidecar serve` wires them. Lag figures are printed (run with -s), never asserted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiobotocore.session import get_session
from aiohttp.test_utils import TestServer

from sidecar.app import REPLICATOR, Settings, make_app
from sidecar.audit.pull import pull
from sidecar.audit.remote import pull_and_verify
from sidecar.audit.verifier import load_trust
from sidecar.core import framing
from sidecar.core.segment import segment_name
from sidecar.errors import StoreIntegrityError
from sidecar.ledger.writer import LedgerConfig
from sidecar.replicate.drivers import open_store
from sidecar.replicate.layout import chunk_key, parse_key
from sidecar.replicate.memory import MemoryStore
from sidecar.replicate.replicator import Replicator
from sidecar.replicate.store import ObjectStore

from .conftest import REGION, MotoServer, create_locked_bucket, free_port, new_bucket_name
from .support import (
    bucket_versions,
    drain,
    event,
    init_keys,
    lag_line,
    open_ledger,
    run_cli,
    s3_url,
    segment_records,
    steady_load,
    verify_store,
    wait_for,
)


@dataclass
class Target:
    url: str  # what `sidecar verify` / open_store take
    store: ObjectStore
    raw_s3: Any = None
    bucket: str | None = None


@pytest.fixture(params=["directory", pytest.param("s3", marks=pytest.mark.s3)])
async def target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Target]:
    """Each real remote in turn: a directory store, and moto S3 with a fresh Object Lock bucket (by URL)."""
    if request.param == "directory":
        url = str(tmp_path / "store")
        t = Target(url, open_store(url))
        try:
            yield t
        finally:
            await t.store.close()
        return
    server: MotoServer = request.getfixturevalue("s3_server")
    async with get_session().create_client("s3", endpoint_url=server.endpoint_url, region_name=REGION) as raw:
        bucket = new_bucket_name()
        await create_locked_bucket(raw, bucket)
        url = s3_url(bucket, server.endpoint_url)
        t = Target(url, open_store(url), raw, bucket)
        try:
            yield t
        finally:
            await t.store.close()


async def test_steady_load_reaches_the_store_and_verifies(target: Target, tmp_path: Path) -> None:
    """At 50 events/s for 10 s every record reaches the store, verify passes, no object is unaccounted for."""
    data = tmp_path / "ledger"
    trust = init_keys(data)
    ledger = await open_ledger(data, segment_max_bytes=16 * 1024)
    rep = Replicator(data, target.store, interval_s=0.2)
    ledger.subscribers.append(rep.on_commit)
    rep.start()
    try:
        appended = await steady_load(ledger, rate=50, seconds=10)
        took = await drain(rep)
    finally:
        await ledger.close()
        await rep.stop(drain_timeout_s=30)
    print(
        f"\n[{target.url.split(':')[0]}] {appended} events at 50/s; drained {took:.2f}s after the load; "
        + lag_line(rep)
    )
    assert rep.integrity_error is None and rep.backlog_bytes() == 0
    local = segment_records(data)
    assert len(local) == ledger.size and len(list((data / "segments").glob("*.seg"))) >= 5

    # Every record, by hash, in the store; pull itself finds nothing unaccounted for.
    result = await pull(target.store, tmp_path / "pulled")
    assert result.findings == []
    assert segment_records(tmp_path / "pulled") == local
    objects = await target.store.list()
    assert objects and all(parse_key(o.key) is not None for o in objects)
    if target.raw_s3 is not None:
        versions, markers = await bucket_versions(target.raw_s3, str(target.bucket))
        assert markers == []
        assert sorted(v["Key"] for v in versions) == sorted(f"ledger/{o.key}" for o in objects), (
            "each key has exactly one version: nothing was written twice or behind the replicator's back"
        )

    # The auditor's view: library and the real command line.
    report = await pull_and_verify(target.url, tmp_path / "verify", load_trust(trust), workers=1)
    assert report.ok, report.findings
    assert report.size == ledger.size and report.external_checkpoints == 1
    cli = await run_cli("verify", target.url, "--trust", str(trust), "--json", "--workers", "1")
    assert cli.returncode == 0, cli.stdout + cli.stderr
    verdict = orjson.loads(cli.stdout)
    assert verdict["verdict"] == "intact" and verdict["tree_size"] == ledger.size


async def test_restart_resumes_from_the_cursor(tmp_path: Path) -> None:
    """A new replicator on the same data directory continues from the saved cursor and re-uploads nothing."""
    data, store_dir = tmp_path / "ledger", tmp_path / "store"
    trust = init_keys(data)
    ledger = await open_ledger(data, segment_max_bytes=8 * 1024)
    first = Replicator(data, open_store(str(store_dir)), interval_s=0.05)
    ledger.subscribers.append(first.on_commit)
    first.start()
    await steady_load(ledger, rate=100, seconds=2)
    await drain(first)
    await first.stop()
    ledger.subscribers.remove(first.on_commit)
    cursor = orjson.loads((data / "replication.json").read_bytes())
    assert cursor == first.cursor.to_json() and cursor["segment"] > 0
    before = {o.key: (store_dir / o.key).read_bytes() for o in await open_store(str(store_dir)).list()}

    await steady_load(ledger, rate=100, seconds=2, start=1000)  # committed while nobody replicates
    second = Replicator(data, open_store(str(store_dir)), interval_s=0.05, durable_end=ledger.durable_end)
    assert second.cursor.to_json() == cursor
    ledger.subscribers.append(second.on_commit)
    second.start()
    try:
        await drain(second)
    finally:
        await ledger.close()
        await second.stop()
    assert second.integrity_error is None and second.last_error is None
    after = {o.key: (store_dir / o.key).read_bytes() for o in await open_store(str(store_dir)).list()}
    assert {k: after[k] for k in before} == before, "objects written before the restart are unchanged"
    assert second.uploaded_objects == len(after) - len(before), "nothing before the cursor was uploaded again"
    await pull(open_store(str(store_dir)), tmp_path / "pulled")
    assert segment_records(tmp_path / "pulled") == segment_records(data)
    report = await pull_and_verify(str(store_dir), tmp_path / "verify", load_trust(trust), workers=1)
    assert report.ok, report.findings


async def test_resume_adopts_chunks_stored_after_the_saved_cursor(tmp_path: Path) -> None:
    """A crash between a put and the cursor save (cursor behind the store, segment grown) resumes cleanly."""
    data = tmp_path / "ledger"
    trust = init_keys(data)
    store = MemoryStore()
    ledger = await open_ledger(data, segment_max_bytes=8 * 1024 * 1024)  # one open segment throughout
    first = Replicator(data, store, interval_s=0.05)
    ledger.subscribers.append(first.on_commit)
    first.start()
    await steady_load(ledger, rate=50, seconds=0.5)
    await drain(first)
    stale = (data / "replication.json").read_bytes()  # the cursor as a crash would leave it...
    stale_offset = orjson.loads(stale)["offset"]
    await steady_load(ledger, rate=50, seconds=0.5, start=100)
    await drain(first)  # ...while these chunks did reach the store
    await first.stop()
    ledger.subscribers.remove(first.on_commit)
    (data / "replication.json").write_bytes(stale)
    chunks = [parse_key(o.key) for o in await store.list("tail/")]
    assert len(chunks) >= 2 and any(c is not None and c.offset == stale_offset for c in chunks)

    await steady_load(ledger, rate=50, seconds=0.5, start=200)  # the open segment grows past them
    second = Replicator(data, store, interval_s=0.05)
    ledger.subscribers.append(second.on_commit)
    second.start()
    try:
        await drain(second)
    finally:
        await ledger.close()
        await second.stop()
    assert second.integrity_error is None, second.integrity_error
    assert all([len(await store.versions(o.key)) == 1 for o in await store.list()])
    report = await verify_store(store, tmp_path / "pulled", trust)
    assert report.ok, report.findings
    assert segment_records(tmp_path / "pulled") == segment_records(data)


async def test_only_announced_commits_are_shipped(tmp_path: Path) -> None:
    """Bytes the writer has not announced as durable stay local; the next commit ships them."""
    data = tmp_path / "ledger"
    init_keys(data)
    store = MemoryStore()
    ledger = await open_ledger(data, segment_max_bytes=8 * 1024 * 1024)
    try:
        rep = Replicator(data, store, interval_s=0)
        shipped_at_start = await rep.step()
        assert shipped_at_start > 0  # what was on disk when the replicator was created
        for i in range(5):
            await ledger.append(event(i))  # not subscribed: the replicator never hears of these
        assert await rep.step() == 0
        ledger.subscribers.append(rep.on_commit)
        await ledger.append(event(5))
        assert await rep.step() > 0
        assert rep.backlog_bytes() == 0
    finally:
        await ledger.close()


async def test_foreign_bytes_at_the_cursor_are_an_integrity_error(tmp_path: Path) -> None:
    """A chunk planted over the replicator's cursor sets integrity_error on its next start, and health fails."""
    data = tmp_path / "ledger"
    init_keys(data)
    settings = Settings(
        upstream=f"http://127.0.0.1:{free_port()}",
        data_dir=data,
        store_url="memory://",
        replication_interval_s=0.05,
        ledger=LedgerConfig(segment_max_bytes=1024 * 1024),
    )
    app = make_app(settings)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        rep = app[REPLICATOR]
        store = rep.store
        assert isinstance(store, MemoryStore)
        await drain(rep)
        foreign = b"someone else's bytes"
        nxt = chunk_key(rep.cursor.segment, rep.cursor.offset, rep.cursor.offset + len(foreign))
        store.tamper(nxt, foreign)
        await rep.stop()
        rep.start()  # a restart adopts what the store holds at the cursor, after checking it
        await wait_for(lambda: rep.integrity_error is not None, 10, "the integrity error")
        assert nxt in str(rep.integrity_error) and "diverge" in str(rep.integrity_error)
        assert rep.status()["state"] == "integrity-error"
        async with aiohttp.ClientSession() as http, http.get(server.make_url("/.sidecar/health")) as resp:
            body = await resp.json()
            assert resp.status == 503
        assert body["status"] == "failing"
        assert body["replication"]["state"] == "integrity-error" and nxt in body["replication"]["reason"]
    finally:
        await server.close()


async def test_tampered_existing_chunk_is_found_on_resume(tmp_path: Path) -> None:
    """A chunk overwritten in the store is refused by put (write-once) and stops a resuming replicator."""
    data = tmp_path / "ledger"
    init_keys(data)
    store = MemoryStore()
    ledger = await open_ledger(data, segment_max_bytes=8 * 1024 * 1024)
    try:
        rep = Replicator(data, store, interval_s=0)
        ledger.subscribers.append(rep.on_commit)
        await rep.step()
        key = (await store.list("tail/00000000/"))[0].key
        original = await store.get(key)
        store.tamper(key, original[:-1] + bytes([original[-1] ^ 1]))
        with pytest.raises(StoreIntegrityError, match="already holds different bytes"):
            await store.put(key, original)
        (data / "replication.json").unlink()  # a fresh start from the beginning re-checks what is stored
        again = Replicator(data, store, interval_s=0)
        with pytest.raises(StoreIntegrityError, match="diverge"):
            await again.step()
        again.start()
        await wait_for(lambda: again.integrity_error is not None, 10, "the integrity error")
        await again.stop(drain_timeout_s=0.1)
    finally:
        await ledger.close()


async def test_a_round_that_read_a_sealing_commit_only_to_its_checkpoint(tmp_path: Path) -> None:
    """A sealing commit seen up to its checkpoint (a write in progress) and then whole ships without a key clash.

    The checkpoint and the seal of one commit have the same size and time; only the checkpoint is
    published under that checkpoint key, so the later round finds identical bytes there.
    """
    data = tmp_path / "ledger"
    init_keys(data)
    ledger = await open_ledger(data, segment_max_bytes=2 * 1024)
    for i in range(12):
        await ledger.append(event(i))
    await ledger.close()
    raw = (data / "segments" / segment_name(0)).read_bytes()
    frames = [f for f in framing.iter_frames(raw) if isinstance(f, framing.Frame)]
    assert frames[-1].kind == framing.SEAL and frames[-2].kind == framing.CHECKPOINT
    cp = frames[-2]
    store = MemoryStore()
    partial = Replicator(data, store, interval_s=0, durable_end=(0, cp.offset + framing.OVERHEAD + len(cp.body)))
    await partial.step()
    assert partial.cursor.to_json() == {"segment": 0, "offset": cp.offset + framing.OVERHEAD + len(cp.body)}
    whole = Replicator(data, store, interval_s=0)
    await whole.step()
    assert whole.integrity_error is None and whole.cursor.segment > 0
    notes = {o.key: await store.get(o.key) for o in await store.list("checkpoints/")}
    assert cp.body in notes.values() and frames[-1].body not in notes.values()
    assert all(key.startswith("checkpoints/") for key in notes)


class LyingStore(MemoryStore):
    """Accepts every put but returns other bytes on read: a store that corrupts what it keeps."""

    async def get(self, key: str) -> bytes:
        return (await super().get(key)) + b"!"


async def test_read_back_mismatch_is_an_integrity_error(tmp_path: Path) -> None:
    """What the store returns after a put is compared with what was written; a difference moves no cursor."""
    data = tmp_path / "ledger"
    init_keys(data)
    ledger = await open_ledger(data)
    try:
        rep = Replicator(data, LyingStore(), interval_s=0)
        with pytest.raises(StoreIntegrityError, match="read-back"):
            await rep.step()
        assert rep.cursor.to_json() == {"segment": 0, "offset": 0}
        assert not (data / "replication.json").exists()
    finally:
        await ledger.close()


async def test_unreachable_store_crosses_the_high_water_mark(tmp_path: Path) -> None:
    """With the store's port closed the backlog grows past a tiny high-water mark; status says why."""
    data = tmp_path / "ledger"
    init_keys(data)
    ledger = await open_ledger(data)
    store = open_store(s3_url("ledger-nowhere", f"http://127.0.0.1:{free_port()}"))
    rep = Replicator(data, store, interval_s=0.05, high_water_bytes=4096)
    ledger.subscribers.append(rep.on_commit)
    rep.start()
    try:
        assert not rep.over_high_water()
        for i in range(20):
            await ledger.append(event(i))
        await wait_for(lambda: rep.last_error is not None, 20, "a replication error")
        assert rep.over_high_water()
        status = rep.status()
        assert status["state"] == "over-high-water" and status["over_high_water"] is True
        assert status["backlog_bytes"] > 4096 and "127.0.0.1" in status["reason"]
    finally:
        await ledger.close()
        await rep.stop(drain_timeout_s=0.1)
        await store.close()


async def test_every_round_of_a_sealing_ledger_ships_without_a_key_clash(tmp_path: Path) -> None:
    """A ledger sealing after every batch, shipped round by round and again after a restart: each checkpoint key holds its own note.

    A segment's opening checkpoint has the size of the seal before it; it must not have the seal's
    time too, or its store key is the sealing checkpoint's and the round that ships it finds other
    bytes there (an integrity alarm on a healthy ledger, and a backlog that never drains).
    """
    data = tmp_path / "ledger"
    init_keys(data)
    ledger = await open_ledger(data, segment_max_bytes=1)
    store = MemoryStore()
    for i in range(6):  # a replicator per round, each taking what the files hold as durable (a restart)
        await ledger.append(event(i))
        await Replicator(data, store, interval_s=0).step()
    await ledger.close()
    restarted = Replicator(data, store, interval_s=0)  # as after a restart: the files say what is durable
    await restarted.step()  # ships the last segment's opening checkpoint, the newest note there is
    assert restarted.integrity_error is None and restarted.backlog_bytes() == 0
    notes = {o.key: await store.get(o.key) for o in await store.list("checkpoints/")}
    assert len(notes) >= 6 and len(set(notes.values())) == len(notes)
    for key, note in notes.items():
        parsed = parse_key(key)
        assert parsed is not None and parsed.kind == "checkpoint"
        assert f"\n{parsed.size}\n".encode() in note, (key, note[:80])
