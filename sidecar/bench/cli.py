"""The `bench` command group: brief §9's targets, each against a reference measured in the same run.

This module is what `sidecar bench` loads (sidecar/cli.py names it lazily, so no other command pays
for it); each command imports its benchmark module (ledger, proxy, replication) only when it runs.
Every process a runner starts (Keycloak, the sidecar, the S3 server) is stopped in a `finally`
block, by its own pid or process group. All traffic is loopback.
"""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["bench"]

_DATA_HELP = "directory on the disk to measure (a fresh subdirectory is made and removed after)"


@click.group()
def bench() -> None:
    """Measure brief §9's targets on this machine, each against a reference measured in the same run."""


@bench.command("ledger")
@click.option(
    "--events",
    type=click.IntRange(min=100),
    default=200_000,
    show_default=True,
    help="events to append in the throughput run",
)
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path, file_okay=False), help=_DATA_HELP)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 20_000),
    default=2000,
    show_default=True,
    help="appenders in flight (group commit forms batches from them)",
)
@click.option(
    "--latency-appends",
    type=click.IntRange(min=10),
    default=2000,
    show_default=True,
    help="sequential appends of the one-appender latency run",
)
@click.option("--segment-max-bytes", type=click.IntRange(min=4096), default=8 * 1024 * 1024, show_default=True)
@click.option(
    "--with-index",
    is_flag=True,
    help="also run the SQLite lookup index as `sidecar serve` wires it (a commit subscriber)",
)
@click.option(
    "--reference-seconds",
    type=click.FloatRange(min=0.05),
    default=1.0,
    show_default=True,
    help="length of each reference loop (Ed25519, SHA-256, signing trade-off)",
)
@click.option("--keep", is_flag=True, help="keep the ledgers written (their path is in the result)")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def ledger_cmd(
    events: int,
    data_dir: Path,
    concurrency: int,
    latency_appends: int,
    segment_max_bytes: int,
    with_index: bool,
    reference_seconds: float,
    keep: bool,
    as_json: bool,
) -> None:
    """Durable signed appends/s, append latency, verification rate and bytes per event at rest."""
    from sidecar.bench.common import emit
    from sidecar.bench.ledger import print_ledger, run_ledger

    result = run_ledger(
        data_dir,
        events=events,
        concurrency=concurrency,
        latency_appends=latency_appends,
        segment_max_bytes=segment_max_bytes,
        with_index=with_index,
        keep=keep,
        reference_seconds=reference_seconds,
    )
    emit(result, as_json, print_ledger)


@bench.command("proxy")
@click.option(
    "--requests",
    type=click.IntRange(min=10),
    default=400,
    show_default=True,
    help="rounds per request kind, each one request direct, one through the bare proxy, one through the sidecar",
)
@click.option(
    "--logins",
    type=click.IntRange(min=1),
    default=150,
    show_default=True,
    help="browser-style logins for the CPU measurement",
)
@click.option(
    "--headroom-seconds",
    type=click.FloatRange(min=0.5),
    default=5.0,
    show_default=True,
    help="length of each headroom load (token requests, then logins) against the stand-in upstream",
)
@click.option(
    "--headroom-concurrency",
    type=click.IntRange(1, 256),
    default=8,
    show_default=True,
    help="clients in the headroom loads",
)
@click.option(
    "--quick",
    is_flag=True,
    help="no Keycloak: the stand-in upstream (recorded answers) for every phase, small sizes welcome; "
    "targets against Keycloak's CPU are then reported as not measured",
)
@click.option(
    "--upstream",
    default=None,
    help="reuse a running Keycloak at this URL (realm ledger-test imported, --hostname naming "
    "http://127.0.0.1:<--listen-port>) instead of starting one",
)
@click.option("--upstream-pid", type=int, default=None, help="Keycloak's pid for --upstream (default: found by port)")
@click.option("--listen-port", type=int, default=None, help="the sidecar's port (default: a free one)")
@click.option(
    "--recordings",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=None,
    help="recorded Keycloak exchanges for the stand-in (default: the repository's tests/capture/exchanges)",
)
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="where the sidecar's ledger and Keycloak's copy go (default: a temporary directory)",
)
@click.option("--keep", is_flag=True, help="keep the sidecar's ledger and logs")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def proxy_cmd(
    requests: int,
    logins: int,
    headroom_seconds: float,
    headroom_concurrency: int,
    quick: bool,
    upstream: str | None,
    upstream_pid: int | None,
    listen_port: int | None,
    recordings: Path | None,
    data_dir: Path | None,
    keep: bool,
    as_json: bool,
) -> None:
    """The sidecar's CPU and added latency per request against a bare aiohttp proxy and Keycloak, and headroom."""
    from sidecar.bench.common import emit
    from sidecar.bench.proxy import RECORDINGS, print_proxy, run_proxy

    if upstream is not None and listen_port is None:
        raise click.UsageError("--upstream needs --listen-port: the port Keycloak's --hostname names")
    result = run_proxy(
        requests=requests,
        logins=logins,
        upstream=upstream,
        upstream_pid=upstream_pid,
        listen_port=listen_port,
        data_dir=data_dir,
        keep=keep,
        quick=quick,
        headroom_seconds=headroom_seconds,
        headroom_concurrency=headroom_concurrency,
        recordings=recordings or RECORDINGS,
    )
    emit(result, as_json, print_proxy)


