"""`bench ledger`: durable signed appends/s, append latency, verification rate, bytes per event at rest."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import gzip
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from sidecar import loop
from sidecar.bench.common import (
    ORIGIN,
    Target,
    Ui,
    fmt,
    identity_events,
    kv_table,
    machine_info,
    machine_line,
    percentile,
    targets_table,
)
from sidecar.bench.references import (
    FsyncProbe,
    ed25519_sign_rate,
    ed25519_verify_rate,
    encode_rate,
    read_walk_hash_rate,
    sha256_record_rate,
    signing_tradeoff,
)
from sidecar.core import framing, native


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


async def _append_many(
    data_dir: Path,
    events: Sequence[dict[str, Any]],
    concurrency: int,
    segment_max_bytes: int,
    progress: Callable[[int], None],
    with_index: bool = False,
) -> dict[str, Any]:
    """Append `events` through `Ledger.append` with `concurrency` appenders in flight."""
    async with _ledger(data_dir, segment_max_bytes=segment_max_bytes, with_index=with_index) as ledger:
        return await _drive(ledger, events, concurrency, progress)


async def _drive(
    ledger: Any, events: Sequence[dict[str, Any]], concurrency: int, progress: Callable[[int], None]
) -> dict[str, Any]:
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
    return {
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "commits": len(full),
        "mean_batch": sum(full) / len(full) if full else 0.0,
        "max_batch": max(full, default=0),
    }


# The parts of one append, in the order they happen (the keys of `_append_sequential`'s `parts`).
LATENCY_PARTS = (
    ("to_commit", "append() to the writer's commit"),
    ("build", "building the commit (encode, Merkle, one Ed25519 signature, frames) + hand-off to the file thread"),
    ("io", "pwrite + fdatasync (the writer's own)"),
    ("back", "file thread back to the event loop, and the commit's end"),
    ("to_caller", "commit's end back to the caller"),
)


async def _append_sequential(
    data_dir: Path,
    events: Sequence[dict[str, Any]],
    segment_max_bytes: int,
    with_index: bool = False,
    probe: FsyncProbe | None = None,
    io_times: list[float] | None = None,
    parts: dict[str, list[float]] | None = None,
) -> list[float]:
    """One appender, one append at a time; the latency of each in µs.

    Every 100 appends the fsync probe (if any) takes 10 samples, so reference and measurement
    see the same disk at the same time. With `io_times`, the writer's own pwrite + fdatasync
    inside each timed append is timed too (the `Ledger.write_at` seam), so what an append costs
    beyond its own fsync is known per append, whatever the shared disk does meanwhile. With
    `parts`, each append is split at the start and end of the writer's commit and of its write
    (`LATENCY_PARTS`; one clock, `perf_counter_ns`, read on both threads).
    """
    times: list[float] = []
    async with _ledger(data_dir, segment_max_bytes=segment_max_bytes, with_index=with_index) as ledger:
        for event in events[:50]:  # warm-up
            await ledger.append(event)
        inner = ledger.write_at
        commit = ledger._commit
        io_ns = [0]
        marks = [0, 0, 0, 0]  # commit start, write start, write end, commit end (the last write's)
        clock = time.perf_counter_ns

        def timed_write_at(fd: int, data: bytes, offset: int, do_fsync: bool) -> None:
            t0 = marks[1] = clock()
            try:
                inner(fd, data, offset, do_fsync)
            finally:
                marks[2] = clock()
                io_ns[0] += marks[2] - t0

        async def timed_commit(batch: Any) -> None:
            marks[0] = clock()
            try:
                await commit(batch)
            finally:
                marks[3] = clock()

        ledger.write_at = timed_write_at
        if parts is not None:
            ledger._commit = timed_commit  # the bench probes the one commit path through this seam
        for n, event in enumerate(events[50:]):
            if probe is not None and n % 100 == 0:
                probe.sample(10)
            io_ns[0] = 0
            t0 = clock()
            await ledger.append(event)
            t_end = clock()
            times.append((t_end - t0) / 1000)
            if io_times is not None:
                io_times.append(io_ns[0] / 1000)
            if parts is not None:
                cs, ws, we, ce = marks
                for key, ns in (
                    ("to_commit", cs - t0),
                    ("build", ws - cs),
                    ("io", we - ws),
                    ("back", ce - we),
                    ("to_caller", t_end - ce),
                ):
                    parts.setdefault(key, []).append(ns / 1000)
    return times


SUBJECT_POOL = 1000  # distinct users in the encryption run (a realm's active users; keys made before timing)


def _pool_id(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def _pooled(events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events with their users drawn from a pool, as a realm's returning users are (one id, one name each;
    the admin is one more user)."""
    out = []
    for i, e in enumerate(events):
        e = dict(e)
        for side in ("actor", "target"):
            party = e.get(side)
            if isinstance(party, dict) and party.get("kind") == "user" and party.get("id"):
                n = SUBJECT_POOL if party.get("username") == "carol" else (i * 7 + len(side)) % SUBJECT_POOL
                e[side] = {**party, "id": _pool_id(n), "username": "carol" if n == SUBJECT_POOL else f"user{n:05d}"}
        out.append(e)
    return out


