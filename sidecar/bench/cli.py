"""The `bench` command group: brief §9's targets, each against a reference measured in the same run.

Layout: machine facts and small statistics helpers; the reference loops (Ed25519
sign and verify, fsync of a small append, SHA-256 per record); then one runner
per benchmark (`run_ledger`, `run_proxy`, `run_replication`) returning a plain
dict (what `--json` prints); then the click commands, which add rich tables
(stdout) and progress (stderr).

Every process a runner starts (Keycloak, the sidecar, the S3 server) is stopped
in a `finally` block, by its own pid or process group. All traffic is loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import math
import os
import platform
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sidecar.core import framing
from sidecar.core.events import EventType, IdentityEvent, Outcome, Party
from sidecar.core.record import encode_record, record_hash

__all__ = ["bench", "identity_event", "run_ledger", "run_proxy", "run_replication"]

ORIGIN = "bench.local/keycloak-ledger"

# ============================================================================================ helpers


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _filesystem(path: Path) -> str:
    """'<fstype> on <device>' of the mount holding `path` (longest matching mount point)."""
    best, found = "", "unknown"
    target = str(path.resolve())
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            device, mount, fstype = line.split()[:3]
            if (target == mount or target.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best):
                best, found = mount, f"{fstype} on {device}"
    except (OSError, ValueError):
        pass
    return found


def machine_info(data_dir: Path | None = None) -> dict[str, Any]:
    """Facts about this host worth printing beside every result (load average included: it is shared)."""
    info: dict[str, Any] = {
        "date": _now_iso(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count() or 1,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
    if data_dir is not None:
        info["filesystem"] = _filesystem(data_dir)
    return info


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of `values`; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


@dataclass
class Target:
    """One brief target: a measured figure against a limit derived from a same-run reference."""

    name: str
    measured: float
    limit: float
    unit: str
    higher_is_better: bool
    reference: str  # how the limit was derived, with the reference's own figure

    @property
    def passed(self) -> bool:
        return self.measured >= self.limit if self.higher_is_better else self.measured < self.limit

    def verdict(self) -> str:
        if self.limit <= 0 or self.measured <= 0:
            return "PASS" if self.passed else "MISS"
        if self.higher_is_better:
            factor = self.measured / self.limit
            short = self.limit / self.measured
            return "PASS" if self.passed else f"MISS: {factor:.2f}x of the target, {short:.2f}x short"
        factor = self.measured / self.limit
        over = f"{self.measured - self.limit:+.3g} {self.unit}"
        return "PASS" if self.passed else f"MISS: {factor:.2f}x the limit ({over})"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "measured": self.measured, "limit": self.limit, "unit": self.unit,
                "comparison": ">=" if self.higher_is_better else "<", "reference": self.reference,
                "passed": self.passed, "verdict": self.verdict()}


class Ui:
    """Progress on stderr (phase lines always, bars on a terminal); results never go here."""

    def __init__(self) -> None:
        self.err = Console(stderr=True, highlight=False)

    def phase(self, message: str) -> None:
        self.err.print(f"[dim]bench[/dim] {message}")

    @contextlib.contextmanager
    def bar(self, description: str, total: int | None) -> Iterator[Callable[[int], None]]:
        if not self.err.is_terminal:
            yield lambda done: None
            return
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=self.err, transient=True) as progress:
            task = progress.add_task(description, total=total)
            yield lambda done: progress.update(task, completed=done)


# ---------------------------------------------------------------------------------------- events
def _uuid(rnd: random.Random) -> str:
    h = f"{rnd.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{h[16:20]}-{h[20:]}"


def identity_event(i: int, rnd: random.Random) -> dict[str, Any]:
    """The i-th event of a synthetic realm's traffic, shaped like what the capture layer records.

    Mix: logins (good and failed), token grants and refreshes (with keyed fingerprints of
    the refresh tokens, as the capture layer writes them), logouts, OTP steps and admin
    role grants; random UUIDs, usernames, IPs and request ids, so the bytes compress like
    real traffic and not like copies of one record. Record bodies average about 400 bytes.
    """
    kind = i % 10
    user = Party(id=_uuid(rnd), username=f"user{rnd.randrange(100_000):05d}", kind="user")
    ip = f"10.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}"
    rid = f"{rnd.getrandbits(32):08x}-{i:x}"
    realm = "ledger-test"
    if kind in (0, 1, 2):
        event = IdentityEvent(EventType.LOGIN_SUCCEEDED, Outcome.SUCCEEDED, realm=realm, actor=user,
                              client="ledger-app", source_ip=ip, session=_uuid(rnd), request_id=rid,
                              details={"method": "password"})
    elif kind == 3:
        event = IdentityEvent(EventType.LOGIN_FAILED, Outcome.FAILED, realm=realm,
                              actor=Party(username=user.username, kind="user"), client="ledger-app",
                              source_ip=ip, request_id=rid, error="invalid_user_credentials",
                              details={"method": "password"})
    elif kind in (4, 5):
        event = IdentityEvent(EventType.TOKEN_ISSUED, Outcome.SUCCEEDED, realm=realm,
                              actor=Party(id=_uuid(rnd), client="ledger-robot", kind="client"),
                              client="ledger-robot", source_ip=ip, request_id=rid,
                              details={"grant": "client_credentials"})
    elif kind == 6:
        event = IdentityEvent(EventType.TOKEN_REFRESHED, Outcome.SUCCEEDED, realm=realm, actor=user,
                              client="ledger-app", source_ip=ip, session=_uuid(rnd), request_id=rid,
                              details={"grant": "refresh_token",
                                       "presented_refresh_fp": f"{rnd.getrandbits(128):032x}"})
    elif kind == 7:
        event = IdentityEvent(EventType.LOGOUT_COMPLETED, Outcome.SUCCEEDED, realm=realm, actor=user,
                              client="ledger-app", source_ip=ip, session=_uuid(rnd), request_id=rid)
    elif kind == 8:
        event = IdentityEvent(EventType.MFA_OTP_VERIFIED, Outcome.SUCCEEDED, realm=realm, actor=user,
                              client="ledger-app", source_ip=ip, request_id=rid,
                              details={"credential": "otp"})
    else:
        admin = Party(id=_uuid(rnd), username="carol", client="security-admin-console", kind="user")
        event = IdentityEvent(EventType.ROLE_GRANTED, Outcome.SUCCEEDED, realm=realm, actor=admin,
                              target=user, client="security-admin-console", source_ip=ip, request_id=rid,
                              details={"roles": [rnd.choice(("viewer", "operator", "auditor"))],
                                       "phase": "outcome"})
    return event.to_json()


def identity_events(count: int, *, seed: int = 20_261_126, start: int = 0) -> list[dict[str, Any]]:
    rnd = random.Random(seed + start)
    return [identity_event(start + i, rnd) for i in range(count)]


# ============================================================================================ references


def _rates(step: Callable[[], int], seconds: float) -> tuple[float, float]:
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


def _timed_loop(step: Callable[[], int], seconds: float) -> float:
    """ops per wall-clock second of `step`, run for ~seconds."""
    return _rates(step, seconds)[0]


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

    wall, cpu = _rates(step, seconds)
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

    return _timed_loop(step, seconds)


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
        return {"p50_us": percentile(self.times_us, 50), "p99_us": percentile(self.times_us, 99),
                "samples": len(self.times_us), "bytes": self.size}

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

    return _timed_loop(step, seconds)


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

    each = _timed_loop(every_record, seconds)
    batched = _timed_loop(per_batch, seconds)
    return {"sign_every_record_per_s": each, f"sign_per_{batch}_per_s": batched, "batch": batch,
            "speedup": batched / each if each else 0.0,
            "sign_cost_us_per_record_every": 1e6 / each if each else 0.0,
            "sign_cost_us_per_record_batched": 1e6 / batched if batched else 0.0}


def encode_rate(events: Sequence[dict[str, Any]], seconds: float = 1.0) -> float:
    """Records/s of the ledger's own record encoding (`encode_record`: canonical check + orjson)."""
    sample = list(events[:5000]) or [{}]
    prev = bytes(32)

    def step() -> int:
        for n, event in enumerate(sample):
            encode_record(n, 1_764_000_000_000_000_000 + n, prev, event)
        return len(sample)

    return _timed_loop(step, seconds)


