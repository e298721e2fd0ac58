"""What every benchmark shares: machine facts, statistics, the `Target` verdict, the UI, the synthetic
identity events, child-process helpers and the table output.

Loaded only when `sidecar bench` runs (see sidecar/cli.py), so it may import rich freely.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sidecar import loop
from sidecar.core.events import EventType, IdentityEvent, Outcome, Party

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
        # The loop the sidecar and its bare reference run on (SIDECAR_UVLOOP), the same for both.
        "event_loop": loop.planned(),
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
    """One brief target: a measured figure against a limit derived from a same-run reference.

    `unmeasured` (a reason) marks a target this run could not measure (for example `--quick`, which
    replays recorded Keycloak answers instead of running Keycloak): it is still printed, with no verdict.
    """

    name: str
    measured: float
    limit: float
    unit: str
    higher_is_better: bool
    reference: str  # how the limit was derived, with the reference's own figure
    unmeasured: str | None = None

    @property
    def passed(self) -> bool | None:
        if self.unmeasured is not None:
            return None
        return self.measured >= self.limit if self.higher_is_better else self.measured < self.limit

    def verdict(self) -> str:
        if self.unmeasured is not None:
            return f"NOT MEASURED: {self.unmeasured}"
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
        return {
            "name": self.name,
            "measured": self.measured,
            "limit": self.limit,
            "unit": self.unit,
            "comparison": ">=" if self.higher_is_better else "<",
            "reference": self.reference,
            "passed": self.passed,
            "verdict": self.verdict(),
        }


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
        event = IdentityEvent(
            EventType.LOGIN_SUCCEEDED,
            Outcome.SUCCEEDED,
            realm=realm,
            actor=user,
            client="ledger-app",
            source_ip=ip,
            session=_uuid(rnd),
            request_id=rid,
            details={"method": "password"},
        )
    elif kind == 3:
        event = IdentityEvent(
            EventType.LOGIN_FAILED,
            Outcome.FAILED,
            realm=realm,
            actor=Party(username=user.username, kind="user"),
            client="ledger-app",
            source_ip=ip,
            request_id=rid,
            error="invalid_user_credentials",
            details={"method": "password"},
        )
    elif kind in (4, 5):
        event = IdentityEvent(
            EventType.TOKEN_ISSUED,
            Outcome.SUCCEEDED,
            realm=realm,
            actor=Party(id=_uuid(rnd), client="ledger-robot", kind="client"),
            client="ledger-robot",
            source_ip=ip,
            request_id=rid,
            details={"grant": "client_credentials"},
        )
    elif kind == 6:
        event = IdentityEvent(
            EventType.TOKEN_REFRESHED,
            Outcome.SUCCEEDED,
            realm=realm,
            actor=user,
            client="ledger-app",
            source_ip=ip,
            session=_uuid(rnd),
            request_id=rid,
            details={"grant": "refresh_token", "presented_refresh_fp": f"{rnd.getrandbits(128):032x}"},
        )
    elif kind == 7:
        event = IdentityEvent(
            EventType.LOGOUT_COMPLETED,
            Outcome.SUCCEEDED,
            realm=realm,
            actor=user,
            client="ledger-app",
            source_ip=ip,
            session=_uuid(rnd),
            request_id=rid,
        )
    elif kind == 8:
        event = IdentityEvent(
            EventType.MFA_OTP_VERIFIED,
            Outcome.SUCCEEDED,
            realm=realm,
            actor=user,
            client="ledger-app",
            source_ip=ip,
            request_id=rid,
            details={"credential": "otp"},
        )
    else:
        admin = Party(id=_uuid(rnd), username="carol", client="security-admin-console", kind="user")
        event = IdentityEvent(
            EventType.ROLE_GRANTED,
            Outcome.SUCCEEDED,
            realm=realm,
            actor=admin,
            target=user,
            client="security-admin-console",
            source_ip=ip,
            request_id=rid,
            details={"roles": [rnd.choice(("viewer", "operator", "auditor"))], "phase": "outcome"},
        )
    return event.to_json()


def identity_events(count: int, *, seed: int = 20_261_126, start: int = 0) -> list[dict[str, Any]]:
    rnd = random.Random(seed + start)
    return [identity_event(start + i, rnd) for i in range(count)]


# ============================================================================================ processes


def process_times(pid: int) -> tuple[float, float]:
    """(utime, stime) in seconds of one process (all its threads, live or exited), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds of one process: the scheduler's nanosecond run time summed over its live threads
    (/proc/<pid>/task/*/schedstat), or utime + stime in clock ticks where that is not available."""
    total, found = 0, False
    try:
        for task in os.scandir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int(Path(task.path, "schedstat").read_text().split()[0])
                found = True
    except OSError:
        pass
    return total / 1e9 if found else sum(process_times(pid))


def group_cpu_seconds(pgid: int) -> float:
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


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime summed over a process and its live descendants (a launcher script and its JVM)."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        ticks[int(entry.name)] = int(fields[11]) + int(fields[12])
    tree, grew = {pid}, True
    while grew:
        grew = False
        for child, parent in parents.items():
            if parent in tree and child not in tree:
                tree.add(child)
                grew = True
    return sum(ticks.get(p, 0) for p in tree) / os.sysconf("SC_CLK_TCK")


def listening_pid(port: int) -> int | None:
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


def wait_http(url: str, timeout: float, accept_any_status: bool = False) -> None:
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


def stop_group(proc: subprocess.Popen[bytes], grace: float = 20.0) -> None:
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


# ============================================================================================ output


def fmt(value: Any, digits: int = 0) -> str:
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def targets_table(result: dict[str, Any]) -> Table:
    table = Table(title=f"{result['benchmark']}: brief §9 targets", title_justify="left")
    for col in ("target", "measured", "limit", "derived from (same run)", "result"):
        table.add_column(col, justify="right" if col in ("measured", "limit") else "left", no_wrap=col == "target")
    for t in result["targets"]:
        digits = 3 if t["unit"] == "ms" and t["limit"] < 100 else (2 if t["unit"] == "%" else 0)
        table.add_row(
            t["name"],
            f"{fmt(float(t['measured']), digits)} {t['unit']}",
            f"{t['comparison']} {fmt(float(t['limit']), digits)}",
            t["reference"],
            "[green]PASS[/green]"
            if t["passed"]
            else f"[yellow]{t['verdict']}[/yellow]"
            if t["passed"] is None
            else f"[red]{t['verdict']}[/red]",
        )
    return table


def kv_table(title: str, rows: Sequence[tuple[str, str, str]]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("reference / note")
    for row in rows:
        table.add_row(*row)
    return table


def machine_line(m: dict[str, Any]) -> str:
    load = ", ".join(f"{x:.2f}" for x in m["load_average"])
    fs = f", {m['filesystem']}" if "filesystem" in m else ""
    return (
        f"{m['date']}  {m['cpu']}, {m['cores']} cores, load average {load}, Linux {m['kernel']}, "
        f"Python {m['python']}, {m.get('event_loop', 'asyncio')} loop{fs}"
    )


def make_console() -> Console:
    # Off a terminal (a pipe, a file, a doc being written) rich would squeeze the tables into 80 columns.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 150)


def emit(result: dict[str, Any], as_json: bool, printer: Callable[[dict[str, Any], Console], None]) -> None:
    if as_json:
        click.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    else:
        printer(result, make_console())
