"""`bench proxy`: what the sidecar costs per request against a bare aiohttp proxy and against Keycloak.

Processes (each its own process group, all on 127.0.0.1, stopped in `finally` blocks):

* Keycloak 26.7.3 from the harness (or `--upstream`), or with `--quick` the stand-in that replays
  recorded Keycloak answers (sidecar/bench/servers.py);
* the sidecar: `python -m sidecar serve --init`;
* the reference: a bare aiohttp streaming reverse proxy (`python -m sidecar.bench.servers bare-proxy`)
  in front of the same upstream.

Every round sends the same request directly, through the bare proxy and through the sidecar (the
order rotates each round), from one client with one keep-alive session per side, so all three see
the same seconds of this shared machine. CPU is utime + stime from /proc of each process over the
phase. Then a headroom run: a second sidecar in front of the stand-in upstream, loaded with
concurrent clients, gives the captured token requests and browser logins one sidecar CPU-second
sustains. `capture_cost` splits one captured request's cost into its parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import os
import re
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
    tree_cpu_seconds,
    wait_http,
)
from sidecar.bench.references import FsyncProbe

# The recorded exchanges (captured from Keycloak 26.7.3 by tests/capture/record_exchanges.py).
RECORDINGS = Path(__file__).resolve().parents[2] / "tests" / "capture" / "exchanges"
STANDIN = ("token_client_credentials", "auth_login_page", "login_password_ok")
SIDES = ("direct", "bare", "sidecar")
KEYCLOAK_SIZING = {"client_credentials_per_vcpu_s": 120.0, "password_logins_per_vcpu_s": 15.0}


# ============================================================================================ processes
@contextlib.contextmanager
def _child(cmd: list[str], log_file: Path, ready_url: str) -> Iterator[subprocess.Popen[bytes]]:
    """`cmd` in its own process group, its output in `log_file`, up once `ready_url` answers."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    try:
        try:
            wait_http(ready_url, 60, accept_any_status=True)
        except click.ClickException:
            tail = log_file.read_text(errors="replace")[-2000:]
            raise click.ClickException(f"{cmd[2:4]} did not start; its log ends:\n{tail}") from None
        yield proc
    finally:
        stop_group(proc)


def _sidecar(
    upstream: str, data_dir: Path, port: int, log_file: Path
) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    cmd = [
        sys.executable,
        "-m",
        "sidecar",
        "serve",
        "--init",
        "--origin",
        ORIGIN,
        "--upstream",
        upstream,
        "--data",
        str(data_dir),
        "--listen",
        f"127.0.0.1:{port}",
        "--log-level",
        "WARNING",
    ]
    return _child(cmd, log_file, f"http://127.0.0.1:{port}/.sidecar/health")


def _bare_proxy(upstream: str, port: int, log_file: Path) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    cmd = [sys.executable, "-m", "sidecar.bench.servers", "bare-proxy", "--upstream", upstream, "--port", str(port)]
    return _child(cmd, log_file, f"http://127.0.0.1:{port}/")


def _standin(recordings: Path, port: int, log_file: Path) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    cmd = [
        sys.executable,
        "-m",
        "sidecar.bench.servers",
        "standin",
        "--recordings",
        str(recordings),
        "--port",
        str(port),
        *STANDIN,
    ]
    return _child(cmd, log_file, f"http://127.0.0.1:{port}/")


def _ports(n: int) -> list[int]:
    from sidecar.harness.keycloak import free_port

    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


# ============================================================================================ clients
async def _timed(
    session: Any,
    method: str,
    url: str,
    body: bytes | dict[str, str] | None,
    headers: list[tuple[str, str]] | None = None,
    want: tuple[int, ...] = (200,),
) -> float:
    t0 = time.perf_counter_ns()
    async with session.request(method, url, data=body, headers=headers, allow_redirects=False) as resp:
        await resp.read()
        status = resp.status
    elapsed = (time.perf_counter_ns() - t0) / 1e6
    if status not in want:
        raise click.ClickException(f"{method} {url.split('?')[0]} answered HTTP {status}")
    return elapsed