# ============================================================================================ ledger


@dataclass
class _SegmentFacts:
    path: Path
    size: int
    records: int
    sealed: bool


def _read_segments(data_dir: Path) -> tuple[list[_SegmentFacts], list[bytes]]:
    from sidecar.core.segment import SEGMENT_DIR

    facts: list[_SegmentFacts] = []
    bodies: list[bytes] = []
    for path in sorted((data_dir / SEGMENT_DIR).glob("*.seg")):
        data = path.read_bytes()
        count, sealed = 0, False
        for frame in framing.iter_frames(data):
            if isinstance(frame, framing.FrameDamage):
                break
            if frame.kind == framing.RECORD:
                bodies.append(frame.body)
                count += 1
            sealed = frame.kind == framing.SEAL
        facts.append(_SegmentFacts(path, len(data), count, sealed))
    return facts, bodies


@contextlib.asynccontextmanager
async def _ledger(data_dir: Path, *, segment_max_bytes: int, with_index: bool) -> AsyncIterator[Any]:
    """An open Ledger, with the lookup index subscribed as `sidecar serve` wires it if `with_index`."""
    from sidecar.ledger.writer import Ledger, LedgerConfig

    ledger = await Ledger.open(data_dir, config=LedgerConfig(segment_max_bytes=segment_max_bytes))
    index: Any = None
    try:
        if with_index:
            from sidecar.ledger.index import LedgerIndex

            index = LedgerIndex(data_dir / "index.sqlite")
            await index.open()
            ledger.subscribers.append(index.on_commit)
            index.start()
        yield ledger
    finally:
        await ledger.close()
        if index is not None:
            await index.close()


async def _append_many(data_dir: Path, events: Sequence[dict[str, Any]], concurrency: int,
                       segment_max_bytes: int, progress: Callable[[int], None],
                       with_index: bool = False) -> dict[str, Any]:
    """Append `events` through `Ledger.append` with `concurrency` appenders in flight."""
    async with _ledger(data_dir, segment_max_bytes=segment_max_bytes, with_index=with_index) as ledger:
        return await _drive(ledger, events, concurrency, progress)


async def _drive(ledger: Any, events: Sequence[dict[str, Any]], concurrency: int,
                 progress: Callable[[int], None]) -> dict[str, Any]:
    from sidecar.ledger.writer import Commit

    batches: list[int] = []

    def on_commit(commit: Commit) -> None:
        batches.append(len(commit.records))

    ledger.subscribers.append(on_commit)
    source = iter(events)

    async def appender() -> None:
        for event in source:
            await ledger.append(event)

    async def ticker() -> None:
        while True:
            progress(ledger.size)
            await asyncio.sleep(0.25)

    tick = asyncio.get_running_loop().create_task(ticker())
    try:
        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(appender() for _ in range(concurrency)))
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        tick.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tick
    full = [b for b in batches if b]
    return {"seconds": elapsed, "cpu_seconds": cpu, "commits": len(full),
            "mean_batch": sum(full) / len(full) if full else 0.0, "max_batch": max(full, default=0)}


async def _append_sequential(data_dir: Path, events: Sequence[dict[str, Any]], segment_max_bytes: int,
                             with_index: bool = False, probe: FsyncProbe | None = None) -> list[float]:
    """One appender, one append at a time; the latency of each in µs.

    Every 100 appends the fsync probe (if any) takes 10 samples, so reference and measurement
    see the same disk at the same time.
    """
    times: list[float] = []
    async with _ledger(data_dir, segment_max_bytes=segment_max_bytes, with_index=with_index) as ledger:
        for event in events[:50]:  # warm-up
            await ledger.append(event)
        for n, event in enumerate(events[50:]):
            if probe is not None and n % 100 == 0:
                probe.sample(10)
            t0 = time.perf_counter_ns()
            await ledger.append(event)
            times.append((time.perf_counter_ns() - t0) / 1000)
    return times


