"""`bench replication`: lag to a directory store and to two loopback S3 servers (moto, and versitygw with
Object Lock enforced), and pull + verify throughput of each beside the directory store's, in one run."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sidecar.bench.common import (
    ORIGIN,
    Target,
    Ui,
    fmt,
    identity_events,
    machine_info,
    machine_line,
    percentile,
    stop_group,
    targets_table,
    wait_http,
)

_FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "bench-not-a-secret",
    "AWS_SECRET_ACCESS_KEY": "bench-not-a-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@contextlib.contextmanager
def _fake_aws_env(nowhere: Path, credentials: dict[str, str] | None = None) -> Iterator[dict[str, str]]:
    """Credentials for a loopback S3 server (fake ones unless given); no real AWS configuration is read.
    Restored after."""
    values = {
        **_FAKE_AWS,
        **(credentials or {}),
        "AWS_CONFIG_FILE": str(nowhere),
        "AWS_SHARED_CREDENTIALS_FILE": str(nowhere),
    }
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
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/moto-api/", 60, accept_any_status=True)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_group(proc, grace=10.0)


async def _steady_load(
    data_dir: Path,
    store_url: str,
    *,
    rate: float,
    seconds: float,
    segment_max_bytes: int,
    seed: int,
    progress: Callable[[int], None],
    prepare: Callable[[], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    """Append at `rate` events/s for `seconds` with a Replicator shipping to `store_url`."""
    from sidecar.ledger.writer import Ledger, LedgerConfig
    from sidecar.replicate.drivers import open_store
    from sidecar.replicate.replicator import Replicator

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
    return {
        "appended": sent - failed,
        "failed": failed,
        "seconds": elapsed,
        "rate_achieved": (sent - failed) / elapsed if elapsed else 0.0,
        "lag_samples": len(lags),
        "lag_p50_ms": percentile(lags, 50),
        "lag_p99_ms": percentile(lags, 99),
        "lag_max_ms": max(lags, default=0.0),
        "objects_uploaded": status["objects"],
        "backlog_bytes_after": status["backlog_bytes"],
        "last_error": status["last_error"],
        "integrity_error": status["integrity_error"],
    }


async def _pull_verify(url: str, out: Path, trust: Any, workers: int) -> dict[str, Any]:
    from sidecar.audit.remote import pull_and_verify

    pulled_at = [0.0]

    def progress(done: int, total: int) -> None:  # called by pull per object: the last call ends the pull
        pulled_at[0] = time.perf_counter()

    t0 = time.perf_counter()
    report = await pull_and_verify(url, out, trust, workers=workers, progress=progress)
    elapsed = time.perf_counter() - t0
    pull_s = pulled_at[0] - t0 if pulled_at[0] else 0.0
    return {
        "records": report.records,
        "bytes": report.total_bytes,
        "seconds": elapsed,
        "pull_seconds": pull_s,
        "verify_seconds": elapsed - pull_s,
        "records_per_s": report.records / elapsed if elapsed else 0.0,
        "mb_per_s": report.total_bytes / elapsed / 1e6 if elapsed else 0.0,
        "verdict": "intact" if report.ok else "findings",
        "findings": [str(f) for f in report.findings[:5]],
    }


def run_replication(
    *,
    seconds: float = 20.0,
    rate: float = 1000.0,
    segment_max_bytes: int = 1024 * 1024,
    data_dir: Path | None = None,
    keep: bool = False,
    ui: Ui | None = None,
) -> dict[str, Any]:
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
            load = asyncio.run(
                _steady_load(
                    led,
                    str(root / "store-dir"),
                    rate=rate,
                    seconds=seconds,
                    segment_max_bytes=segment_max_bytes,
                    seed=1,
                    progress=progress,
                )
            )
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
                load = asyncio.run(
                    _steady_load(
                        led,
                        url,
                        rate=rate,
                        seconds=seconds,
                        segment_max_bytes=segment_max_bytes,
                        seed=2,
                        progress=progress,
                        prepare=make_bucket,
                    )
                )
            ui.phase("pull + verify of the bucket")
            pulled = asyncio.run(_pull_verify(url, root / "pull-s3", trust, cores))
            results["s3"] = {**load, "pull_verify": pulled}

        # (c) versitygw: a WORM S3 server (posix backend, versioning, Object Lock with a default retention)
        from sidecar.harness.versitygw import VersityGW

        ui.phase("starting versitygw (built or reused by the harness, separate process)")
        with VersityGW(root / "versitygw") as gw:
            locked = gw.create_bucket(retention_days=1)
            with _fake_aws_env(root / "no-aws-config", locked.env()):
                led = root / "ledger-versitygw"
                trust = KeyStore(led).init(ORIGIN)
                url = locked.store_url()
                ui.phase(f"versitygw (Object Lock bucket {locked.bucket}): {rate:g} events/s for {seconds:g} s")
                with ui.bar("versitygw", int(rate * seconds)) as progress:
                    load = asyncio.run(
                        _steady_load(
                            led,
                            url,
                            rate=rate,
                            seconds=seconds,
                            segment_max_bytes=segment_max_bytes,
                            seed=3,
                            progress=progress,
                        )
                    )
                ui.phase("pull + verify of the versitygw bucket")
                pulled = asyncio.run(_pull_verify(url, root / "pull-versitygw", trust, cores))
            results["versitygw"] = {**load, "pull_verify": pulled}
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    targets = [
        Target(
            f"replication lag p99, {name} store", res["lag_p99_ms"], 2000.0, "ms", False, "2 s after commit (brief §9)"
        )
        for name, res in results.items()
    ]
    dir_rate = results["directory"]["pull_verify"]["records_per_s"]
    targets += [
        Target(
            f"pull + verify from {name} vs the directory store",
            res["pull_verify"]["records_per_s"],
            0.25 * dir_rate,
            "records/s",
            True,
            f"25% of the directory store's pull + verify in the same run ({dir_rate:,.0f}/s)",
        )
        for name, res in results.items()
        if name != "directory"
    ]
    return {
        "benchmark": "replication",
        "machine": machine,
        "config": {
            "seconds": seconds,
            "rate": rate,
            "segment_max_bytes": segment_max_bytes,
            "replication_interval_s": 0.2,
            "kept": str(root) if keep else None,
        },
        "results": results,
        "targets": [t.to_json() for t in targets],
    }


def print_replication(result: dict[str, Any], console: Console) -> None:
    console.print(machine_line(result["machine"]))
    cfg = result["config"]
    table = Table(
        title=f"replication: {cfg['rate']:g} events/s for {cfg['seconds']:g} s, segments of "
        f"{cfg['segment_max_bytes'] // 1024} KiB",
        title_justify="left",
    )
    for col in (
        "store",
        "appended",
        "rate/s",
        "lag p50 ms",
        "lag p99 ms",
        "lag max ms",
        "objects",
        "pull+verify rec/s",
        "MB/s",
        "pull s",
        "verify s",
        "verdict",
    ):
        table.add_column(col, justify="left" if col in ("store", "verdict") else "right")
    for name, r in result["results"].items():
        pv = r["pull_verify"]
        table.add_row(
            name,
            fmt(r["appended"]),
            fmt(r["rate_achieved"]),
            f"{r['lag_p50_ms']:.0f}",
            f"{r['lag_p99_ms']:.0f}",
            f"{r['lag_max_ms']:.0f}",
            fmt(r["objects_uploaded"]),
            fmt(pv["records_per_s"]),
            f"{pv['mb_per_s']:.1f}",
            f"{pv['pull_seconds']:.1f}",
            f"{pv['verify_seconds']:.1f}",
            pv["verdict"],
        )
    console.print(table)
    console.print(targets_table(result))
