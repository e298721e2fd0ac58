"""Session fixtures for the sidecar as a real process in front of the real Keycloak.

`sidecar` runs `python -m sidecar serve` on the port Keycloak's hostname names, with a
directory store as the remote copy, the auditor endpoint bound to the test realm, and
its log captured to a file (searched for secrets at the end). `ledger_records()` reads
every whole record the process has written so far.

`secrets_seen` is a session-wide set: each test adds every secret it used or received
(passwords, client secrets, tokens, codes, cookies); tests/e2e/test_zz_secrets.py checks
none of them reached any byte the sidecar wrote.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sidecar.audit.pseudonyms import ledger_origin
from sidecar.core import framing
from sidecar.core.canonical import parse
from sidecar.harness.keycloak import KeycloakServer
from sidecar.harness.realm import REALM
from sidecar.ledger.subjects import SubjectKeys, default_dir, reveal
from tests.fixtures_keycloak import ADMIN_PASSWORD

ORIGIN = "e2e.test/keycloak-ledger"


@dataclass
class SidecarProcess:
    base_url: str
    data_dir: Path
    store_dir: Path
    log_file: Path
    proc: subprocess.Popen[bytes]

    @property
    def trust(self) -> Path:
        return self.data_dir / "trust.json"

    def records(self) -> list[dict[str, Any]]:
        return ledger_records(self.data_dir)


def ledger_records(data_dir: Path, *, decrypt: bool = True) -> list[dict[str, Any]]:
    """Every whole record, as an investigator reads it: decrypted with the ledger's subject key store.

    `serve` always encrypts identifying values (<data>/subjects/ by default); `decrypt=False` gives
    the bytes' own view (ciphertext objects). The store is opened after the segments are read: a key
    is on disk before any record uses it.
    """
    out = []
    for seg in sorted((data_dir / "segments").glob("*.seg")):
        for frame in framing.iter_frames(seg.read_bytes()):
            if isinstance(frame, framing.FrameDamage):
                break  # the writer may be mid-append: a partial last frame is not ours to judge
            if frame.kind == framing.RECORD:
                out.append(parse(frame.body))
    if decrypt and (default_dir(data_dir) / "subjects.json").exists():
        store = SubjectKeys.open(default_dir(data_dir))
        origin = ledger_origin(data_dir)
        out = [reveal(r, origin=origin, store=store) for r in out]
    return out


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@contextlib.contextmanager
def sidecar_process(
    args: list[str], port: int, log_file: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m sidecar serve ARGS` until its health answers; SIGINT (then SIGKILL) at the end."""
    with log_file.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sidecar", "serve", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/.sidecar/health", 30)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def holds_secret(blob: bytes, secret: str) -> bool:
    """Whether `blob` holds `secret`. A short all-digit secret (a one-time code) counts only as a number of
    its own: any six digits turn up inside nanosecond timestamps and byte offsets sooner or later, and a
    code written at rest would stand alone (`"otp":"123456"`, `otp=123456`)."""
    raw = secret.encode()
    if raw.isdigit() and len(raw) <= 10:
        return re.search(rb"(?<![0-9])" + re.escape(raw) + rb"(?![0-9])", blob) is not None
    return raw in blob


@pytest.fixture(scope="session")
def secrets_seen() -> set[str]:
    """Every secret value the tests used or received; none may appear in what the sidecar wrote."""
    found = {ADMIN_PASSWORD, REALM.app.secret or "", REALM.robot.secret or ""}
    found.update(u.password for u in REALM.users)
    return {s for s in found if s}


@pytest.fixture(scope="session")
def sidecar(
    keycloak: KeycloakServer, ports: dict[str, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SidecarProcess]:
    """The sidecar process in front of Keycloak, on the port Keycloak believes is its public address."""
    root = tmp_path_factory.mktemp("sidecar")
    data, store, log_file = root / "ledger", root / "store", root / "sidecar.log"
    args = [
        "--init",
        "--origin",
        ORIGIN,
        "--upstream",
        keycloak.base_url,
        "--data",
        str(data),
        "--store",
        str(store),
        "--listen",
        f"127.0.0.1:{ports['sidecar']}",
        "--auditor-realm",
        REALM.name,
        "--segment-max-bytes",
        "65536",
        "--log-level",
        "DEBUG",
        "--reader-realm",
        REALM.name,
        "--reader-client-id",
        REALM.robot.client_id,
        "--drift-sweep",
        "15",
    ]
    env = {**os.environ, "SIDECAR_READER_SECRET": REALM.robot.secret or ""}
    with sidecar_process(args, ports["sidecar"], log_file, env) as proc:
        yield SidecarProcess(f"http://127.0.0.1:{ports['sidecar']}", data, store, log_file, proc)
