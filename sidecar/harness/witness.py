"""A real C2SP witness on loopback: transparency-dev's omniwitness, for tests and demos.

The binary is built once into `~/.cache/sidecar-go/bin` (outside the repository):

    GOBIN=~/.cache/sidecar-go/bin go install github.com/transparency-dev/witness/cmd/omniwitness@latest

`python -m sidecar.harness.witness build` does exactly that when it is missing (CI runs it).
`OmniWitness` starts one witness in its own process group with a fresh Ed25519 key, an
SQLite state file and the sidecar's log added through `-additional_logs`, and ends it by
its process group. A missing binary is an error, never a skip.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from sidecar.core.keys import ED25519_TYPE, PublicKey
from sidecar.core.witness import Witness, log_vkey
from sidecar.harness.keycloak import free_port

GO_BIN = Path.home() / ".cache" / "sidecar-go" / "bin"
BINARY = GO_BIN / "omniwitness"
PACKAGE = "github.com/transparency-dev/witness/cmd/omniwitness@latest"


def build() -> Path:
    """The omniwitness binary, built with `go install` into the cache if it is not there yet."""
    if BINARY.exists():
        return BINARY
    go = shutil.which("go") or "/usr/local/go/bin/go"
    GO_BIN.mkdir(parents=True, exist_ok=True)
    subprocess.run([go, "install", PACKAGE], check=True, env={**os.environ, "GOBIN": str(GO_BIN)}, timeout=1800)
    if not BINARY.exists():
        raise RuntimeError(f"go install {PACKAGE} did not produce {BINARY}")
    return BINARY


def _private_key_text(name: str, seed: bytes) -> str:
    """A note signer key (`PRIVATE+KEY+<name>+<id>+<base64(0x01 || seed)>`), as omniwitness reads it."""
    blob = base64.b64encode(ED25519_TYPE + seed).decode()
    return f"PRIVATE+KEY+{name}+00000000+{blob}"


@dataclass
class OmniWitness:
    """One omniwitness process on a free loopback port that witnesses the log `origin`."""

    workdir: Path
    name: str
    origin: str
    log_key: PublicKey
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    public_key: bytes = b""
    _seed: bytes = field(default=b"", repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def witness(self) -> Witness:
        return Witness(self.name, self.public_key, self.url)

    def start(self) -> OmniWitness:
        binary = build()
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self._seed:
            key = Ed25519PrivateKey.generate()
            self._seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
            self.public_key = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        key_file = self.workdir / "witness.key"
        key_file.write_text(_private_key_text(self.name, self._seed))
        key_file.chmod(0o600)
        logs = self.workdir / "logs.yaml"
        logs.write_text(
            f"Logs:\n  - Origin: {self.origin}\n    PublicKey: {log_vkey(self.log_key)}\n"
            f"    URL: https://{self.origin}/\n"
        )
        self.port = self.port or free_port()
        out = open(self.workdir / "omniwitness.log", "ab")
        self.proc = subprocess.Popen(
            [
                str(binary),
                f"--listen=127.0.0.1:{self.port}",
                "--metrics_listen=",
                f"--private_key_path={key_file}",
                f"--db_file={self.workdir / 'witness.db'}",
                f"--additional_logs={logs}",
                "--logtostderr",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"omniwitness exited with {self.proc.returncode}: "
                    f"{(self.workdir / 'omniwitness.log').read_text()[-2000:]}"
                )
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"omniwitness did not listen on port {self.port} within 30 s")

    def stop(self) -> None:
        """End the witness's process group (its state file stays: a restart keeps what it cosigned)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None


if __name__ == "__main__":
    if sys.argv[1:] == ["build"]:
        print(build())
    else:
        sys.exit("usage: python -m sidecar.harness.witness build")
