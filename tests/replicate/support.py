"""Helpers for the replication and remote-verify tests: a real ledger, load, and reading records back.

Not fixtures on purpose (tests/replicate/conftest.py belongs to the store contract tests): tests
call these directly, so each test shows which ledger, store and load it uses.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sidecar.audit.pull import pull
from sidecar.audit.verifier import load_trust, verify_directory
from sidecar.core import framing
from sidecar.core.events import EventType, IdentityEvent, Outcome
from sidecar.core.record import record_hash
from sidecar.core.verify import Report
from sidecar.ledger.keystore import KeyStore
from sidecar.ledger.writer import Ledger, LedgerConfig
from sidecar.replicate.replicator import Replicator
from sidecar.replicate.store import ObjectStore

ORIGIN = "replicate.test/keycloak-ledger"
REPO = Path(__file__).resolve().parents[2]


def init_keys(data_dir: Path, origin: str = ORIGIN) -> Path:
    """Create ledger keys in data_dir; return the trust anchor's path."""
    data_dir.mkdir(parents=True, exist_ok=True)
    KeyStore(data_dir).init(origin)
    return data_dir / "trust.json"


async def open_ledger(data_dir: Path, *, segment_max_bytes: int = 16 * 1024, fsync: bool = True) -> Ledger:
    """A real ledger in data_dir (keys created first if missing), sealing every segment_max_bytes."""
    if not KeyStore(data_dir).exists():
        init_keys(data_dir)
    return await Ledger.open(data_dir, config=LedgerConfig(segment_max_bytes=segment_max_bytes, fsync=fsync))


def event(i: int, pad: int = 200) -> IdentityEvent:
    return IdentityEvent(EventType.ADMIN_CHANGE, Outcome.SUCCEEDED, realm="load", details={"i": i, "pad": "x" * pad})


async def steady_load(ledger: Ledger, rate: float, seconds: float, start: int = 0) -> int:
    """Append `rate` events a second for `seconds`, each on its own schedule (not back to back)."""
    count = int(rate * seconds)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    tasks = []
    for i in range(count):
        delay = t0 + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(ledger.append(event(start + i))))
    await asyncio.gather(*tasks)
    return count


def segment_records(folder: Path) -> list[tuple[int, bytes]]:
    """(seq, record hash) of every whole record in folder/segments/*.seg, in order."""
    from sidecar.core.canonical import parse

    out = []
    for seg in sorted((folder / "segments").glob("*.seg")):
        for frame in framing.iter_frames(seg.read_bytes()):
            if isinstance(frame, framing.FrameDamage):
                break
            if frame.kind == framing.RECORD:
                out.append((int(parse(frame.body)["seq"]), record_hash(frame.body)))
    return out


async def wait_for(
    predicate: Callable[[], bool], limit_s: float, what: str | Callable[[], str], poll: float = 0.1
) -> float:
    """Poll until predicate() holds; return the seconds it took; fail with `what` after timeout.

    `what` may be a callable, so the failure describes the state at the timeout, not at the call.
    """
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > limit_s:
            described = what() if callable(what) else what
            raise AssertionError(f"timed out after {limit_s:.0f}s waiting for {described}")
        await asyncio.sleep(poll)
    return time.monotonic() - start


async def drain(rep: Replicator, limit_s: float = 60.0) -> float:
    """Wait until the replicator's backlog is empty; return how long it took."""
    return await wait_for(lambda: rep.backlog_bytes() == 0, limit_s, lambda: f"replication to drain ({rep.status()})")


async def catch_up(rep: Replicator, limit_s: float = 90.0, within: int = 16 * 1024) -> float:
    """Under continuing load the backlog is rarely exactly 0 at a poll: wait until it is within a step or two."""
    return await wait_for(
        lambda: rep.backlog_bytes() < within, limit_s, lambda: f"replication to catch up ({rep.status()})"
    )


def lag_line(rep: Replicator) -> str:
    st = rep.status()
    return (
        f"replication lag over {len(rep.lags_ms)} commits: p50 {st['lag_ms_p50']:.0f} ms, "
        f"p99 {st['lag_ms_p99']:.0f} ms, max {st['lag_ms_max']:.0f} ms; {st['objects']} objects"
    )


async def run_cli(*args: str, limit_s: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run `python -m sidecar ARGS` in a worker thread (the moto server in this process keeps serving)."""
    env = dict(os.environ)
    env.pop("SIDECAR_DEBUG", None)
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "sidecar", *args],
        capture_output=True,
        text=True,
        timeout=limit_s,
        env=env,
        cwd=REPO,
    )


def s3_url(bucket: str, endpoint: str, prefix: str = "ledger", region: str = "us-east-1") -> str:
    return f"s3://{bucket}/{prefix}?endpoint={endpoint}&region={region}"


async def bucket_versions(raw_s3: Any, bucket: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(every object version, every delete marker) in the bucket."""
    versions: list[dict[str, Any]] = []
    markers: list[dict[str, Any]] = []
    async for page in raw_s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        versions.extend(page.get("Versions", []))
        markers.extend(page.get("DeleteMarkers", []))
    return versions, markers


async def verify_store(store: ObjectStore, out: Path, trust: Path) -> Report:
    """What `pull_and_verify` does, for a store object (a MemoryStore has no URL to reopen)."""
    result = await pull(store, out)
    newest = result.newest_checkpoint()
    external = [newest.read_bytes()] if newest else []
    report = verify_directory(out, load_trust(trust), external=external, workers=1)
    report.findings.extend(result.findings)
    return report