async def _encrypted_or_not(
    data_dir: Path, events: Sequence[dict[str, Any]], concurrency: int, segment_max_bytes: int, subjects: Path | None
) -> dict[str, Any]:
    """One append run, plain or with the subject key store's encryption wired as `serve --subjects` wires it."""
    from sidecar.ledger.subjects import Protector, SubjectKeys
    from sidecar.policy.schema import PiiPolicy

    keys_s = 0.0
    async with _ledger(data_dir, segment_max_bytes=segment_max_bytes, with_index=False) as ledger:
        if subjects is not None:
            store = SubjectKeys.create(subjects)
            protect = Protector(store, PiiPolicy(), ledger.origin, ledger.clock.now_ns)
            t0 = time.perf_counter()
            for n in range(SUBJECT_POOL + 1):  # every user's key exists (fsynced) before the timed run
                store.ensure(_pool_id(n), ("carol" if n == SUBJECT_POOL else f"user{n:05d}",), 0)
            keys_s = time.perf_counter() - t0
            ledger.protect = protect
        run = await _drive(ledger, events, concurrency, lambda n: None)
    segments, bodies = _read_segments(data_dir)
    records = sum(s.records for s in segments)
    run.update(
        records=records,
        body_mean=sum(map(len, bodies)) / len(bodies) if bodies else 0.0,
        raw_per_record=sum(s.size for s in segments) / records if records else 0.0,
        gz_per_record=sum(len(gzip.compress(s.path.read_bytes(), 6)) for s in segments) / records if records else 0.0,
    )
    if subjects is not None:
        run.update(subjects=len(SubjectKeys.open(subjects)), key_setup_s=keys_s)
    return run


def _encryption_cost(root: Path, events: int, concurrency: int, segment_max_bytes: int) -> dict[str, Any]:
    """Cost per record of encrypting identifying values, as a ratio against plain appends in the same run.

    Plain, encrypted, plain again (the machine is shared; the plain figure is the mean of both runs).
    """
    from sidecar.ledger.keystore import KeyStore

    evs = _pooled(identity_events(events, seed=17))
    runs: dict[str, list[dict[str, Any]]] = {"plain": [], "encrypted": []}
    for n, kind in enumerate(("plain", "encrypted", "plain")):
        where = root / f"pii-{n}-{kind}"
        KeyStore(where).init(ORIGIN)
        runs[kind].append(
            loop.run(
                _encrypted_or_not(
                    where,
                    evs,
                    concurrency,
                    segment_max_bytes,
                    root / f"pii-{n}-subjects" if kind == "encrypted" else None,
                )
            )
        )

    def cpu_us(r: dict[str, Any]) -> float:
        return float(r["cpu_seconds"]) / events * 1e6

    plain_cpu = sum(map(cpu_us, runs["plain"])) / len(runs["plain"])
    enc, plain = runs["encrypted"][0], runs["plain"][0]
    return {
        "events": events,
        "subject_pool": SUBJECT_POOL,
        "subjects_created": enc["subjects"],
        "key_setup_ms_per_subject": enc["key_setup_s"] / max(1, enc["subjects"]) * 1e3,
        "cpu_us_per_record_plain": plain_cpu,
        "cpu_us_per_record_plain_runs": [cpu_us(r) for r in runs["plain"]],
        "cpu_us_per_record_encrypted": cpu_us(enc),
        "cpu_ratio": cpu_us(enc) / plain_cpu if plain_cpu else 0.0,
        "body_bytes_plain": plain["body_mean"],
        "body_bytes_encrypted": enc["body_mean"],
        "raw_bytes_per_record_plain": plain["raw_per_record"],
        "raw_bytes_per_record_encrypted": enc["raw_per_record"],
        "raw_bytes_ratio": enc["raw_per_record"] / plain["raw_per_record"] if plain["raw_per_record"] else 0.0,
        "gz_bytes_per_record_plain": plain["gz_per_record"],
        "gz_bytes_per_record_encrypted": enc["gz_per_record"],
        "gz_bytes_ratio": enc["gz_per_record"] / plain["gz_per_record"] if plain["gz_per_record"] else 0.0,
    }


