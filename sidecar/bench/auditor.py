"""Benchmarks of the auditor's side: drift sweeps on a large realm, bypass-to-record delay, report and lookups.

`run_drift`: a real Keycloak with the test realm, grown by one partialImport to `users` users and
`roles` realm roles (each user holding a few of them, some in groups); then one full sweep of the
live access state (`sidecar.drift.live.LiveState.read_state`, as the monitor runs it) is timed,
with Keycloak's own CPU seconds over it (its process group, from /proc) and the number of reads.
Then a sidecar process runs the monitor in front of it (`--drift-poll`), and `changes` role grants
are made straight on Keycloak's port at random moments; for each, the delay until its
`drift.detected` record is in the ledger is measured (record time minus the moment the grant was
answered).

`run_reads`: a ledger of `records` synthetic records (the bench's usual traffic mix) with its
SQLite index; the seconds `sidecar report` takes on it, and `timeline --actor X` through the index
(each record checked against its segment's signed checkpoint) against the same lookup by a full
verified scan.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console

from sidecar.bench.common import Ui, fmt, group_cpu_seconds, kv_table, machine_info, stop_group, wait_http


# ============================================================================================ drift
def _big_realm(users: int, roles: int, rnd: random.Random) -> dict[str, Any]:
    role_names = [f"bench-role-{i:02d}" for i in range(roles)]
    return {
        "ifResourceExists": "SKIP",
        "roles": {"realm": [{"name": r} for r in role_names]},
        "groups": [
            {"name": f"bench-group-{i}", "path": f"/bench-group-{i}", "realmRoles": [role_names[i]]} for i in range(5)
        ],  # partialImport finds groups by path (without it: a NullPointerException)
        "users": [
            {
                "username": f"bench-user-{i:05d}",
                "enabled": True,
                "email": f"bench-user-{i:05d}@example.test",
                "realmRoles": rnd.sample(role_names, 3),
                **({"groups": [f"/bench-group-{i % 5}"]} if i % 4 == 0 else {}),
            }
            for i in range(users)
        ],
    }


async def _admin_token(base: str, password: str) -> str:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{base}/realms/master/protocol/openid-connect/token",
            data={"grant_type": "password", "client_id": "admin-cli", "username": "admin", "password": password},
        ) as resp:
            return str((await resp.json())["access_token"])


async def _populate(base: str, password: str, realm: str, users: int, roles: int) -> float:
    """partialImport: roles and groups first, then the users 1,000 a request (one transaction each stays
    well inside Keycloak's transaction timeout on a loaded machine)."""
    body = _big_realm(users, roles, random.Random(20_261_201))
    began = time.perf_counter()
    parts = [
        {"ifResourceExists": "SKIP", "roles": body["roles"]},
        {"ifResourceExists": "SKIP", "groups": body["groups"]},
    ]
    parts += [{"ifResourceExists": "SKIP", "users": body["users"][i : i + 1000]} for i in range(0, users, 1000)]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1800)) as http:
        for n, part in enumerate(parts):
            token = await _admin_token(base, password)  # a fresh token: the admin-cli one lives 60 s
            async with http.post(
                f"{base}/admin/realms/{realm}/partialImport", json=part, headers={"Authorization": f"Bearer {token}"}
            ) as resp:
                if resp.status != 200:
                    what = ", ".join(k for k in part if k != "ifResourceExists")
                    raise RuntimeError(
                        f"partialImport {n + 1}/{len(parts)} ({what}) answered {resp.status}: "
                        f"{(await resp.text())[:300]}"
                    )
    return time.perf_counter() - began


async def _sweep(base: str, realm: str, client_id: str, secret: str, rate: float) -> tuple[dict[str, Any], int]:
    from sidecar.capture.reader import KeycloakReader
    from sidecar.drift.live import LiveState

    reader = KeycloakReader(base, realm, client_id, secret, timeout_s=60.0)
    await reader.start()
    try:
        live = LiveState(reader, rate_per_s=rate)
        state = await live.read_state(time.time_ns())
        return state, live.limit.calls
    finally:
        await reader.close()