def run_ledger(data_dir: Path, *, events: int = 200_000, concurrency: int = 2000, latency_appends: int = 2000,
               segment_max_bytes: int = 8 * 1024 * 1024, with_index: bool = False, keep: bool = False,
               ui: Ui | None = None, reference_seconds: float = 1.0) -> dict[str, Any]:
    """The ledger benchmark; see `bench ledger --help`."""
    from sidecar.audit.verifier import verify_directory
    from sidecar.ledger.keystore import KeyStore

    ui = ui or Ui()
    cores = os.cpu_count() or 1
    data_dir.mkdir(parents=True, exist_ok=True)
    machine = machine_info(data_dir)
    root = Path(tempfile.mkdtemp(prefix="bench-ledger-", dir=data_dir))
    try:
        # Each reference is measured just before and just after what it is compared with (the machine
        # is shared, so its speed drifts); the mean of the two is the reference.
        ui.phase("reference: Ed25519 signing loop (before the append run)")
        sign_rates = [ed25519_sign_rate(reference_seconds)]
        sign_cpu = ed25519_sign_rate(reference_seconds, per_cpu_second=True)
        verify_rate = ed25519_verify_rate(reference_seconds)

        ui.phase(f"building {events:,} synthetic identity events")
        evs = identity_events(events)
        lat_events = identity_events(latency_appends + 50, start=events)

        ui.phase(f"appending {events:,} events, {concurrency} appenders in flight (durable, signed)")
        bulk = root / "throughput"
        trust = KeyStore(bulk).init(ORIGIN)
        with ui.bar("appending", events) as progress:
            run = asyncio.run(_append_many(bulk, evs, concurrency, segment_max_bytes, progress, with_index))
        del evs
        ui.phase("reference: Ed25519 signing loop (after the append run)")
        sign_rates.append(ed25519_sign_rate(reference_seconds))
        sign_rate = sum(sign_rates) / len(sign_rates)

        ui.phase(f"append latency: one appender, {latency_appends:,} sequential appends, with the fsync "
                 f"reference (write + fdatasync in {data_dir}) sampled in blocks between them")
        lat_dir = root / "latency"
        KeyStore(lat_dir).init(ORIGIN)
        probe = FsyncProbe(root)
        try:
            latencies = asyncio.run(_append_sequential(lat_dir, lat_events, segment_max_bytes, with_index, probe))
            probe.sample(10)
        finally:
            probe.close()
        fsync = probe.summary()

        ui.phase("reference: SHA-256 of every record body of the same segments (before verifying)")
        segments, bodies = _read_segments(bulk)
        sha_rates = [sha256_record_rate(bodies, reference_seconds)]
        ui.phase(f"verifying the ledger with {cores} worker processes, then with 1")
        t0 = time.perf_counter()
        report = verify_directory(bulk, trust, workers=cores)
        verify_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        report1 = verify_directory(bulk, trust, workers=1)
        verify1_s = time.perf_counter() - t0
        ui.phase("reference: SHA-256 loop again (after verifying); signing trade-off")
        sha_rates.append(sha256_record_rate(bodies, reference_seconds))
        sha_rate = sum(sha_rates) / len(sha_rates)
        tradeoff = signing_tradeoff(bodies, reference_seconds)
        enc_rate = encode_rate(lat_events, reference_seconds)
        body_mean = sum(map(len, bodies)) / len(bodies) if bodies else 0.0

        ui.phase("compressing sealed segments (gzip level 6)")
        raw_bytes = sum(s.size for s in segments)
        records = sum(s.records for s in segments)
        sealed = [s for s in segments if s.sealed]
        scope = f"{len(sealed)} sealed segments"
        if not sealed:  # a short run: no segment filled up, so compress what there is and say so
            sealed, scope = segments, "the open segment (no segment was sealed in this run)"
        gz_bytes = sum(len(gzip.compress(s.path.read_bytes(), 6)) for s in sealed)
        gz_records = sum(s.records for s in sealed)
        del bodies
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)

    appends_per_s = events / run["seconds"] if run["seconds"] else 0.0
    verify_per_s = report.records / verify_s if verify_s else 0.0
    hash_all = sha_rate * cores
    lat_p50 = percentile(latencies, 50)
    compressed_per_event = gz_bytes / gz_records if gz_records else 0.0
    targets = [
        Target("durable signed appends/s", appends_per_s, sign_rate, "appends/s", True,
               f"1.0 x single-core Ed25519 signs/s ({sign_rate:,.0f}/s)"),
        Target("verified records/s vs hash loop", verify_per_s, 0.35 * hash_all, "records/s", True,
               f"35% of SHA-256-per-record loop x {cores} cores ({hash_all:,.0f}/s)"),
        Target("verified records/s, absolute", verify_per_s, 1_000_000, "records/s", True,
               "1M records/s on all cores (brief §9)"),
        Target("append latency p50", lat_p50, 1.5 * fsync["p50_us"], "us", False,
               f"1.5 x this disk's fsync p50 ({fsync['p50_us']:.0f} us)"),
        Target("bytes/event at rest, compressed", compressed_per_event, 300, "bytes", False,
               "300 bytes, gzip-6 of sealed segments"),
    ]
    return {
        "benchmark": "ledger",
        "machine": machine,
        "config": {"events": events, "concurrency": concurrency, "latency_appends": latency_appends,
                   "segment_max_bytes": segment_max_bytes, "with_index": with_index, "data": str(data_dir),
                   "kept": str(root) if keep else None},
        "references": {
            "cores": cores,
            "ed25519_sign_per_s": sign_rate,
            "ed25519_sign_per_s_before_after": sign_rates,
            "ed25519_sign_per_cpu_s": sign_cpu,
            "ed25519_verify_per_s": verify_rate,
            "fsync_p50_us": fsync["p50_us"],
            "fsync_p99_us": fsync["p99_us"],
            "sha256_records_per_s_1core": sha_rate,
            "sha256_records_per_s_1core_before_after": sha_rates,
            "sha256_records_per_s_all_cores": hash_all,
        },
        "results": {
            "events": events,
            "append_seconds": run["seconds"],
            "appends_per_s": appends_per_s,
            "appends_vs_sign_rate": appends_per_s / sign_rate if sign_rate else 0.0,
            "cpu_us_per_append": run["cpu_seconds"] / events * 1e6 if events else 0.0,
            "appends_per_cpu_s": events / run["cpu_seconds"] if run["cpu_seconds"] else 0.0,
            "commits": run["commits"],
            "mean_batch": run["mean_batch"],
            "max_batch": run["max_batch"],
            "latency_appends": len(latencies),
            "latency_p50_us": lat_p50,
            "latency_p99_us": percentile(latencies, 99),
            "latency_p50_vs_fsync_p50": lat_p50 / fsync["p50_us"] if fsync["p50_us"] else 0.0,
            "verified_records": report.records,
            "verify_ok": report.ok and report1.ok,
            "verify_findings": len(report.findings),
            "verify_seconds": verify_s,
            "verify_records_per_s": verify_per_s,
            "verify_records_per_s_1worker": report1.records / verify1_s if verify1_s else 0.0,
            "verify_vs_hash_loop_all_cores": verify_per_s / hash_all if hash_all else 0.0,
            "segments": len(segments),
            "sealed_segments": sum(1 for s in segments if s.sealed),
            "record_body_mean_bytes": body_mean,
            "raw_bytes_per_event": raw_bytes / records if records else 0.0,
            "compressed_bytes_per_event": compressed_per_event,
            "compression": "gzip level 6",
            "compressed_scope": scope,
            "encode_record_per_s": enc_rate,
        },
        "tradeoff": {
            **tradeoff,
            "ed25519_verify_per_s_1core": verify_rate,
            "verify_every_record_ceiling_all_cores": verify_rate * cores,
            "verify_measured_checkpoint_scheme": verify_per_s,
            "extra_raw_bytes_per_record": 64,
        },
        "targets": [t.to_json() for t in targets],
    }



# ============================================================================================ processes


def _process_times(pid: int) -> tuple[float, float]:
    """(utime, stime) in seconds of one process (all its threads, live or exited), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def _process_cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds."""
    return sum(_process_times(pid))


def _group_cpu_seconds(pgid: int) -> float:
    """utime + stime summed over the live processes of a process group."""
    ticks = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _listening_pid(port: int) -> int | None:
    """The pid of the process listening on TCP `port` (found through /proc), or None."""
    sockets: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 9 and parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                sockets.add(f"socket:[{parts[9]}]")
    if not sockets:
        return None
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry.name}/fd")
        except OSError:
            continue
        for fd in fds:
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{entry.name}/fd/{fd}") in sockets:
                    return int(entry.name)
    return None


