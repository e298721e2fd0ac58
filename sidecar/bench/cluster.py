"""`sidecar bench cluster` and `sidecar bench origins`: issue 15's figures. [dev only]

* cluster: the two-node cluster of sidecar.harness.cluster (production Keycloak on PostgreSQL,
  a sidecar per node, HAProxy in front); password-grant logins/s and client-credentials token
  requests/s through HAProxy with both sidecars in the backend, then with one (the other
  disabled on HAProxy's admin socket). Keycloak's share of the machine's CPU time during each
  phase is read from /proc (its process groups' utime+stime against all CPUs' busy+idle time),
  so the result says whether Keycloak was the bottleneck.
* origins: pull + verify of a bucket (a directory store) holding two origins of N/2 events each
  against one holding one origin of N events, the same total.

Every process is ended by its own pid (the cluster's context manager).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console

from sidecar.clock import FixedClock


def _cpu_total() -> int:
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    return sum(int(x) for x in fields)


def _group_ticks(pgids: list[int]) -> int:
    """utime+stime (clock ticks) of every process in these process groups."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        rest = stat.rsplit(")", 1)[1].split()
        if int(rest[2]) in pgids:  # field 5: pgrp
            total += int(rest[11]) + int(rest[12])  # fields 14, 15: utime, stime
    return total


async def _load(url: str, realm: str, form: dict[str, str], seconds: float, concurrency: int) -> dict[str, Any]:
    ok = failed = 0
    stop = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal ok, failed
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < stop:
                try:
                    async with http.post(f"{url}/realms/{realm}/protocol/openid-connect/token", data=form) as resp:
                        await resp.read()
                        ok, failed = (ok + 1, failed) if resp.status == 200 else (ok, failed + 1)
                except aiohttp.ClientError:
                    failed += 1

    began = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.monotonic() - began
    return {"ok": ok, "failed": failed, "seconds": round(elapsed, 2), "per_s": round(ok / elapsed, 1)}


def _phase(url: str, form: dict[str, str], seconds: float, concurrency: int, kc_pgids: list[int]) -> dict[str, Any]:
    from sidecar.harness.realm import REALM

    cpu0, kc0 = _cpu_total(), _group_ticks(kc_pgids)
    result = asyncio.run(_load(url, REALM.name, form, seconds, concurrency))
    cpu1, kc1 = _cpu_total(), _group_ticks(kc_pgids)
    result["keycloak_cpu_share"] = round((kc1 - kc0) / max(1, cpu1 - cpu0), 3)
    result["load_average"] = os.getloadavg()[0]
    return result


def run_cluster(
    *, seconds: float = 20.0, concurrency: int = 8, warmup: float = 10.0, data_dir: Path | None = None
) -> dict[str, Any]:
    from sidecar.harness.cluster import running_cluster
    from sidecar.harness.realm import REALM

    with tempfile.TemporaryDirectory(prefix="bench-cluster-", dir=data_dir) as tmp:
        began = time.monotonic()
        with running_cluster(
            Path(tmp),
            realm_files=[REALM.file],
            reader=(REALM.name, REALM.robot.client_id, REALM.robot.secret or ""),
            sidecar_extra={"SIDECAR_DRIFT": "false"},
        ) as c:
            started = round(time.monotonic() - began, 1)
            pgids = [p for p in (n.pid for n in c.nodes) if p is not None]
            login = {
                "grant_type": "password",
                "client_id": REALM.app.client_id,
                "client_secret": REALM.app.secret or "",
                "username": REALM.alice.username,
                "password": REALM.alice.password,
            }
            tokens = {
                "grant_type": "client_credentials",
                "client_id": REALM.robot.client_id,
                "client_secret": REALM.robot.secret or "",
            }
            out: dict[str, Any] = {"cluster_start_s": started, "concurrency": concurrency, "cores": os.cpu_count()}
            # Unmeasured warm-up through both nodes (JIT, connection pools, caches), so that the two-node
            # phases, which run first, do not pay for what the one-node phases then get for free.
            for form in (login, tokens):
                _phase(c.url, form, warmup, concurrency, pgids)
            for nodes in ("two", "one"):
                if nodes == "one":
                    c.lb.admin("disable server sidecars/b")
                    c.lb.wait_state("b", "DOWN", 10)
                out[f"{nodes}_node"] = {
                    "logins": _phase(c.url, login, seconds, concurrency, pgids),
                    "token_requests": _phase(c.url, tokens, seconds, concurrency, pgids),
                }
            return out


def print_cluster(result: dict[str, Any], console: Console) -> None:
    console.print(f"cluster started in {result['cluster_start_s']} s; {result['concurrency']} clients")
    for nodes in ("two_node", "one_node"):
        for what in ("logins", "token_requests"):
            r = result[nodes][what]
            console.print(
                f"{nodes:8} {what:15} {r['per_s']:8.1f}/s  ({r['ok']} ok, {r['failed']} failed in {r['seconds']} s; "
                f"Keycloak {r['keycloak_cpu_share'] * 100:.0f}% of all CPU; load {r['load_average']:.1f})"
            )


async def _origins_run(tmp: Path, events: int) -> dict[str, Any]:
    from sidecar.audit.origins import OriginsTrust, pull_and_verify_origins
    from sidecar.audit.remote import pull_and_verify
    from sidecar.replicate.drivers import open_store
    from sidecar.replicate.replicator import Replicator
    from sidecar.testing import build_ledger

    async def node(store: Path, name: str, n: int) -> Any:
        data = tmp / f"{store.name}-{name}"
        clock = FixedClock(start_ns=time.time_ns(), step_ns=1000)
        anchor = await build_ledger(
            data, events=n, origin=f"bench.test/{name}", clock=clock, segment_max_bytes=1024 * 1024
        )
        rep = Replicator(data, open_store(str(store / f"node-{name}")), interval_s=0.05)
        await rep.step()
        await rep.stop()
        return anchor

    one, two = tmp / "one", tmp / "two"
    solo = await node(one, "a", events)
    pair = [await node(two, "a", events // 2), await node(two, "b", events - events // 2)]
    t = time.monotonic()
    single = await pull_and_verify(str(one / "node-a"), tmp / "out-one", solo)
    one_s = time.monotonic() - t
    t = time.monotonic()
    multi = await pull_and_verify_origins(str(two), tmp / "out-two", OriginsTrust.of(pair, 30), now_ns=time.time_ns())
    two_s = time.monotonic() - t
    assert single.ok and multi.ok, (single.findings, multi.all_findings())
    return {
        "events": events,
        "one_origin_s": round(one_s, 2),
        "two_origins_s": round(two_s, 2),
        "one_origin_records_per_s": round(single.records / one_s),
        "two_origins_records_per_s": round(sum(o.report.records for o in multi.origins if o.report) / two_s),
    }


def run_origins(*, events: int = 100_000, data_dir: Path | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-origins-", dir=data_dir) as tmp:
        return asyncio.run(_origins_run(Path(tmp), events))


def print_origins(result: dict[str, Any], console: Console) -> None:
    console.print(
        f"pull + verify of {result['events']} events: one origin {result['one_origin_s']} s "
        f"({result['one_origin_records_per_s']} records/s), two origins {result['two_origins_s']} s "
        f"({result['two_origins_records_per_s']} records/s)"
    )
