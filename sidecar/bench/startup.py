"""Start-up: what a `sidecar` command other than `bench` pays before it does anything (issue 14).

`python -m sidecar verify --help` and the yardstick `python -c pass` (the interpreter alone) run as
child processes in turn, so both see the same seconds of a shared machine; each run's wall time and
its CPU time (RUSAGE_CHILDREN before and after) are kept, and the medians are reported.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from typing import Any

from rich.console import Console

from sidecar.bench.common import Target, kv_table, machine_info, machine_line, percentile, targets_table

COMMAND = [sys.executable, "-m", "sidecar", "verify", "--help"]
YARDSTICK = [sys.executable, "-c", "pass"]
LIMIT_S = 0.150  # issue 14: `sidecar verify --help` under 150 ms


def _once(cmd: list[str]) -> tuple[float, float]:
    """(wall s, CPU s) of one run of `cmd` as a child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def run_startup(runs: int = 11) -> dict[str, Any]:
    """The start-up benchmark; see `bench startup --help`."""
    machine = machine_info()
    _once(COMMAND)  # warm the page cache and the bytecode cache
    times: dict[str, list[tuple[float, float]]] = {"command": [], "yardstick": []}
    for _ in range(runs):
        times["command"].append(_once(COMMAND))
        times["yardstick"].append(_once(YARDSTICK))
    med = {k: (percentile([w for w, _ in v], 50), percentile([c for _, c in v], 50)) for k, v in times.items()}
    (wall, cpu), (y_wall, y_cpu) = med["command"], med["yardstick"]
    targets = [
        Target(
            "`sidecar verify --help` start-up",
            wall * 1000,
            LIMIT_S * 1000,
            "ms",
            False,
            f"150 ms wall (issue 14); the interpreter alone (`python -c pass`) took {y_wall * 1000:.0f} ms "
            f"in the same runs; CPU {cpu * 1000:.0f} ms against {y_cpu * 1000:.0f} ms",
        )
    ]
    return {
        "benchmark": "startup",
        "machine": machine,
        "config": {"runs": runs, "command": " ".join(COMMAND[1:]), "yardstick": " ".join(YARDSTICK[1:])},
        "results": {
            "wall_ms_median": wall * 1000,
            "cpu_ms_median": cpu * 1000,
            "wall_ms_min": min(w for w, _ in times["command"]) * 1000,
            "yardstick_wall_ms_median": y_wall * 1000,
            "yardstick_cpu_ms_median": y_cpu * 1000,
            "cpu_vs_yardstick": cpu / y_cpu if y_cpu else 0.0,
        },
        "targets": [t.to_json() for t in targets],
    }


def print_startup(result: dict[str, Any], console: Console) -> None:
    console.print(machine_line(result["machine"]))
    res, cfg = result["results"], result["config"]
    console.print(
        kv_table(
            f"start-up: {cfg['runs']} runs each, in turn",
            [
                (
                    "`sidecar verify --help`, wall (median / min)",
                    f"{res['wall_ms_median']:.0f} / {res['wall_ms_min']:.0f} ms",
                    f"`python -c pass`: {res['yardstick_wall_ms_median']:.0f} ms",
                ),
                (
                    "`sidecar verify --help`, CPU (median)",
                    f"{res['cpu_ms_median']:.0f} ms",
                    f"{res['cpu_vs_yardstick']:.2f} x the interpreter alone ({res['yardstick_cpu_ms_median']:.0f} ms)",
                ),
            ],
        )
    )
    console.print(targets_table(result))