async def _rounds(
    bases: dict[str, str],
    method: str,
    path: str,
    form: dict[str, str] | None,
    headers: list[tuple[str, str]] | None,
    rounds: int,
    warmup: int,
    progress: Callable[[int], None],
    probe: FsyncProbe | None = None,
) -> dict[str, list[float]]:
    """`rounds` rounds, each the same request once to every base in a rotating order; latencies in ms.

    Every 50 rounds the fsync probe (if any) takes 10 samples between requests.
    """
    import aiohttp

    names = list(bases)
    times: dict[str, list[float]] = {name: [] for name in names}
    async with contextlib.AsyncExitStack() as stack:
        sessions = {
            name: await stack.enter_async_context(aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()))
            for name in names
        }
        for i in range(warmup + rounds):
            if probe is not None and i >= warmup and (i - warmup) % 50 == 0:
                probe.sample(10)
            shift = i % len(names)
            for name in names[shift:] + names[:shift]:
                ms = await _timed(sessions[name], method, bases[name] + path, form, headers)
                if i >= warmup:
                    times[name].append(ms)
            if i >= warmup:
                progress(i - warmup + 1)
    return times


def _phase_result(times: dict[str, list[float]], cpu_s: dict[str, float], served: int) -> dict[str, Any]:
    """Latency percentiles per side, added latency against direct, CPU per request of each process."""
    d50 = percentile(times["direct"], 50)
    d99 = percentile(times["direct"], 99)
    out: dict[str, Any] = {"rounds": len(times["direct"]), "direct": {"p50_ms": d50, "p99_ms": d99}}
    for side in ("bare", "sidecar"):
        t = times[side]
        paired = [p - d for p, d in zip(t, times["direct"], strict=True)]
        out[side] = {
            "p50_ms": percentile(t, 50),
            "p99_ms": percentile(t, 99),
            "added_p50_ms": percentile(t, 50) - d50,
            "added_p99_ms": percentile(t, 99) - d99,
            "paired_added_median_ms": percentile(paired, 50),
            "cpu_us_per_request": cpu_s[side] / served * 1e6,
        }
    # Keycloak served every side's request: three per round.
    out["upstream_cpu_us_per_request"] = cpu_s["upstream"] / (3 * served) * 1e6
    bare, side = out["bare"], out["sidecar"]
    out["sidecar_vs_bare_cpu"] = (
        side["cpu_us_per_request"] / bare["cpu_us_per_request"] if bare["cpu_us_per_request"] else 0.0
    )
    out["sidecar_vs_bare_added_p50"] = side["added_p50_ms"] / bare["added_p50_ms"] if bare["added_p50_ms"] > 0 else 0.0
    out["sidecar_cpu_vs_upstream_percent"] = (
        side["cpu_us_per_request"] / out["upstream_cpu_us_per_request"] * 100
        if out["upstream_cpu_us_per_request"]
        else 0.0
    )
    return out


async def _logins(base: str, count: int, progress: Callable[[int], None]) -> int:
    """Browser-style logins of alice through `base` (real Keycloak): login page, then the form post."""
    from sidecar.harness import activity
    from sidecar.harness.realm import REALM

    ok = 0
    for i in range(count):
        result = await activity.browser_login(
            base,
            REALM.name,
            REALM.app.client_id,
            REALM.alice.username,
            REALM.alice.password,
            "http://127.0.0.1/callback",
        )
        ok += result.ok
        progress(i + 1)
    return ok


_ACTION = re.compile(r'action="([^"]+)"')


