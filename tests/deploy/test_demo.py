"""`make demo` (python -m sidecar.demo) leaves nothing running when its terminal is closed (SIGHUP)."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.keycloak


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


@pytest.mark.timeout(900)  # a cold Keycloak start on a busy 2-core machine takes minutes
def test_demo_stops_keycloak_and_the_sidecar_on_sighup(tmp_path: Path) -> None:
    """Once the demo is up, a SIGHUP (the terminal closed) ends it and every process it started: none mentions its directory afterwards."""
    root = tmp_path / "demo"
    env = {**os.environ, "SIDECAR_DEMO_DIR": str(root)}
    # bufsize=0: readline() must not pull later lines into a buffer that select() cannot see, or the
    # last lines ("Press Ctrl-C") would sit there while select() waits on an idle pipe.
    proc = subprocess.Popen(
        [sys.executable, "-m", "sidecar.demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
        bufsize=0,
    )
    assert proc.stdout is not None
    output: list[str] = []
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + 600
    try:
        while not any("Press Ctrl-C" in line for line in output):
            assert proc.poll() is None, "".join(output)
            assert time.monotonic() < deadline, "demo not up in 600 s:\n" + "".join(output)
            if selector.select(timeout=1.0):
                output.append(proc.stdout.readline().decode(errors="replace"))
        assert any("verdict: INTACT" in line for line in output), "".join(output)
        started = _processes_mentioning(str(root))
        assert len(started) >= 2, f"expected Keycloak and the sidecar under {root}: {started}"
        os.killpg(proc.pid, signal.SIGHUP)  # what the terminal does to its session's foreground group
        proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        selector.close()
        proc.stdout.close()
    left = []
    for _ in range(50):
        left = _processes_mentioning(str(root))
        if not left:
            break
        time.sleep(0.2)
    assert not left, f"still running after SIGHUP: {left}"
