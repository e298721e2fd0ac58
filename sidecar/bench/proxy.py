"""`bench proxy`: latency the sidecar adds to real Keycloak requests, and its CPU per request and per login."""

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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from sidecar.bench.common import (
    ORIGIN,
    Target,
    Ui,
    fmt,
    group_cpu_seconds,
    kv_table,
    listening_pid,
    machine_info,
    machine_line,
    percentile,
    process_cpu_seconds,
    process_times,
    stop_group,
    targets_table,
    wait_http,
)
from sidecar.bench.references import FsyncProbe


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
            wait_http(f"http://127.0.0.1:{port}/.sidecar/health", 60)
        except click.ClickException:
            tail = log_file.read_text(errors="replace")[-2000:]
            raise click.ClickException(f"the sidecar did not start; its log ends:\n{tail}") from None
        yield proc
    finally:
        stop_group(proc)





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
            kc_cpu: Callable[[], float] = lambda: group_cpu_seconds(kc_pgid)  # noqa: E731
            ui.phase(f"Keycloak ready in {kc.startup_seconds:.1f} s")
        else:
            direct_base = upstream.rstrip("/")
            pid = upstream_pid or listening_pid(int(direct_base.rsplit(":", 1)[1]))
            if pid is None:
                raise click.ClickException(f"nothing found listening at {direct_base}; pass --upstream-pid")
            kc_cpu = lambda: process_cpu_seconds(pid)  # noqa: E731
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
            s0, k0 = process_cpu_seconds(side_pid), kc_cpu()
            with ui.bar("pass-through", requests) as progress:
                passthrough = asyncio.run(_interleaved(direct_base, sidecar_base, "GET", passthrough_path,
                                                       None, requests, warmup, concurrency, progress))
            _cpu_per_request(passthrough, s0, process_cpu_seconds(side_pid), k0, kc_cpu(), requests + warmup)
            ui.phase(f"captured: {requests} pairs of client-credentials grants (+{warmup} warm-up), with the "
                     f"fsync reference (write + fdatasync in {root}) sampled in blocks between them")
            probe = FsyncProbe(root)
            s0, k0 = process_cpu_seconds(side_pid), kc_cpu()
            try:
                with ui.bar("captured", requests) as progress:
                    captured = asyncio.run(_interleaved(direct_base, sidecar_base, "POST", token_path, cc_form,
                                                        requests, warmup, concurrency, progress, probe))
                probe.sample(10)
            finally:
                probe.close()
            _cpu_per_request(captured, s0, process_cpu_seconds(side_pid), k0, kc_cpu(), requests + warmup)
            fsync = probe.summary()
            ui.phase(f"CPU per browser login: {logins} logins through the sidecar (+5 warm-up, 3 s idle)")
            asyncio.run(_logins(sidecar_base, 5, lambda n: None))
            s0, k0, t0 = process_cpu_seconds(side_pid), kc_cpu(), time.monotonic()
            time.sleep(3.0)
            s1, k1, t1 = process_cpu_seconds(side_pid), kc_cpu(), time.monotonic()
            idle_side, idle_kc = (s1 - s0) / (t1 - t0), (k1 - k0) / (t1 - t0)
            with ui.bar("logins", logins) as progress:
                (u0, y0), k0, t0 = process_times(side_pid), kc_cpu(), time.monotonic()
                ok = asyncio.run(_logins(sidecar_base, logins, progress))
                (u1, y1), k1, t1 = process_times(side_pid), kc_cpu(), time.monotonic()
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


def print_proxy(result: dict[str, Any], console: Console) -> None:
    res, ref = result["results"], result["references"]
    console.print(machine_line(result["machine"]))
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
        table.add_row(name, fmt(r["requests"]), *(f"{r[k]:.3f}" for k in keys),
                      f"{r['sidecar_cpu_us_per_request'] / 1000:.3f}", f"{r['keycloak_cpu_us_per_request'] / 1000:.3f}")
    console.print(table)
    login = res["login"]
    console.print(kv_table("proxy: CPU per captured browser login", [
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
        ("sidecar ledger", f"{fmt(res['ledger']['records'])} records", res["ledger"]["verdict"] + ": " +
         ", ".join(f"{k} {v}" for k, v in res["ledger"]["types"].items())),
    ]))
    console.print(targets_table(result))