def _records(data_dir: Path) -> list[dict[str, Any]]:
    from sidecar.audit.reading import read_unverified

    return list(read_unverified(data_dir))


async def _bypass_delays(
    kc_base: str, password: str, realm: str, data_dir: Path, changes: int, rnd: random.Random, ui: Ui
) -> list[float]:
    delays: list[float] = []
    async with aiohttp.ClientSession() as http:
        http.headers["Authorization"] = f"Bearer {await _admin_token(kc_base, password)}"
        async with http.get(f"{kc_base}/admin/realms/{realm}/roles/bench-role-00") as resp:
            role = await resp.json()
        for i in range(changes):
            await asyncio.sleep(rnd.uniform(1.0, 6.0))
            http.headers["Authorization"] = f"Bearer {await _admin_token(kc_base, password)}"  # tokens live 60 s
            async with http.get(
                f"{kc_base}/admin/realms/{realm}/users",
                params={"username": f"bench-user-{9000 + i:05d}", "exact": "true"},
            ) as resp:
                uid = (await resp.json())[0]["id"]
            async with http.delete(
                f"{kc_base}/admin/realms/{realm}/users/{uid}/role-mappings/realm", json=[role]
            ) as resp:
                await resp.read()
            async with http.post(
                f"{kc_base}/admin/realms/{realm}/users/{uid}/role-mappings/realm", json=[role]
            ) as resp:
                await resp.read()
                answered = time.time_ns()
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                found = [
                    r
                    for r in await asyncio.to_thread(_records, data_dir)
                    if r["event"]["type"] == "drift.detected"
                    and int(r["ts"]) >= answered - 5_000_000_000
                    and uid in str((r["event"].get("details") or {}).get("keycloak_event", {}).get("resource_path", ""))
                    and (r["event"].get("details") or {}).get("keycloak_event", {}).get("operation") == "CREATE"
                ]
                if found:
                    delays.append((int(found[0]["ts"]) - answered) / 1e9)
                    ui.phase(f"bypass {i + 1}/{changes}: drift.detected after {delays[-1]:.2f} s")
                    break
                await asyncio.sleep(0.2)
            else:
                raise RuntimeError(f"bypass {i + 1}: no drift.detected within 120 s")
    return delays