@bench.command("replication")
@click.option(
    "--seconds",
    type=click.FloatRange(min=1),
    default=20.0,
    show_default=True,
    help="length of the steady load, per store",
)
@click.option("--rate", type=click.FloatRange(min=1), default=1000.0, show_default=True, help="events per second")
@click.option(
    "--segment-max-bytes",
    type=click.IntRange(min=4096),
    default=1024 * 1024,
    show_default=True,
    help="small enough that segments seal (and upload whole) during the run",
)
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="where the ledgers and the directory store go (default: a temporary directory)",
)
@click.option("--keep", is_flag=True, help="keep the ledgers, stores and pulled bundles")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def replication_cmd(
    seconds: float, rate: float, segment_max_bytes: int, data_dir: Path | None, keep: bool, as_json: bool
) -> None:
    """Replication lag to a directory store and to a loopback S3, and pull + verify throughput."""
    from sidecar.bench.common import emit
    from sidecar.bench.replication import print_replication, run_replication

    result = run_replication(
        seconds=seconds, rate=rate, segment_max_bytes=segment_max_bytes, data_dir=data_dir, keep=keep
    )
    emit(result, as_json, print_replication)


@bench.command("drift")
@click.option("--users", type=click.IntRange(min=10), default=10_000, show_default=True)
@click.option("--roles", type=click.IntRange(min=5), default=50, show_default=True)
@click.option(
    "--changes",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="role grants made straight on Keycloak for the bypass-to-record delay",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="sweep read limit per second (0: unlimited, to measure the raw cost)",
)
@click.option(
    "--poll", type=click.FloatRange(min=0.5), default=10.0, show_default=True, help="the monitor's event poll interval"
)
@click.option("--data", "data_dir", type=click.Path(path_type=Path, file_okay=False), default=None)
@click.option("--keep", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
def drift_cmd(
    users: int, roles: int, changes: int, rate: float, poll: float, data_dir: Path | None, keep: bool, as_json: bool
) -> None:
    """Drift: one full sweep of a large realm (time, Keycloak CPU) and bypass-to-drift.detected delay."""
    from sidecar.bench.auditor import print_drift, run_drift
    from sidecar.bench.common import emit

    emit(
        run_drift(users=users, roles=roles, changes=changes, rate=rate, poll=poll, data_dir=data_dir, keep=keep),
        as_json,
        print_drift,
    )


@bench.command("startup")
@click.option("--runs", type=click.IntRange(min=1), default=11, show_default=True, help="runs of each command")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def startup_cmd(runs: int, as_json: bool) -> None:
    """Start-up of `sidecar verify --help` against the interpreter alone, run in turn."""
    from sidecar.bench.common import emit
    from sidecar.bench.startup import print_startup, run_startup

    emit(run_startup(runs), as_json, print_startup)


@bench.command("reads")
@click.option("--records", type=click.IntRange(min=1000), default=1_000_000, show_default=True)
@click.option("--data", "data_dir", type=click.Path(path_type=Path, file_okay=False), default=None)
@click.option("--keep", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
def reads_cmd(records: int, data_dir: Path | None, keep: bool, as_json: bool) -> None:
    """The report's build time on a large ledger, and timeline --actor through the index against a full scan."""
    from sidecar.bench.auditor import print_reads, run_reads
    from sidecar.bench.common import emit

    emit(run_reads(records=records, data_dir=data_dir, keep=keep), as_json, print_reads)


@bench.command("cluster")
@click.option("--seconds", type=click.FloatRange(min=2), default=20.0, show_default=True, help="length of each phase")
@click.option("--concurrency", type=click.IntRange(1, 200), default=8, show_default=True, help="clients in flight")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def cluster_cmd(seconds: float, concurrency: int, as_json: bool) -> None:
    """Logins/s and token requests/s through HAProxy with two cluster nodes and with one, with Keycloak's CPU share."""
    from sidecar.bench.cluster import print_cluster, run_cluster
    from sidecar.bench.common import emit

    emit(run_cluster(seconds=seconds, concurrency=concurrency), as_json, print_cluster)


@bench.command("origins")
@click.option("--events", type=click.IntRange(min=1000), default=100_000, show_default=True, help="events in all")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def origins_cmd(events: int, as_json: bool) -> None:
    """Pull + verify of a two-origin bucket against a one-origin bucket of the same total size."""
    from sidecar.bench.cluster import print_origins, run_origins
    from sidecar.bench.common import emit

    emit(run_origins(events=events), as_json, print_origins)


@bench.command("all")
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path, file_okay=False), help=_DATA_HELP)
@click.option(
    "--quick",
    is_flag=True,
    help="tiny sizes and the proxy against the stand-in upstream (no Keycloak): every target is "
    "printed, those that need Keycloak as not measured; for smoke tests, not for figures",
)
@click.option("--json", "as_json", is_flag=True, help="print the results as one JSON object")
def all_cmd(data_dir: Path, quick: bool, as_json: bool) -> None:
    """All four with modest sizes (ledger 100k events, proxy 200 rounds + 100 logins, replication 10 s, start-up)."""
    import orjson

    from sidecar.bench.common import make_console
    from sidecar.bench.ledger import print_ledger, run_ledger
    from sidecar.bench.proxy import print_proxy, run_proxy
    from sidecar.bench.replication import print_replication, run_replication
    from sidecar.bench.startup import print_startup, run_startup

    if quick:
        results = {
            "ledger": run_ledger(data_dir, events=2000, concurrency=200, latency_appends=100, reference_seconds=0.1),
            "proxy": run_proxy(
                requests=20, logins=5, data_dir=data_dir, quick=True, headroom_seconds=0.5, headroom_concurrency=4
            ),
            "replication": run_replication(seconds=2.0, rate=200.0, data_dir=data_dir),
            "startup": run_startup(runs=3),
        }
    else:
        results = {
            "ledger": run_ledger(data_dir, events=100_000),
            "proxy": run_proxy(requests=200, logins=100, data_dir=data_dir),
            "replication": run_replication(seconds=10.0, data_dir=data_dir),
            "startup": run_startup(),
        }
    targets = [{"benchmark": name, **t} for name, r in results.items() for t in r["targets"]]
    summary = {
        "met": sum(t["passed"] is True for t in targets),
        "missed": sum(t["passed"] is False for t in targets),
        "not_measured": sum(t["passed"] is None for t in targets),
        "total": len(targets),
    }
    if as_json:
        click.echo(
            orjson.dumps({"targets": targets, "summary": summary, **results}, option=orjson.OPT_INDENT_2).decode()
        )
        return
    console = make_console()
    print_ledger(results["ledger"], console)
    print_proxy(results["proxy"], console)
    print_replication(results["replication"], console)
    print_startup(results["startup"], console)
    console.print(
        f"targets met: {summary['met']} of {summary['total']} ({summary['missed']} missed, "
        f"{summary['not_measured']} not measured)"
    )


if __name__ == "__main__":  # `python -m sidecar.bench.cli ledger --data DIR` works without the `sidecar` entry point
    bench()