def _wait_http(url: str, timeout: float, accept_any_status: bool = False) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except urllib.error.HTTPError:
            if accept_any_status:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise click.ClickException(f"{url} did not answer within {timeout:.0f} s")
        time.sleep(0.1)


def _stop_group(proc: subprocess.Popen[bytes], grace: float = 20.0) -> None:
    """SIGINT the process group `proc` leads, then SIGKILL after `grace` seconds."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def _sidecar_process(upstream: str, data_dir: Path, port: int,
                     log_file: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m sidecar serve --init` in front of `upstream`, in its own process group."""
    cmd = [sys.executable, "-m", "sidecar", "serve", "--init", "--origin", ORIGIN, "--upstream", upstream,
           "--data", str(data_dir), "--listen", f"127.0.0.1:{port}", "--log-level", "WARNING"]
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        try:
            _wait_http(f"http://127.0.0.1:{port}/.sidecar/health", 60)
        except click.ClickException:
            tail = log_file.read_text(errors="replace")[-2000:]
            raise click.ClickException(f"the sidecar did not start; its log ends:\n{tail}") from None
        yield proc
    finally:
        _stop_group(proc)


# ============================================================================================ proxy


async def _timed_request(session: Any, method: str, url: str, form: dict[str, str] | None) -> float:
    t0 = time.perf_counter_ns()
    async with session.request(method, url, data=form) as resp:
        await resp.read()
        status = resp.status
    elapsed = (time.perf_counter_ns() - t0) / 1e6
    if status != 200:
        raise click.ClickException(f"{method} {url} answered HTTP {status}")
    return elapsed


async def _interleaved(direct: str, proxied: str, method: str, path: str, form: dict[str, str] | None,
                       requests: int, warmup: int, concurrency: int, progress: Callable[[int], None],
                       probe: FsyncProbe | None = None) -> dict[str, Any]:
    """The same request, alternately direct to Keycloak and through the sidecar; latencies in ms.

    Every 50 pairs the fsync probe (if any) takes 10 samples between requests.
    """
    import aiohttp

    d_times: list[float] = []
    p_times: list[float] = []
    diffs: list[float] = []
    counter = iter(range(requests))
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as d_http, \
            aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as p_http:
        for _ in range(warmup):
            await _timed_request(d_http, method, direct + path, form)
            await _timed_request(p_http, method, proxied + path, form)

        async def worker() -> None:
            for i in counter:
                if probe is not None and i % 50 == 0:
                    probe.sample(10)
                if i % 2:
                    d = await _timed_request(d_http, method, direct + path, form)
                    p = await _timed_request(p_http, method, proxied + path, form)
                else:
                    p = await _timed_request(p_http, method, proxied + path, form)
                    d = await _timed_request(d_http, method, direct + path, form)
                d_times.append(d)
                p_times.append(p)
                diffs.append(p - d)
                progress(len(diffs))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    d50, d99 = percentile(d_times, 50), percentile(d_times, 99)
    p50, p99 = percentile(p_times, 50), percentile(p_times, 99)
    return {"requests": len(diffs), "direct_p50_ms": d50, "direct_p99_ms": d99, "proxied_p50_ms": p50,
            "proxied_p99_ms": p99, "added_p50_ms": p50 - d50, "added_p99_ms": p99 - d99,
            "paired_added_median_ms": percentile(diffs, 50)}


def _cpu_per_request(result: dict[str, Any], side0: float, side1: float, kc0: float, kc1: float,
                     proxied: int) -> None:
    """Add CPU per request to an `_interleaved` result: the sidecar saw `proxied` requests, Keycloak twice that."""
    result["sidecar_cpu_us_per_request"] = (side1 - side0) / proxied * 1e6
    result["keycloak_cpu_us_per_request"] = (kc1 - kc0) / (2 * proxied) * 1e6


async def _logins(base: str, count: int, progress: Callable[[int], None]) -> int:
    from sidecar.harness import activity
    from sidecar.harness.realm import REALM

    ok = 0
    for i in range(count):
        result = await activity.browser_login(base, REALM.name, REALM.app.client_id, REALM.alice.username,
                                              REALM.alice.password, "http://127.0.0.1/callback")
        ok += result.ok
        progress(i + 1)
    return ok