def _verify_peak_rss_kib(ledger_dir: Path, workers: int) -> int:
    """Peak RSS (KiB) of the largest process of `sidecar verify --thorough` run as a child of a fresh parent.

    The parent has no other children, so RUSAGE_CHILDREN's maximum covers the verifier and its workers only.
    """
    import subprocess
    import sys

    script = (
        "import resource, subprocess, sys; subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=False);"
        " print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            sys.executable,
            "-m",
            "sidecar",
            "verify",
            str(ledger_dir),
            "--trust",
            str(ledger_dir / "trust.json"),
            "--thorough",
            "--json",
            "--workers",
            str(workers),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.strip() or 0)


def run_ledger(
    data_dir: Path,
    *,
    events: int = 200_000,
    concurrency: int = 2000,
    latency_appends: int = 2000,
    segment_max_bytes: int = 8 * 1024 * 1024,
    with_index: bool = False,
    keep: bool = False,
    ui: Ui | None = None,
    reference_seconds: float = 1.0,
) -> dict[str, Any]:
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
        # The corpus is the benchmark's input, not the ledger's state (a sidecar holds an event only
        # until its commit): frozen, as `serve` freezes its start-up heap, so the collector's full
        # passes do not walk 200,000 prepared events and bill the appends for it.
        gc.freeze()

        ui.phase(f"appending {events:,} events, {concurrency} appenders in flight (durable, signed)")
        bulk = root / "throughput"
        trust = KeyStore(bulk).init(ORIGIN)
        with ui.bar("appending", events) as progress:
            run = loop.run(_append_many(bulk, evs, concurrency, segment_max_bytes, progress, with_index))
        del evs
        ui.phase("reference: Ed25519 signing loop (after the append run)")
        sign_rates.append(ed25519_sign_rate(reference_seconds))
        sign_rate = sum(sign_rates) / len(sign_rates)

        ui.phase(
            f"append latency: one appender, {latency_appends:,} sequential appends, with the fsync "
            f"reference (write + fdatasync in {data_dir}) sampled in blocks between them"
        )
        lat_dir = root / "latency"
        KeyStore(lat_dir).init(ORIGIN)
        probe = FsyncProbe(root)
        io_times: list[float] = []
        parts: dict[str, list[float]] = {}
        try:
            latencies = loop.run(
                _append_sequential(lat_dir, lat_events, segment_max_bytes, with_index, probe, io_times, parts)
            )
            probe.sample(10)
        finally:
            probe.close()
        fsync = probe.summary()

        ui.phase("reference: SHA-256 of every record body of the same segments, in memory")
        segments, bodies = _read_segments(bulk)
        sha_rate = sha256_record_rate(bodies, reference_seconds)
        paths = [seg.path for seg in segments]
        # The verification target's reference is the bare loop over the same files on all cores; it
        # runs before and after each verification (the mean of all its runs is the reference).
        ui.phase(
            f"verification (the full procedure, the only one): twice with {cores} workers, then with 1, each "
            f"between runs of the bare read + frame walk + SHA-256 loop ({cores} processes)"
        )
        loop_rates = [read_walk_hash_rate(paths, cores)[0]]
        t0 = time.perf_counter()
        report = verify_directory(bulk, trust, workers=cores, thorough=True)
        verify_s = time.perf_counter() - t0
        loop_rates.append(read_walk_hash_rate(paths, cores)[0])
        t0 = time.perf_counter()
        again = verify_directory(bulk, trust, workers=cores)
        again_s = time.perf_counter() - t0
        loop_rates.append(read_walk_hash_rate(paths, cores)[0])
        t0 = time.perf_counter()
        report1 = verify_directory(bulk, trust, workers=1, thorough=True)
        verify1_s = time.perf_counter() - t0
        loop1 = read_walk_hash_rate(paths, 1)[0]
        loop_rate = sum(loop_rates) / len(loop_rates)
        ui.phase("peak RSS of `sidecar verify --thorough` on this ledger (a child process and its workers)")
        verify_rss = _verify_peak_rss_kib(bulk, cores)
        ui.phase("signing trade-off, encode rate")
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
        pii_events = min(events, 20_000)
        ui.phase(
            f"encryption of identifying values (subject key store): {pii_events:,} events plain, "
            f"encrypted, plain again ({SUBJECT_POOL} users)"
        )
        pii_cost = _encryption_cost(root, pii_events, min(concurrency, 500), segment_max_bytes)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)

    appends_per_s = events / run["seconds"] if run["seconds"] else 0.0
    verify_runs = [r.records / t if t else 0.0 for r, t in ((report, verify_s), (again, again_s))]
    verify_per_s = sum(verify_runs) / len(verify_runs)
    hash_all = sha_rate * cores
    lat_p50 = percentile(latencies, 50)
    compressed_per_event = gz_bytes / gz_records if gz_records else 0.0
    targets = [
        Target(
            "durable signed appends/s",
            appends_per_s,
            1.5 * sign_rate,
            "appends/s",
            True,
            f"1.5 x single-core Ed25519 signs/s ({sign_rate:,.0f}/s)",
        ),
        Target(
            "full verification vs bare loop",
            verify_per_s,
            0.5 * loop_rate,
            "records/s",
            True,
            f"50% of the bare loop over the same segment files on {cores} cores ({loop_rate:,.0f}/s); "
            f"mean of 2 runs ({', '.join(f'{r:,.0f}' for r in verify_runs)})",
        ),
        Target(
            "full verification, 1M/s goal",
            verify_per_s,
            1_000_000,
            "records/s",
            True,
            f"1M records/s on {cores} cores (brief §9)",
        ),
        Target(
            "append latency p50",
            lat_p50,
            1.5 * fsync["p50_us"],
            "us",
            False,
            f"1.5 x this disk's fsync p50 ({fsync['p50_us']:.0f} us)",
        ),
        Target(
            "bytes/event at rest, compressed",
            compressed_per_event,
            300,
            "bytes",
            False,
            "300 bytes, gzip-6 of sealed segments",
        ),
    ]
    return {
        "benchmark": "ledger",
        "machine": machine,
        "config": {
            "events": events,
            "concurrency": concurrency,
            "latency_appends": latency_appends,
            "segment_max_bytes": segment_max_bytes,
            "with_index": with_index,
            "data": str(data_dir),
            "kept": str(root) if keep else None,
        },
        "references": {
            "cores": cores,
            "ed25519_sign_per_s": sign_rate,
            "ed25519_sign_per_s_before_after": sign_rates,
            "ed25519_sign_per_cpu_s": sign_cpu,
            "ed25519_verify_per_s": verify_rate,
            "fsync_p50_us": fsync["p50_us"],
            "fsync_p99_us": fsync["p99_us"],
            "sha256_records_per_s_1core": sha_rate,
            "sha256_records_per_s_all_cores": hash_all,
            "read_walk_hash_records_per_s_all_cores": loop_rate,
            "read_walk_hash_records_per_s_all_cores_runs": loop_rates,
            "read_walk_hash_records_per_s_1core": loop1,
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
            # The same appends split: their own pwrite + fdatasync, and everything else on the path
            # (queueing, wake-ups, encode, sign, the hand-off to the file thread and back).
            "latency_own_fsync_p50_us": percentile(io_times, 50),
            "latency_beyond_own_fsync_p50_us": percentile(
                [a - b for a, b in zip(latencies, io_times, strict=True)], 50
            ),
            "latency_p50_vs_own_fsync_p50": lat_p50 / percentile(io_times, 50) if percentile(io_times, 50) else 0.0,
            # p50 of each part of the same appends (LATENCY_PARTS); the p50s need not add up to the total's.
            "latency_parts_p50_us": {key: percentile(parts.get(key, []), 50) for key, _ in LATENCY_PARTS},
            "verified_records": report.records,
            "verify_ok": report.ok and report1.ok and again.ok,
            "verify_mode": report.mode,
            "verify_scan": native.implementation(),  # the record loop: C, or pure Python (SIDECAR_NATIVE=0)
            "verify_findings": len(report.findings),
            "verify_seconds": verify_s,
            "verify_records_per_s": verify_per_s,
            "verify_records_per_s_1worker": report1.records / verify1_s if verify1_s else 0.0,
            "verify_vs_hash_loop_all_cores": verify_per_s / hash_all if hash_all else 0.0,
            "verify_vs_read_walk_hash_loop": verify_per_s / loop_rate if loop_rate else 0.0,
            "verify_records_per_s_runs": verify_runs,
            "verify_peak_rss_kib": verify_rss,
            "segments": len(segments),
            "sealed_segments": sum(1 for s in segments if s.sealed),
            "record_body_mean_bytes": body_mean,
            "raw_bytes_per_event": raw_bytes / records if records else 0.0,
            "compressed_bytes_per_event": compressed_per_event,
            "compression": "gzip level 6",
            "compressed_scope": scope,
            "encode_record_per_s": enc_rate,
        },
        "encryption": pii_cost,
        "tradeoff": {
            **tradeoff,
            "ed25519_verify_per_s_1core": verify_rate,
            "verify_every_record_ceiling_all_cores": verify_rate * cores,
            "verify_measured_checkpoint_scheme": verify_per_s,
            "extra_raw_bytes_per_record": 64,
        },
        "targets": [t.to_json() for t in targets],
    }