class _Replay:
    """Requests shaped as the recordings the stand-in answers (a login is its login page, then its form post)."""

    def __init__(self, recordings: Path) -> None:
        from sidecar.bench.servers import load_recording

        self.token = load_recording(recordings / "token_client_credentials.json")
        self.page = load_recording(recordings / "auth_login_page.json")
        self.post = load_recording(recordings / "login_password_ok.json")

    async def token_request(self, http: Any, base: str) -> bool:
        r = self.token
        async with http.request(
            r["method"], base + r["raw_path"], data=r["request_body"], headers=r["request_headers"]
        ) as resp:
            await resp.read()
            return bool(resp.status == 200)

    async def login(self, http: Any, base: str) -> bool:
        async with http.get(base + self.page["raw_path"], headers=self.page["request_headers"]) as resp:
            page = await resp.text()
        form = _ACTION.search(page)
        if form is None or not html.unescape(form.group(1)):
            return False
        r = self.post
        async with http.request(
            r["method"],
            base + r["raw_path"],
            data=r["request_body"],
            headers=r["request_headers"],
            allow_redirects=False,
        ) as resp:
            await resp.read()
            return bool(resp.status == 302)


async def _load(base: str, work: Callable[[Any, str], Any], seconds: float, concurrency: int) -> tuple[int, int]:
    """`concurrency` clients doing `work` back to back for `seconds`: (done, succeeded)."""
    import aiohttp

    done = ok = 0
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.DummyCookieJar(), connector=aiohttp.TCPConnector(limit=concurrency)
    ) as http:

        async def client() -> None:
            nonlocal done, ok
            while time.monotonic() < deadline:
                succeeded = bool(await work(http, base))  # awaited first: `ok += await ...` loses updates
                ok += succeeded
                done += 1

        await asyncio.gather(*(client() for _ in range(concurrency)))
    return done, ok


def _headroom(sidecar_pid: int, base: str, replay: _Replay, seconds: float, concurrency: int) -> dict[str, Any]:
    """Captured token requests and browser logins per sidecar CPU-second, the upstream a fast stand-in."""
    out: dict[str, Any] = {"seconds": seconds, "concurrency": concurrency}
    for name, work in (("token", replay.token_request), ("login", replay.login)):
        asyncio.run(_load(base, work, min(1.0, seconds), concurrency))  # warm-up
        c0, t0 = process_cpu_seconds(sidecar_pid), time.monotonic()
        done, ok = asyncio.run(_load(base, work, seconds, concurrency))
        cpu, wall = process_cpu_seconds(sidecar_pid) - c0, time.monotonic() - t0
        out[name] = {
            "done": done,
            "succeeded": ok,
            "wall_s": wall,
            "sidecar_cpu_s": cpu,
            "per_sidecar_cpu_s": done / cpu if cpu else 0.0,
            "per_wall_s": done / wall if wall else 0.0,
            "sidecar_cpu_ms_each": cpu / done * 1000 if done else 0.0,
        }
    out["vs_keycloak_vcpu"] = {
        "token": out["token"]["per_sidecar_cpu_s"] / KEYCLOAK_SIZING["client_credentials_per_vcpu_s"],
        "login": out["login"]["per_sidecar_cpu_s"] / KEYCLOAK_SIZING["password_logins_per_vcpu_s"],
    }
    return out