def run_proxy(*, requests: int = 400, logins: int = 150, concurrency: int = 1, upstream: str | None = None,
              upstream_pid: int | None = None, listen_port: int | None = None, data_dir: Path | None = None,
              keep: bool = False, ui: Ui | None = None) -> dict[str, Any]:
    """The proxy benchmark; see `bench proxy --help`."""
    from sidecar.audit.verifier import verify_directory
    from sidecar.harness.keycloak import KeycloakServer, ensure_distribution, free_port
    from sidecar.harness.realm import REALM
    from sidecar.ledger.keystore import KeyStore

    ui = ui or Ui()
    if data_dir is None:
        root = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    else:
        data_dir.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="bench-proxy-", dir=data_dir))
    machine = machine_info(root)
    port = listen_port or free_port()
    sidecar_base = f"http://127.0.0.1:{port}"
    kc: KeycloakServer | None = None
    try:
        if upstream is None:
            ui.phase("starting Keycloak (fetched with mvn and cached on first use; 15-60 s)")
            mgmt = free_port()
            while mgmt == port:
                mgmt = free_port()
            http_port = free_port()
            while http_port in (port, mgmt):
                http_port = free_port()
            kc = KeycloakServer(ensure_distribution(), root / "keycloak", http_port=http_port,
                                management_port=mgmt, public_url=sidecar_base, admin_username="admin",
                                admin_password=secrets.token_urlsafe(16), realm_files=[REALM.file])
            kc.start(timeout=300)
            direct_base = kc.base_url
            assert kc.pid is not None
            kc_pgid = kc.pid
            kc_cpu: Callable[[], float] = lambda: _group_cpu_seconds(kc_pgid)  # noqa: E731
            ui.phase(f"Keycloak ready in {kc.startup_seconds:.1f} s")
        else:
            direct_base = upstream.rstrip("/")
            pid = upstream_pid or _listening_pid(int(direct_base.rsplit(":", 1)[1]))
            if pid is None:
                raise click.ClickException(f"nothing found listening at {direct_base}; pass --upstream-pid")
            kc_cpu = lambda: _process_cpu_seconds(pid)  # noqa: E731
        data = root / "sidecar-data"
        ui.phase(f"starting the sidecar (python -m sidecar serve) on {sidecar_base}")
        with _sidecar_process(direct_base, data, port, root / "sidecar.log") as sidecar:
            side_pid = sidecar.pid
            passthrough_path = f"/realms/{REALM.name}/.well-known/openid-configuration"
            token_path = f"/realms/{REALM.name}/protocol/openid-connect/token"
            cc_form = {"grant_type": "client_credentials", "client_id": REALM.robot.client_id,
                       "client_secret": REALM.robot.secret or ""}
            warmup = max(20, min(200, requests // 2))
            ui.phase(f"pass-through: {requests} pairs of GET {passthrough_path} (+{warmup} warm-up)")
            s0, k0 = _process_cpu_seconds(side_pid), kc_cpu()
            with ui.bar("pass-through", requests) as progress:
                passthrough = asyncio.run(_interleaved(direct_base, sidecar_base, "GET", passthrough_path,
                                                       None, requests, warmup, concurrency, progress))
            _cpu_per_request(passthrough, s0, _process_cpu_seconds(side_pid), k0, kc_cpu(), requests + warmup)
            ui.phase(f"captured: {requests} pairs of client-credentials grants (+{warmup} warm-up), with the "
                     f"fsync reference (write + fdatasync in {root}) sampled in blocks between them")
            probe = FsyncProbe(root)
            s0, k0 = _process_cpu_seconds(side_pid), kc_cpu()
            try:
                with ui.bar("captured", requests) as progress:
                    captured = asyncio.run(_interleaved(direct_base, sidecar_base, "POST", token_path, cc_form,
                                                        requests, warmup, concurrency, progress, probe))
                probe.sample(10)
            finally:
                probe.close()
            _cpu_per_request(captured, s0, _process_cpu_seconds(side_pid), k0, kc_cpu(), requests + warmup)
            fsync = probe.summary()
            ui.phase(f"CPU per browser login: {logins} logins through the sidecar (+5 warm-up, 3 s idle)")
            asyncio.run(_logins(sidecar_base, 5, lambda n: None))
            s0, k0, t0 = _process_cpu_seconds(side_pid), kc_cpu(), time.monotonic()
            time.sleep(3.0)
            s1, k1, t1 = _process_cpu_seconds(side_pid), kc_cpu(), time.monotonic()
            idle_side, idle_kc = (s1 - s0) / (t1 - t0), (k1 - k0) / (t1 - t0)
            with ui.bar("logins", logins) as progress:
                (u0, y0), k0, t0 = _process_times(side_pid), kc_cpu(), time.monotonic()
                ok = asyncio.run(_logins(sidecar_base, logins, progress))
                (u1, y1), k1, t1 = _process_times(side_pid), kc_cpu(), time.monotonic()
            wall = t1 - t0
            side_user, side_sys = u1 - u0, y1 - y0
            side_cpu = max(0.0, (side_user + side_sys) - idle_side * wall)
            kc_cpu_used = max(0.0, (k1 - k0) - idle_kc * wall)
        ui.phase("verifying the sidecar's ledger and counting its records")
        report = verify_directory(data, KeyStore(data).trust())
    finally:
        if kc is not None:
            kc.stop()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)

    side_per_login = side_cpu / logins * 1000 if logins else 0.0
    kc_per_login = kc_cpu_used / logins * 1000 if logins else 0.0
    ratio = side_per_login / kc_per_login if kc_per_login else 0.0
    fsync_ms = fsync["p50_us"] / 1000
    targets = [
        Target("pass-through added latency p50", passthrough["added_p50_ms"], 0.3, "ms", False,
               "0.3 ms (brief §9)"),
        Target("captured added latency p50", captured["added_p50_ms"], 1.5 * fsync_ms, "ms", False,
               f"1.5 x this disk's fsync p50 ({fsync_ms:.3f} ms)"),
        Target("sidecar CPU per login / Keycloak's", ratio * 100, 2.0, "%", False,
               f"2% of Keycloak's CPU per login ({kc_per_login:.1f} ms)"),
    ]
    return {
        "benchmark": "proxy",
        "machine": machine,
        "config": {"requests": requests, "logins": logins, "concurrency": concurrency, "warmup": warmup,
                   "upstream": upstream or "started by the benchmark",
                   "sidecar": "subprocess: python -m sidecar serve",
                   "kept": str(root) if keep else None},
        "references": {"fsync_p50_us": fsync["p50_us"], "fsync_p99_us": fsync["p99_us"],
                       "keycloak_startup_s": kc.startup_seconds if kc is not None else None},
        "results": {
            "passthrough": passthrough,
            "captured": captured,
            "login": {"logins": logins, "succeeded": ok, "seconds": wall,
                      "sidecar_cpu_ms_per_login": side_per_login, "keycloak_cpu_ms_per_login": kc_per_login,
                      "ratio_percent": ratio * 100, "idle_cpu_share_sidecar": idle_side,
                      "sidecar_user_ms_per_login": side_user / logins * 1000,
                      "sidecar_sys_ms_per_login": side_sys / logins * 1000,
                      "idle_cpu_share_keycloak": idle_kc,
                      "cpu_clock_resolution_ms": 1000 / os.sysconf("SC_CLK_TCK")},
            "ledger": {"records": report.records, "verdict": "intact" if report.ok else "findings",
                       "types": dict(sorted(report.types.items()))},
        },
        "targets": [t.to_json() for t in targets],
    }


# ============================================================================================ replication

_FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "bench-not-a-secret",
    "AWS_SECRET_ACCESS_KEY": "bench-not-a-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@contextlib.contextmanager
def _fake_aws_env(nowhere: Path) -> Iterator[dict[str, str]]:
    """Fake credentials for the loopback S3 server; no real AWS configuration is read. Restored after."""
    values = {**_FAKE_AWS, "AWS_CONFIG_FILE": str(nowhere), "AWS_SHARED_CREDENTIALS_FILE": str(nowhere)}
    removed = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")
    saved = {k: os.environ.get(k) for k in (*values, *removed)}
    os.environ.update(values)
    for name in removed:
        os.environ.pop(name, None)
    try:
        yield {k: v for k, v in os.environ.items()}
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


@contextlib.contextmanager
def _moto_server(log_file: Path, env: dict[str, str]) -> Iterator[str]:
    """moto's S3 API as a separate process on 127.0.0.1 (like a real store: not sharing our GIL)."""
    from sidecar.harness.keycloak import free_port

    port = free_port()
    with log_file.open("ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/moto-api/", 60, accept_any_status=True)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop_group(proc, grace=10.0)


async def _steady_load(data_dir: Path, store_url: str, *, rate: float, seconds: float, segment_max_bytes: int,
                       seed: int, progress: Callable[[int], None],
                       prepare: Callable[[], Awaitable[None]] | None = None) -> dict[str, Any]:
    """Append at `rate` events/s for `seconds` with a Replicator shipping to `store_url`."""
    from sidecar.ledger.writer import Ledger, LedgerConfig
    from sidecar.replicate.replicator import Replicator
    from sidecar.replicate.store import open_store

    if prepare is not None:
        await prepare()
    events = identity_events(int(rate * seconds) + 1, seed=seed)
    store = open_store(store_url, retention_days=1)
    ledger = await Ledger.open(data_dir, config=LedgerConfig(segment_max_bytes=segment_max_bytes))
    rep = Replicator(data_dir, store, interval_s=0.2)
    ledger.subscribers.append(rep.on_commit)
    rep.start()
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[Any]] = []
    sent = 0
    try:
        t0 = loop.time()
        while (now := loop.time() - t0) < seconds:
            due = min(len(events), int(now * rate))
            while sent < due:
                tasks.append(loop.create_task(ledger.append(events[sent])))
                sent += 1
            progress(sent)
            await asyncio.sleep(0.005)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        elapsed = loop.time() - t0
    finally:
        await ledger.close()
        await rep.stop(drain_timeout_s=30.0)
        status = rep.status()
        await store.close()
    failed = sum(1 for r in results if isinstance(r, BaseException))
    lags = list(rep.lags_ms)
    return {"appended": sent - failed, "failed": failed, "seconds": elapsed,
            "rate_achieved": (sent - failed) / elapsed if elapsed else 0.0, "lag_samples": len(lags),
            "lag_p50_ms": percentile(lags, 50), "lag_p99_ms": percentile(lags, 99),
            "lag_max_ms": max(lags, default=0.0), "objects_uploaded": status["objects"],
            "backlog_bytes_after": status["backlog_bytes"], "last_error": status["last_error"],
            "integrity_error": status["integrity_error"]}