def run_drift(
    *,
    users: int = 10_000,
    roles: int = 50,
    changes: int = 8,
    rate: float = 0.0,
    poll: float = 10.0,
    data_dir: Path | None = None,
    keep: bool = False,
    ui: Ui | None = None,
) -> dict[str, Any]:
    """The drift benchmark; see `bench drift --help`."""
    from sidecar.harness.keycloak import KeycloakServer, ensure_distribution, free_port
    from sidecar.harness.realm import REALM
    from sidecar.ledger.keystore import KeyStore

    ui = ui or Ui()
    root = Path(tempfile.mkdtemp(prefix="bench-drift-", dir=data_dir))
    result: dict[str, Any] = {"machine": machine_info(root), "users": users, "roles": roles, "rate_per_s": rate}
    sidecar_port, http_port, mgmt = free_port(), free_port(), free_port()
    password = secrets.token_urlsafe(16)
    kc = KeycloakServer(
        ensure_distribution(),
        root / "keycloak",
        http_port=http_port,
        management_port=mgmt,
        public_url=f"http://127.0.0.1:{sidecar_port}",
        admin_username="admin",
        admin_password=password,
        realm_files=[REALM.file],
    )
    proc: subprocess.Popen[bytes] | None = None
    try:
        kc.start(timeout=600)
        assert kc.pid is not None
        ui.phase(f"Keycloak ready in {kc.startup_seconds:.1f} s; importing {users} users and {roles} roles")
        try:
            result["import_seconds"] = asyncio.run(_populate(kc.base_url, password, REALM.name, users, roles))
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{kc.log_tail()}") from exc
        ui.phase(f"partialImport took {result['import_seconds']:.1f} s")
        secret = REALM.robot.secret or ""
        cpu0, t0 = group_cpu_seconds(kc.pid), time.perf_counter()
        state, calls = asyncio.run(_sweep(kc.base_url, REALM.name, REALM.robot.client_id, secret, rate))
        wall, cpu = time.perf_counter() - t0, group_cpu_seconds(kc.pid) - cpu0
        result["sweep"] = {
            "seconds": wall,
            "keycloak_cpu_seconds": cpu,
            "requests": calls,
            "users_read": len(state["users"]),
            "composites_read": len(state["roles"]),
            "keycloak_cpu_share": cpu / wall if wall else None,
        }
        ui.phase(f"sweep: {wall:.1f} s, Keycloak CPU {cpu:.1f} s, {calls} reads")
        data = root / "ledger"
        KeyStore(data).init("bench.drift/ledger")
        log = (root / "sidecar.log").open("wb")
        env = {**os.environ, "SIDECAR_READER_SECRET": secret}
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sidecar",
                "serve",
                "--upstream",
                kc.base_url,
                "--data",
                str(data),
                "--listen",
                f"127.0.0.1:{sidecar_port}",
                "--reader-realm",
                REALM.name,
                "--reader-client-id",
                REALM.robot.client_id,
                "--drift-poll",
                str(poll),
                "--drift-sweep",
                "86400",
                "--log-level",
                "WARNING",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
        wait_http(f"http://127.0.0.1:{sidecar_port}/.sidecar/health/live", 60)
        deadline = time.monotonic() + 900
        while not any(r["event"]["type"] == "state.snapshot" for r in _records(data)):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the sidecar's monitor took no baseline")
            time.sleep(1)
        ui.phase("monitor baseline taken; making changes straight on Keycloak")
        delays = asyncio.run(_bypass_delays(kc.base_url, password, REALM.name, data, changes, random.Random(7), ui))
        result["bypass"] = {
            "poll_s": poll,
            "changes": len(delays),
            "p50_s": statistics.median(delays),
            "max_s": max(delays),
            "delays_s": delays,
        }
    finally:
        if proc is not None:
            stop_group(proc)
        kc.stop()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            result["kept"] = str(root)
    return result


def print_drift(result: dict[str, Any], console: Console) -> None:
    s, b = result["sweep"], result["bypass"]
    console.print(
        kv_table(
            f"bench drift: {result['users']} users, {result['roles']} roles",
            [
                ("partialImport", f"{fmt(result['import_seconds'], 1)} s", "one request"),
                (
                    "full sweep",
                    f"{fmt(s['seconds'], 1)} s",
                    f"{s['requests']} reads, rate limit {result['rate_per_s'] or 'none'}/s",
                ),
                (
                    "Keycloak CPU for the sweep",
                    f"{fmt(s['keycloak_cpu_seconds'], 1)} s",
                    f"{fmt(100 * (s['keycloak_cpu_share'] or 0), 0)}% of one core while it ran",
                ),
                (
                    "bypass -> drift.detected p50",
                    f"{fmt(b['p50_s'], 2)} s",
                    f"poll every {b['poll_s']} s, {b['changes']} changes",
                ),
                ("bypass -> drift.detected max", f"{fmt(b['max_s'], 2)} s", ""),
            ],
        )
    )