# ============================================================================================ runner
def run_proxy(
    *,
    requests: int = 400,
    logins: int = 150,
    upstream: str | None = None,
    upstream_pid: int | None = None,
    listen_port: int | None = None,
    data_dir: Path | None = None,
    keep: bool = False,
    quick: bool = False,
    headroom_seconds: float = 5.0,
    headroom_concurrency: int = 8,
    recordings: Path = RECORDINGS,
    ui: Ui | None = None,
) -> dict[str, Any]:
    """The proxy benchmark; see `bench proxy --help`. `quick`: the stand-in upstream instead of Keycloak."""
    from sidecar.audit.verifier import verify_directory
    from sidecar.bench.capture_cost import capture_cost
    from sidecar.harness.realm import REALM
    from sidecar.ledger.keystore import KeyStore

    ui = ui or Ui()
    if data_dir is None:
        root = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    else:
        data_dir.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="bench-proxy-", dir=data_dir))
    machine = machine_info(root)
    port, bare_port, standin_port, head_port, kc_port, kc_mgmt = _ports(6)
    if listen_port is not None:
        port = listen_port
    sidecar_base = f"http://127.0.0.1:{port}"
    bare_base = f"http://127.0.0.1:{bare_port}"
    standin_base = f"http://127.0.0.1:{standin_port}"
    kc: Any = None
    warmup = max(20, min(200, requests // 2))
    try:
        with contextlib.ExitStack() as stack:
            standin = stack.enter_context(_standin(recordings, standin_port, root / "standin.log"))
            if quick:
                direct_base = standin_base
                up_pid = standin.pid
                up_cpu: Callable[[], float] = lambda: process_cpu_seconds(up_pid)  # noqa: E731
            elif upstream is None:
                from sidecar.harness.keycloak import KeycloakServer, ensure_distribution

                ui.phase("starting Keycloak (fetched with mvn and cached on first use; 15-60 s)")
                kc = KeycloakServer(
                    ensure_distribution(),
                    root / "keycloak",
                    http_port=kc_port,
                    management_port=kc_mgmt,
                    public_url=sidecar_base,
                    admin_username="admin",
                    admin_password=secrets.token_urlsafe(16),
                    realm_files=[REALM.file],
                )
                kc.start(timeout=300)
                stack.callback(kc.stop)
                direct_base = kc.base_url
                kc_pgid = kc.pid
                up_cpu = lambda: group_cpu_seconds(kc_pgid)  # noqa: E731
                ui.phase(f"Keycloak ready in {kc.startup_seconds:.1f} s")
            else:
                direct_base = upstream.rstrip("/")
                pid = upstream_pid or listening_pid(int(direct_base.rsplit(":", 1)[1]))
                if pid is None:
                    raise click.ClickException(f"nothing found listening at {direct_base}; pass --upstream-pid")
                up_cpu = lambda: tree_cpu_seconds(pid)  # noqa: E731
            data = root / "sidecar-data"
            ui.phase(
                f"starting the sidecar (python -m sidecar serve) on {sidecar_base} and the bare reference "
                f"proxy on {bare_base}, both in front of {direct_base}"
            )
            side_pid = stack.enter_context(_sidecar(direct_base, data, port, root / "sidecar.log")).pid
            bare_pid = stack.enter_context(_bare_proxy(direct_base, bare_port, root / "bare.log")).pid
            bases = {"direct": direct_base, "bare": bare_base, "sidecar": sidecar_base}

            def cpu() -> dict[str, float]:
                return {
                    "sidecar": process_cpu_seconds(side_pid),
                    "bare": process_cpu_seconds(bare_pid),
                    "upstream": up_cpu(),
                }

            def phase(
                title: str, method: str, path: str, form: Any, headers: Any, probe: FsyncProbe | None = None
            ) -> dict[str, Any]:
                c0 = cpu()
                with ui.bar(title, requests) as progress:
                    times = asyncio.run(_rounds(bases, method, path, form, headers, requests, warmup, progress, probe))
                c1 = cpu()
                return _phase_result(times, {k: c1[k] - c0[k] for k in c0}, requests + warmup)

            replay = _Replay(recordings)
            ui.phase(f"pass-through: {requests} rounds (+{warmup} warm-up) of GET discovery, direct / bare / sidecar")
            passthrough = phase(
                "pass-through", "GET", f"/realms/{REALM.name}/.well-known/openid-configuration", None, None
            )
            ui.phase(
                f"captured: {requests} rounds (+{warmup} warm-up) of client-credentials grants, with the "
                f"fsync reference (write + fdatasync in {root}) sampled in blocks between them"
            )
            probe = FsyncProbe(root)
            try:
                if quick:
                    captured = phase(
                        "captured",
                        "POST",
                        replay.token["raw_path"],
                        replay.token["request_body"],
                        replay.token["request_headers"],
                        probe,
                    )
                else:
                    cc_form = {
                        "grant_type": "client_credentials",
                        "client_id": REALM.robot.client_id,
                        "client_secret": REALM.robot.secret or "",
                    }
                    captured = phase(
                        "captured", "POST", f"/realms/{REALM.name}/protocol/openid-connect/token", cc_form, None, probe
                    )
                probe.sample(10)
            finally:
                probe.close()
            fsync = probe.summary()

            ui.phase(f"CPU per browser login: {logins} logins through the sidecar (+5 warm-up, 3 s idle)")

            async def login_run(n: int, progress: Callable[[int], None]) -> int:
                if not quick:
                    return await _logins(sidecar_base, n, progress)
                import aiohttp

                ok = 0
                async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
                    for i in range(n):
                        succeeded = await replay.login(http, sidecar_base)
                        ok += succeeded
                        progress(i + 1)
                return ok

            asyncio.run(login_run(5, lambda n: None))
            s0, k0, t0 = process_cpu_seconds(side_pid), up_cpu(), time.monotonic()
            time.sleep(0.5 if quick else 3.0)
            s1, k1, t1 = process_cpu_seconds(side_pid), up_cpu(), time.monotonic()
            idle_side, idle_kc = (s1 - s0) / (t1 - t0), (k1 - k0) / (t1 - t0)
            with ui.bar("logins", logins) as progress:
                (u0, y0), k0, t0 = process_times(side_pid), up_cpu(), time.monotonic()
                ok = asyncio.run(login_run(logins, progress))
                (u1, y1), k1, t1 = process_times(side_pid), up_cpu(), time.monotonic()
            wall = t1 - t0
            side_user, side_sys = u1 - u0, y1 - y0
            side_cpu = max(0.0, (side_user + side_sys) - idle_side * wall)
            kc_cpu_used = max(0.0, (k1 - k0) - idle_kc * wall)

            ui.phase(
                f"headroom: a sidecar in front of the stand-in upstream (recorded Keycloak answers), "
                f"{headroom_concurrency} clients, {headroom_seconds:g} s of token requests, then of logins"
            )
            if quick:
                headroom = _headroom(side_pid, sidecar_base, replay, headroom_seconds, headroom_concurrency)
            else:
                with _sidecar(standin_base, root / "headroom-data", head_port, root / "headroom.log") as second:
                    headroom = _headroom(
                        second.pid, f"http://127.0.0.1:{head_port}", replay, headroom_seconds, headroom_concurrency
                    )
        ui.phase("captured-request cost by part (in this process, on the recorded client-credentials exchange)")
        parts = capture_cost(recordings, root / "parts", quick=quick)
        ui.phase("verifying the sidecar's ledger and counting its records")
        report = verify_directory(data, KeyStore(data).trust())
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)

    side_per_login = side_cpu / logins * 1000 if logins else 0.0
    kc_per_login = kc_cpu_used / logins * 1000 if logins else 0.0
    login_ratio = side_per_login / kc_per_login if kc_per_login else 0.0
    fsync_ms = fsync["p50_us"] / 1000
    no_kc = "--quick replays recorded answers: no Keycloak CPU to compare with" if quick else None
    if not quick and (captured["upstream_cpu_us_per_request"] <= 0 or kc_per_login <= 0):
        no_kc = "no Keycloak CPU was seen (wrong --upstream-pid?)"
    bare_pt, side_pt = passthrough["bare"], passthrough["sidecar"]
    targets = [
        Target(
            "pass-through CPU per request vs bare proxy",
            passthrough["sidecar_vs_bare_cpu"],
            1.5,
            "x",
            False,
            f"1.5 x a bare aiohttp streaming proxy in the same rounds ({bare_pt['cpu_us_per_request']:.0f} us; "
            f"sidecar {side_pt['cpu_us_per_request']:.0f} us)",
        ),
        Target(
            "pass-through added latency p50",
            side_pt["added_p50_ms"],
            0.3,
            "ms",
            False,
            f"0.3 ms (brief §9); the bare proxy added {bare_pt['added_p50_ms']:.3f} ms in the same rounds",
        ),
        Target(
            "captured added latency p50",
            captured["sidecar"]["added_p50_ms"],
            fsync_ms + 0.3,
            "ms",
            False,
            f"this disk's fsync p50 ({fsync_ms:.3f} ms) + 0.3 ms; the bare proxy added "
            f"{captured['bare']['added_p50_ms']:.3f} ms",
        ),
        Target(
            "sidecar CPU per token request / Keycloak's",
            captured["sidecar_cpu_vs_upstream_percent"],
            5.0,
            "%",
            False,
            f"5% of Keycloak's CPU for the same grant ({captured['upstream_cpu_us_per_request'] / 1000:.2f}"
            f" ms); sidecar {captured['sidecar']['cpu_us_per_request'] / 1000:.2f} ms, "
            f"{captured['sidecar_vs_bare_cpu']:.1f} x the bare proxy",
            no_kc,
        ),
        Target(
            "sidecar CPU per login / Keycloak's",
            login_ratio * 100,
            2.0,
            "%",
            False,
            f"2% of Keycloak's CPU per login ({kc_per_login:.1f} ms); sidecar {side_per_login:.2f} ms",
            no_kc,
        ),
    ]
    return {
        "benchmark": "proxy",
        "machine": machine,
        "config": {
            "requests": requests,
            "logins": logins,
            "warmup": warmup,
            "quick": quick,
            "upstream": ("stand-in (recorded answers)" if quick else upstream or "Keycloak started by the benchmark"),
            "sidecar": "subprocess: python -m sidecar serve",
            "reference": "subprocess: python -m sidecar.bench.servers bare-proxy",
            "kept": str(root) if keep else None,
        },
        "references": {
            "fsync_p50_us": fsync["p50_us"],
            "fsync_p99_us": fsync["p99_us"],
            "bare_proxy_cpu_us_per_passthrough": bare_pt["cpu_us_per_request"],
            "bare_proxy_added_p50_ms": bare_pt["added_p50_ms"],
            "keycloak_cpu_us_per_token_request": captured["upstream_cpu_us_per_request"],
            "keycloak_cpu_ms_per_login": kc_per_login,
            "keycloak_sizing_guide": KEYCLOAK_SIZING,
            "keycloak_startup_s": kc.startup_seconds if kc is not None else None,
        },
        "results": {
            "passthrough": passthrough,
            "captured": captured,
            "capture_cost": parts,
            "login": {
                "logins": logins,
                "succeeded": ok,
                "seconds": wall,
                "sidecar_cpu_ms_per_login": side_per_login,
                "keycloak_cpu_ms_per_login": kc_per_login,
                "ratio_percent": login_ratio * 100,
                "idle_cpu_share_sidecar": idle_side,
                "sidecar_user_ms_per_login": side_user / logins * 1000,
                "sidecar_sys_ms_per_login": side_sys / logins * 1000,
                "idle_cpu_share_keycloak": idle_kc,
                "cpu_clock_resolution_ms": 1000 / os.sysconf("SC_CLK_TCK"),
            },
            "headroom": headroom,
            "ledger": {
                "records": report.records,
                "verdict": "intact" if report.ok else "findings",
                "types": dict(sorted(report.types.items())),
            },
        },
        "targets": [t.to_json() for t in targets],
    }


# ============================================================================================ output
def print_proxy(result: dict[str, Any], console: Console) -> None:
    res, ref = result["results"], result["references"]
    console.print(machine_line(result["machine"]))
    table = Table(
        title="proxy: latency (ms) and CPU per request (us), direct / bare aiohttp proxy / sidecar in the "
        "same rounds; discovery = GET .well-known/openid-configuration, cc grant = "
        "client_credentials",
        title_justify="left",
    )
    for col in (
        "request",
        "rounds",
        "direct p50",
        "bare p50",
        "sidecar p50",
        "bare added",
        "sidecar added",
        "sidecar p99",
        "bare CPU",
        "sidecar CPU",
        "ratio",
        "upstream CPU",
    ):
        table.add_column(col, justify="left" if col == "request" else "right")
    for name, key in (("pass-through (discovery)", "passthrough"), ("captured (cc grant)", "captured")):
        r = res[key]
        table.add_row(
            name,
            fmt(r["rounds"]),
            f"{r['direct']['p50_ms']:.3f}",
            f"{r['bare']['p50_ms']:.3f}",
            f"{r['sidecar']['p50_ms']:.3f}",
            f"{r['bare']['added_p50_ms']:.3f}",
            f"{r['sidecar']['added_p50_ms']:.3f}",
            f"{r['sidecar']['p99_ms']:.3f}",
            f"{r['bare']['cpu_us_per_request']:.0f}",
            f"{r['sidecar']['cpu_us_per_request']:.0f}",
            f"{r['sidecar_vs_bare_cpu']:.2f} x",
            f"{r['upstream_cpu_us_per_request']:.0f}",
        )
    console.print(table)
    parts = res["capture_cost"]
    console.print(
        kv_table(
            "captured request: cost by part (us, p50 of in-process timings)",
            [(name, f"{value:.1f}", parts["notes"].get(name, "")) for name, value in parts["parts_us"].items()],
        )
    )
    login, head = res["login"], res["headroom"]
    console.print(
        kv_table(
            "proxy: CPU per captured browser login, and headroom",
            [
                ("logins (succeeded)", f"{login['logins']} ({login['succeeded']})", f"{login['seconds']:.1f} s"),
                (
                    "sidecar CPU per login",
                    f"{login['sidecar_cpu_ms_per_login']:.2f} ms",
                    f"user {login['sidecar_user_ms_per_login']:.2f} + "
                    f"system {login['sidecar_sys_ms_per_login']:.2f} ms; "
                    f"idle share {login['idle_cpu_share_sidecar']:.3f} CPU subtracted",
                ),
                (
                    "Keycloak CPU per login",
                    f"{login['keycloak_cpu_ms_per_login']:.1f} ms",
                    f"idle share {login['idle_cpu_share_keycloak']:.3f} CPU subtracted",
                ),
                (
                    "ratio",
                    f"{login['ratio_percent']:.2f} %",
                    f"/proc/<pid>/stat, {login['cpu_clock_resolution_ms']:.0f} ms ticks",
                ),
                (
                    "fsync p50 / p99 (reference)",
                    f"{ref['fsync_p50_us']:.0f} / {ref['fsync_p99_us']:.0f} us",
                    "same disk",
                ),
                (
                    "captured token requests per sidecar CPU-second",
                    fmt(head["token"]["per_sidecar_cpu_s"]),
                    f"{head['vs_keycloak_vcpu']['token']:.1f} x Keycloak's 120/s per vCPU; "
                    f"{fmt(head['token']['per_wall_s'])}/s "
                    f"wall, {head['concurrency']} clients, stand-in upstream",
                ),
                (
                    "browser logins per sidecar CPU-second",
                    fmt(head["login"]["per_sidecar_cpu_s"]),
                    f"{head['vs_keycloak_vcpu']['login']:.1f} x Keycloak's 15/s per vCPU; "
                    f"{fmt(head['login']['per_wall_s'])}/s "
                    f"wall",
                ),
                (
                    "sidecar ledger",
                    f"{fmt(res['ledger']['records'])} records",
                    res["ledger"]["verdict"] + ": " + ", ".join(f"{k} {v}" for k, v in res["ledger"]["types"].items()),
                ),
            ],
        )
    )
    console.print(targets_table(result))