async def _pull_verify(url: str, out: Path, trust: Any, workers: int) -> dict[str, Any]:
    from sidecar.audit.remote import pull_and_verify

    pulled_at = [0.0]

    def progress(done: int, total: int) -> None:  # called by pull per object: the last call ends the pull
        pulled_at[0] = time.perf_counter()

    t0 = time.perf_counter()
    report = await pull_and_verify(url, out, trust, workers=workers, progress=progress)
    elapsed = time.perf_counter() - t0
    pull_s = pulled_at[0] - t0 if pulled_at[0] else 0.0
    return {"records": report.records, "bytes": report.total_bytes, "seconds": elapsed,
            "pull_seconds": pull_s, "verify_seconds": elapsed - pull_s,
            "records_per_s": report.records / elapsed if elapsed else 0.0,
            "mb_per_s": report.total_bytes / elapsed / 1e6 if elapsed else 0.0,
            "verdict": "intact" if report.ok else "findings",
            "findings": [str(f) for f in report.findings[:5]]}


def run_replication(*, seconds: float = 20.0, rate: float = 1000.0, segment_max_bytes: int = 1024 * 1024,
                    data_dir: Path | None = None, keep: bool = False, ui: Ui | None = None) -> dict[str, Any]:
    """The replication benchmark; see `bench replication --help`."""
    from sidecar.ledger.keystore import KeyStore
    from sidecar.replicate.s3 import S3Store

    ui = ui or Ui()
    if data_dir is None:
        root = Path(tempfile.mkdtemp(prefix="bench-replication-"))
    else:
        data_dir.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="bench-replication-", dir=data_dir))
    machine = machine_info(root)
    cores = os.cpu_count() or 1
    results: dict[str, Any] = {}
    try:
        # (a) a directory store
        led = root / "ledger-dir"
        trust = KeyStore(led).init(ORIGIN)
        ui.phase(f"directory store: {rate:g} events/s for {seconds:g} s")
        with ui.bar("directory store", int(rate * seconds)) as progress:
            load = asyncio.run(_steady_load(led, str(root / "store-dir"), rate=rate, seconds=seconds,
                                            segment_max_bytes=segment_max_bytes, seed=1, progress=progress))
        ui.phase("pull + verify of the directory store")
        pulled = asyncio.run(_pull_verify(str(root / "store-dir"), root / "pull-dir", trust, cores))
        results["directory"] = {**load, "pull_verify": pulled}

        # (b) a loopback S3 (moto server, Object Lock bucket)
        ui.phase("starting a loopback S3 server (moto, separate process)")
        with _fake_aws_env(root / "no-aws-config") as env, _moto_server(root / "moto.log", env) as endpoint:
            bucket = f"ledger-bench-{secrets.token_hex(6)}"
            url = f"s3://{bucket}/ledger?endpoint={endpoint}&region=us-east-1"

            async def make_bucket() -> None:
                store = S3Store(bucket, "ledger", endpoint_url=endpoint, region="us-east-1", retention_days=1)
                try:
                    await store.ensure_bucket(create=True)
                finally:
                    await store.close()

            led = root / "ledger-s3"
            trust = KeyStore(led).init(ORIGIN)
            ui.phase(f"S3 store (Object Lock bucket {bucket}): {rate:g} events/s for {seconds:g} s")
            with ui.bar("S3 store", int(rate * seconds)) as progress:
                load = asyncio.run(_steady_load(led, url, rate=rate, seconds=seconds,
                                                segment_max_bytes=segment_max_bytes, seed=2,
                                                progress=progress, prepare=make_bucket))
            ui.phase("pull + verify of the bucket")
            pulled = asyncio.run(_pull_verify(url, root / "pull-s3", trust, cores))
            results["s3"] = {**load, "pull_verify": pulled}
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    targets = [Target(f"replication lag p99, {name} store", res["lag_p99_ms"], 2000.0, "ms", False,
                      "2 s after commit (brief §9)") for name, res in results.items()]
    return {
        "benchmark": "replication",
        "machine": machine,
        "config": {"seconds": seconds, "rate": rate, "segment_max_bytes": segment_max_bytes,
                   "replication_interval_s": 0.2, "kept": str(root) if keep else None},
        "results": results,
        "targets": [t.to_json() for t in targets],
    }


# ============================================================================================ output


def _fmt(value: Any, digits: int = 0) -> str:
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _targets_table(result: dict[str, Any]) -> Table:
    table = Table(title=f"{result['benchmark']}: brief §9 targets", title_justify="left")
    for col in ("target", "measured", "limit", "derived from (same run)", "result"):
        table.add_column(col, justify="right" if col in ("measured", "limit") else "left")
    for t in result["targets"]:
        digits = 3 if t["unit"] == "ms" and t["limit"] < 100 else (2 if t["unit"] == "%" else 0)
        table.add_row(t["name"], f"{_fmt(float(t['measured']), digits)} {t['unit']}",
                      f"{t['comparison']} {_fmt(float(t['limit']), digits)}", t["reference"],
                      "[green]PASS[/green]" if t["passed"] else f"[red]{t['verdict']}[/red]")
    return table