def print_ledger(result: dict[str, Any], console: Console) -> None:
    ref, res, tr = result["references"], result["results"], result["tradeoff"]
    sign = f"{fmt(ref['ed25519_sign_per_s'])}: mean of " + " and ".join(
        fmt(x) for x in ref["ed25519_sign_per_s_before_after"]
    )
    enc_rate = res["encode_record_per_s"]
    enc = f"encode_record alone: {1e6 / enc_rate:.1f} us" if enc_rate else ""
    lat = f"{res['latency_p50_us']:.0f} / {res['latency_p99_us']:.0f} us"
    segs = f"{fmt(res['verified_records'])} records, {res['segments']} segments ({res['sealed_segments']} sealed)"
    batched = fmt(tr[f"sign_per_{tr['batch']}_per_s"])
    console.print(machine_line(result["machine"]))
    console.print(
        kv_table(
            "ledger: measured",
            [
                (
                    "durable signed appends/s",
                    fmt(res["appends_per_s"]),
                    f"{res['appends_vs_sign_rate']:.2f} x Ed25519 signs/s on one core ({sign})",
                ),
                (
                    "events, appenders in flight",
                    f"{fmt(res['events'])}, {fmt(result['config']['concurrency'])}",
                    f"{fmt(res['commits'])} commits, mean batch {res['mean_batch']:.0f}, max {fmt(res['max_batch'])}",
                ),
                ("CPU per append (whole process)", f"{res['cpu_us_per_append']:.1f} us", enc),
                (
                    "appends per CPU-second",
                    fmt(res["appends_per_cpu_s"]),
                    f"Ed25519 signs per CPU-second: {fmt(ref['ed25519_sign_per_cpu_s'])} (contention-free view)",
                ),
                (
                    "append latency p50 / p99 (1 appender)",
                    lat,
                    f"{res['latency_p50_vs_fsync_p50']:.2f} x fsync p50 ({ref['fsync_p50_us']:.0f} us; p99 "
                    f"{ref['fsync_p99_us']:.0f} us)",
                ),
                (
                    "full verification, records/s, all cores",
                    fmt(res["verify_records_per_s"]),
                    f"{res['verify_vs_read_walk_hash_loop']:.1%} of the bare read + walk + SHA-256 loop on "
                    f"{ref['cores']} "
                    f"cores ({fmt(ref['read_walk_hash_records_per_s_all_cores'])}/s); record loop: "
                    f"{res.get('verify_scan', 'python')}",
                ),
                (
                    "append p50 beyond its own fsync",
                    f"{res['latency_beyond_own_fsync_p50_us']:.0f} us",
                    f"the same appends' own pwrite + fdatasync p50 {res['latency_own_fsync_p50_us']:.0f} us; "
                    f"append p50 = {res['latency_p50_vs_own_fsync_p50']:.2f} x it",
                ),
                (
                    "append p50 by part, us",
                    " / ".join(f"{v:.0f}" for v in res.get("latency_parts_p50_us", {}).values()),
                    "to commit / build + hand-off / pwrite + fdatasync / back to the loop / to the caller",
                ),
                (
                    "full verification, records/s, 1 worker",
                    fmt(res["verify_records_per_s_1worker"]),
                    f"bare loop, 1 core: {fmt(ref['read_walk_hash_records_per_s_1core'])}/s",
                ),
                (
                    "peak RSS of `sidecar verify --thorough`",
                    f"{res['verify_peak_rss_kib'] / 1024:.0f} MiB",
                    "largest process (the verifier or one worker)",
                ),
                ("verdict", "intact" if res["verify_ok"] else f"{res['verify_findings']} findings", segs),
                ("record body, mean", f"{res['record_body_mean_bytes']:.0f} B", "canonical JSON (JCS)"),
                ("bytes/event at rest, raw", f"{res['raw_bytes_per_event']:.0f} B", "segment bytes / records"),
                (
                    "bytes/event at rest, compressed",
                    f"{res['compressed_bytes_per_event']:.0f} B",
                    f"{res['compression']} of {res['compressed_scope']}",
                ),
            ],
        )
    )
    pc = result.get("encryption")
    if pc:
        console.print(
            kv_table(
                "encrypted identifying values (serve --subjects) vs plain, same run",
                [
                    (
                        "CPU per record",
                        f"{pc['cpu_us_per_record_encrypted']:.1f} us vs {pc['cpu_us_per_record_plain']:.1f} us",
                        f"{pc['cpu_ratio']:.2f} x plain ({fmt(pc['events'])} events, "
                        f"{pc['subjects_created']} subjects)",
                    ),
                    (
                        "record body, mean",
                        f"{pc['body_bytes_encrypted']:.0f} B vs {pc['body_bytes_plain']:.0f} B",
                        "canonical JSON",
                    ),
                    (
                        "bytes/record at rest, raw",
                        f"{pc['raw_bytes_per_record_encrypted']:.0f} B vs {pc['raw_bytes_per_record_plain']:.0f} B",
                        f"{pc['raw_bytes_ratio']:.2f} x plain",
                    ),
                    (
                        "bytes/record at rest, gzip-6",
                        f"{pc['gz_bytes_per_record_encrypted']:.0f} B vs {pc['gz_bytes_per_record_plain']:.0f} B",
                        f"{pc['gz_bytes_ratio']:.2f} x plain",
                    ),
                    (
                        "new subject key (fsynced, 1 copy)",
                        f"{pc['key_setup_ms_per_subject']:.2f} ms",
                        "once per person",
                    ),
                ],
            )
        )
    console.print(
        kv_table(
            "signature per record vs one per batch checkpoint",
            [
                (
                    "leaf hash + sign every record",
                    f"{fmt(tr['sign_every_record_per_s'])}/s",
                    f"{tr['sign_cost_us_per_record_every']:.1f} us/record",
                ),
                (
                    f"leaf hash + one sign per {tr['batch']}",
                    f"{batched}/s",
                    f"{tr['sign_cost_us_per_record_batched']:.2f} us/record, {tr['speedup']:.0f}x",
                ),
                (
                    "verify ceiling, a signature on every record",
                    f"{fmt(tr['verify_every_record_ceiling_all_cores'])}/s",
                    f"Ed25519 verify {fmt(tr['ed25519_verify_per_s_1core'])}/s/core x {ref['cores']}",
                ),
                (
                    "verify measured, checkpoint signatures",
                    f"{fmt(tr['verify_measured_checkpoint_scheme'])}/s",
                    f"+{tr['extra_raw_bytes_per_record']} B/record (incompressible) with per-record signatures",
                ),
            ],
        )
    )
    console.print(targets_table(result))