# ============================================================================================ reads
async def _write_ledger(path: Path, records: int, ui: Ui) -> None:
    from sidecar.bench.common import identity_events
    from sidecar.ledger.index import LedgerIndex
    from sidecar.ledger.keystore import KeyStore
    from sidecar.ledger.writer import Ledger, LedgerConfig

    KeyStore(path).init("bench.reads/ledger")
    ledger = await Ledger.open(path, config=LedgerConfig(fsync=False, queue_max=200_000, batch_max=5_000))
    done = 0
    with ui.bar("writing the ledger", records) as advance:
        while done < records:
            n = min(50_000, records - done)
            batch = identity_events(n, start=done)
            await asyncio.gather(*(ledger.append(e) for e in batch))
            done += n
            advance(done)
    await ledger.close()
    index = LedgerIndex(path / "index.sqlite")
    await index.open()
    await index.rebuild(path)
    await index.close()


def run_reads(
    *, records: int = 1_000_000, data_dir: Path | None = None, keep: bool = False, ui: Ui | None = None
) -> dict[str, Any]:
    """The report and lookup benchmark; see `bench reads --help`."""
    from collections import Counter

    from sidecar.audit.reading import lookup_verified, read_verified
    from sidecar.audit.timeline import Filter
    from sidecar.audit.verifier import load_trust
    from sidecar.report.build import build_report

    ui = ui or Ui()
    root = Path(tempfile.mkdtemp(prefix="bench-reads-", dir=data_dir))
    result: dict[str, Any] = {"machine": machine_info(root), "records": records}
    try:
        path = root / "ledger"
        t0 = time.perf_counter()
        asyncio.run(_write_ledger(path, records, ui))
        result["write_seconds"] = time.perf_counter() - t0
        result["ledger_bytes"] = sum(p.stat().st_size for p in (path / "segments").glob("*.seg"))
        trust = load_trust(path / "trust.json")
        t0 = time.perf_counter()
        summary = build_report(path, trust, root / "report.html")
        result["report"] = {
            "seconds": time.perf_counter() - t0,
            "verdict": summary.verdict,
            "bytes": (root / "report.html").stat().st_size,
            "records": summary.records,
        }
        ui.phase(f"report: {result['report']['seconds']:.1f} s")
        actors = Counter(
            r["event"].get("actor", {}).get("username") for r in read_verified(path, trust) if r["seq"] % 97 == 0
        )
        actor = next(a for a, _ in actors.most_common() if a and a.startswith("user"))
        keep_f = Filter(actor=actor)
        t0 = time.perf_counter()
        via_index = [c.record["seq"] for c in lookup_verified(path, trust, keep_f, actor=actor, target=None)]
        index_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        full = [r["seq"] for r in read_verified(path, trust, keep_f)]
        full_s = time.perf_counter() - t0
        if via_index != full:
            raise RuntimeError(f"index lookup gave {len(via_index)} records, the full scan {len(full)}")
        result["lookup"] = {
            "actor": actor,
            "matches": len(full),
            "index_seconds": index_s,
            "full_scan_seconds": full_s,
            "speedup": full_s / index_s if index_s else None,
        }
        ui.phase(f"timeline --actor {actor}: index {index_s:.2f} s, full scan {full_s:.2f} s")
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            result["kept"] = str(root)
    return result


def print_reads(result: dict[str, Any], console: Console) -> None:
    r, lk = result["report"], result["lookup"]
    console.print(
        kv_table(
            f"bench reads: {result['records']} records",
            [
                (
                    "ledger written",
                    f"{fmt(result['write_seconds'], 1)} s",
                    f"{result['ledger_bytes']} bytes of segments",
                ),
                ("sidecar report", f"{fmt(r['seconds'], 1)} s", f"{r['verdict']}, {r['bytes']} bytes of HTML"),
                (
                    f"timeline --actor {lk['actor']} (index)",
                    f"{fmt(lk['index_seconds'], 3)} s",
                    f"{lk['matches']} records, each checked against its segment's checkpoint",
                ),
                (
                    f"timeline --actor {lk['actor']} (full scan)",
                    f"{fmt(lk['full_scan_seconds'], 1)} s",
                    f"{fmt(lk['speedup'] or 0, 0)}x slower than the index",
                ),
            ],
        )
    )