def _kv_table(title: str, rows: Sequence[tuple[str, str, str]]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("reference / note")
    for row in rows:
        table.add_row(*row)
    return table


def _machine_line(m: dict[str, Any]) -> str:
    load = ", ".join(f"{x:.2f}" for x in m["load_average"])
    fs = f", {m['filesystem']}" if "filesystem" in m else ""
    return (f"{m['date']}  {m['cpu']}, {m['cores']} cores, load average {load}, Linux {m['kernel']}, "
            f"Python {m['python']}{fs}")


def print_ledger(result: dict[str, Any], console: Console) -> None:
    ref, res, tr = result["references"], result["results"], result["tradeoff"]
    sign = (f"{_fmt(ref['ed25519_sign_per_s'])}: mean of "
            + " and ".join(_fmt(x) for x in ref["ed25519_sign_per_s_before_after"]))
    enc_rate = res["encode_record_per_s"]
    enc = f"encode_record alone: {1e6 / enc_rate:.1f} us" if enc_rate else ""
    lat = f"{res['latency_p50_us']:.0f} / {res['latency_p99_us']:.0f} us"
    segs = (f"{_fmt(res['verified_records'])} records, {res['segments']} segments "
            f"({res['sealed_segments']} sealed)")
    batched = _fmt(tr[f"sign_per_{tr['batch']}_per_s"])
    console.print(_machine_line(result["machine"]))
    console.print(_kv_table("ledger: measured", [
        ("durable signed appends/s", _fmt(res["appends_per_s"]),
         f"{res['appends_vs_sign_rate']:.2f} x Ed25519 signs/s on one core ({sign})"),
        ("events, appenders in flight", f"{_fmt(res['events'])}, {_fmt(result['config']['concurrency'])}",
         f"{_fmt(res['commits'])} commits, mean batch {res['mean_batch']:.0f}, max {_fmt(res['max_batch'])}"),
        ("CPU per append (whole process)", f"{res['cpu_us_per_append']:.1f} us",
         enc),
        ("appends per CPU-second", _fmt(res["appends_per_cpu_s"]),
         f"Ed25519 signs per CPU-second: {_fmt(ref['ed25519_sign_per_cpu_s'])} (contention-free view)"),
        ("append latency p50 / p99 (1 appender)", lat,
         f"{res['latency_p50_vs_fsync_p50']:.2f} x fsync p50 ({ref['fsync_p50_us']:.0f} us; p99 "
         f"{ref['fsync_p99_us']:.0f} us)"),
        ("verified records/s, all cores", _fmt(res["verify_records_per_s"]),
         f"{res['verify_vs_hash_loop_all_cores']:.1%} of SHA-256 loop x {ref['cores']} cores "
         f"({_fmt(ref['sha256_records_per_s_all_cores'])}/s)"),
        ("verified records/s, 1 worker", _fmt(res["verify_records_per_s_1worker"]),
         f"SHA-256 loop, 1 core: {_fmt(ref['sha256_records_per_s_1core'])}/s"),
        ("verdict", "intact" if res["verify_ok"] else f"{res['verify_findings']} findings",
         segs),
        ("record body, mean", f"{res['record_body_mean_bytes']:.0f} B", "canonical JSON (JCS)"),
        ("bytes/event at rest, raw", f"{res['raw_bytes_per_event']:.0f} B", "segment bytes / records"),
        ("bytes/event at rest, compressed", f"{res['compressed_bytes_per_event']:.0f} B",
         f"{res['compression']} of {res['compressed_scope']}"),
    ]))
    console.print(_kv_table("signature per record vs one per batch checkpoint", [
        ("leaf hash + sign every record", f"{_fmt(tr['sign_every_record_per_s'])}/s",
         f"{tr['sign_cost_us_per_record_every']:.1f} us/record"),
        (f"leaf hash + one sign per {tr['batch']}", f"{batched}/s",
         f"{tr['sign_cost_us_per_record_batched']:.2f} us/record, {tr['speedup']:.0f}x"),
        ("verify ceiling, a signature on every record",
         f"{_fmt(tr['verify_every_record_ceiling_all_cores'])}/s",
         f"Ed25519 verify {_fmt(tr['ed25519_verify_per_s_1core'])}/s/core x {ref['cores']}"),
        ("verify measured, checkpoint signatures", f"{_fmt(tr['verify_measured_checkpoint_scheme'])}/s",
         f"+{tr['extra_raw_bytes_per_record']} B/record (incompressible) with per-record signatures"),
    ]))
    console.print(_targets_table(result))


def print_proxy(result: dict[str, Any], console: Console) -> None:
    res, ref = result["results"], result["references"]
    console.print(_machine_line(result["machine"]))
    table = Table(title="proxy: latency through the sidecar vs direct, and CPU per request (ms); discovery = GET "
                        "/realms/ledger-test/.well-known/openid-configuration, cc grant = client_credentials "
                        "for ledger-robot", title_justify="left")
    for col in ("request", "pairs", "direct p50", "direct p99", "sidecar p50", "sidecar p99", "added p50",
                "added p99", "paired median", "sidecar CPU/req", "Keycloak CPU/req"):
        table.add_column(col, justify="left" if col == "request" else "right")
    for name, key in (("pass-through (discovery)", "passthrough"), ("captured (cc grant)", "captured")):
        r = res[key]
        keys = ("direct_p50_ms", "direct_p99_ms", "proxied_p50_ms", "proxied_p99_ms", "added_p50_ms",
                "added_p99_ms", "paired_added_median_ms")
        table.add_row(name, _fmt(r["requests"]), *(f"{r[k]:.3f}" for k in keys),
                      f"{r['sidecar_cpu_us_per_request'] / 1000:.3f}", f"{r['keycloak_cpu_us_per_request'] / 1000:.3f}")
    console.print(table)
    login = res["login"]
    console.print(_kv_table("proxy: CPU per captured browser login", [
        ("logins (succeeded)", f"{login['logins']} ({login['succeeded']})", f"{login['seconds']:.1f} s"),
        ("sidecar CPU per login", f"{login['sidecar_cpu_ms_per_login']:.2f} ms",
         f"user {login['sidecar_user_ms_per_login']:.2f} + system {login['sidecar_sys_ms_per_login']:.2f} ms; "
         f"idle share {login['idle_cpu_share_sidecar']:.3f} CPU subtracted"),
        ("Keycloak CPU per login", f"{login['keycloak_cpu_ms_per_login']:.1f} ms",
         f"idle share {login['idle_cpu_share_keycloak']:.3f} CPU subtracted"),
        ("ratio", f"{login['ratio_percent']:.2f} %",
         f"/proc/<pid>/stat, {login['cpu_clock_resolution_ms']:.0f} ms ticks"),
        ("fsync p50 / p99 (reference)", f"{ref['fsync_p50_us']:.0f} / {ref['fsync_p99_us']:.0f} us",
         "same disk"),
        ("sidecar ledger", f"{_fmt(res['ledger']['records'])} records", res["ledger"]["verdict"] + ": " +
         ", ".join(f"{k} {v}" for k, v in res["ledger"]["types"].items())),
    ]))
    console.print(_targets_table(result))


def print_replication(result: dict[str, Any], console: Console) -> None:
    console.print(_machine_line(result["machine"]))
    cfg = result["config"]
    table = Table(title=f"replication: {cfg['rate']:g} events/s for {cfg['seconds']:g} s, segments of "
                        f"{cfg['segment_max_bytes'] // 1024} KiB", title_justify="left")
    for col in ("store", "appended", "rate/s", "lag p50 ms", "lag p99 ms", "lag max ms", "objects",
                "pull+verify rec/s", "MB/s", "pull s", "verify s", "verdict"):
        table.add_column(col, justify="left" if col in ("store", "verdict") else "right")
    for name, r in result["results"].items():
        pv = r["pull_verify"]
        table.add_row(name, _fmt(r["appended"]), _fmt(r["rate_achieved"]), f"{r['lag_p50_ms']:.0f}",
                      f"{r['lag_p99_ms']:.0f}", f"{r['lag_max_ms']:.0f}", _fmt(r["objects_uploaded"]),
                      _fmt(pv["records_per_s"]), f"{pv['mb_per_s']:.1f}", f"{pv['pull_seconds']:.1f}",
                      f"{pv['verify_seconds']:.1f}", pv["verdict"])
    console.print(table)
    console.print(_targets_table(result))


def _console() -> Console:
    # Off a terminal (a pipe, a file, a doc being written) rich would squeeze the tables into 80 columns.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 150)


def _emit(result: dict[str, Any], as_json: bool, printer: Callable[[dict[str, Any], Console], None]) -> None:
    if as_json:
        click.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    else:
        printer(result, _console())


# ============================================================================================ commands

_DATA_HELP = "directory on the disk to measure (a fresh subdirectory is made and removed after)"


@click.group()
def bench() -> None:
    """Measure brief §9's targets on this machine, each against a reference measured in the same run."""


@bench.command("ledger")
@click.option("--events", type=click.IntRange(min=100), default=200_000, show_default=True,
              help="events to append in the throughput run")
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path, file_okay=False),
              help=_DATA_HELP)
@click.option("--concurrency", type=click.IntRange(1, 20_000), default=2000, show_default=True,
              help="appenders in flight (group commit forms batches from them)")
@click.option("--latency-appends", type=click.IntRange(min=10), default=2000, show_default=True,
              help="sequential appends of the one-appender latency run")
@click.option("--segment-max-bytes", type=click.IntRange(min=4096), default=8 * 1024 * 1024,
              show_default=True)
@click.option("--with-index", is_flag=True,
              help="also run the SQLite lookup index as `sidecar serve` wires it (a commit subscriber)")
@click.option("--reference-seconds", type=click.FloatRange(min=0.05), default=1.0, show_default=True,
              help="length of each reference loop (Ed25519, SHA-256, signing trade-off)")
@click.option("--keep", is_flag=True, help="keep the ledgers written (their path is in the result)")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def ledger_cmd(events: int, data_dir: Path, concurrency: int, latency_appends: int, segment_max_bytes: int,
               with_index: bool, reference_seconds: float, keep: bool, as_json: bool) -> None:
    """Durable signed appends/s, append latency, verification rate and bytes per event at rest."""
    result = run_ledger(data_dir, events=events, concurrency=concurrency, latency_appends=latency_appends,
                        segment_max_bytes=segment_max_bytes, with_index=with_index, keep=keep,
                        reference_seconds=reference_seconds)
    _emit(result, as_json, print_ledger)


@bench.command("proxy")
@click.option("--requests", type=click.IntRange(min=10), default=400, show_default=True,
              help="interleaved direct/sidecar pairs per request kind")
@click.option("--logins", type=click.IntRange(min=1), default=150, show_default=True,
              help="browser-style logins for the CPU measurement")
@click.option("--concurrency", type=click.IntRange(1, 64), default=1, show_default=True,
              help="clients issuing the interleaved pairs at once")
@click.option("--upstream", default=None,
              help="reuse a running Keycloak at this URL (realm ledger-test imported, --hostname naming "
                   "http://127.0.0.1:<--listen-port>) instead of starting one")
@click.option("--upstream-pid", type=int, default=None,
              help="Keycloak's pid for --upstream (default: found by port)")
@click.option("--listen-port", type=int, default=None, help="the sidecar's port (default: a free one)")
@click.option("--data", "data_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="where the sidecar's ledger and Keycloak's copy go (default: a temporary directory)")
@click.option("--keep", is_flag=True, help="keep the sidecar's ledger and logs")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def proxy_cmd(requests: int, logins: int, concurrency: int, upstream: str | None, upstream_pid: int | None,
              listen_port: int | None, data_dir: Path | None, keep: bool, as_json: bool) -> None:
    """Latency added to real Keycloak requests, and the sidecar's CPU per captured login."""
    if upstream is not None and listen_port is None:
        raise click.UsageError("--upstream needs --listen-port: the port Keycloak's --hostname names")
    result = run_proxy(requests=requests, logins=logins, concurrency=concurrency, upstream=upstream,
                       upstream_pid=upstream_pid, listen_port=listen_port, data_dir=data_dir, keep=keep)
    _emit(result, as_json, print_proxy)


@bench.command("replication")
@click.option("--seconds", type=click.FloatRange(min=1), default=20.0, show_default=True,
              help="length of the steady load, per store")
@click.option("--rate", type=click.FloatRange(min=1), default=1000.0, show_default=True,
              help="events per second")
@click.option("--segment-max-bytes", type=click.IntRange(min=4096), default=1024 * 1024, show_default=True,
              help="small enough that segments seal (and upload whole) during the run")
@click.option("--data", "data_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="where the ledgers and the directory store go (default: a temporary directory)")
@click.option("--keep", is_flag=True, help="keep the ledgers, stores and pulled bundles")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def replication_cmd(seconds: float, rate: float, segment_max_bytes: int, data_dir: Path | None, keep: bool,
                    as_json: bool) -> None:
    """Replication lag to a directory store and to a loopback S3, and pull + verify throughput."""
    result = run_replication(seconds=seconds, rate=rate, segment_max_bytes=segment_max_bytes,
                             data_dir=data_dir, keep=keep)
    _emit(result, as_json, print_replication)


@bench.command("all")
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path, file_okay=False),
              help=_DATA_HELP)
@click.option("--json", "as_json", is_flag=True, help="print the results as one JSON object")
def all_cmd(data_dir: Path, as_json: bool) -> None:
    """The three with modest sizes: ledger 100k events, proxy 200 pairs + 100 logins, replication 10 s."""
    results = {
        "ledger": run_ledger(data_dir, events=100_000),
        "proxy": run_proxy(requests=200, logins=100, data_dir=data_dir),
        "replication": run_replication(seconds=10.0, data_dir=data_dir),
    }
    if as_json:
        click.echo(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
        return
    console = _console()
    print_ledger(results["ledger"], console)
    print_proxy(results["proxy"], console)
    print_replication(results["replication"], console)
    passed = sum(t["passed"] for r in results.values() for t in r["targets"])
    total = sum(len(r["targets"]) for r in results.values())
    console.print(f"targets met: {passed} of {total}")


if __name__ == "__main__":  # `python -m sidecar.bench.cli ledger --data DIR` works without the `sidecar` entry point
    bench()
