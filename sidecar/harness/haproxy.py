"""Debian's HAProxy on loopback in front of several sidecars, for the cluster test. [dev only]

Role: the load balancer a platform team puts in front of a Keycloak cluster, run as a process with
a configuration written here. Invariants:

* HAProxy connects to the sidecars from its own loopback address (``source``, default 127.0.0.2),
  so a sidecar can trust exactly that address (``trusted_proxies``) and nobody else on the host:
  a client reaching a sidecar directly from 127.0.0.1 with its own X-Forwarded-For is not believed.
* It sets X-Forwarded-For (``option forwardfor``) and overwrites X-Forwarded-Proto; it health-checks
  every sidecar's readiness (``/.sidecar/health/ready``) and redispatches a request whose connection
  to a dead server fails (``option redispatch``, ``retries``).
* A request may name its server with the ``X-Route`` header (``use-server``; ignored while that server
  is down). The tests use it to continue one browser login on the other node; balancing is
  round-robin otherwise.
* The process runs in the foreground (``-db``) in its own process group, ended by its own pid;
  ``server_states()`` reads the admin socket under ``work_dir``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

from sidecar.errors import ConfigError, UpstreamError

ROUTE_HEADER = "X-Route"


def find_binary() -> Path:
    """Debian's haproxy (``apt-get install haproxy``); a missing one is a `ConfigError`, never a skip."""
    found = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").is_file() else None)
    if found is None:
        raise ConfigError("haproxy not found (apt-get install haproxy)")
    return Path(found)


class HAProxy:
    """One haproxy process balancing ``servers`` (name -> host:port) behind 127.0.0.1:``port``."""

    def __init__(
        self,
        work_dir: Path,
        *,
        port: int,
        servers: Mapping[str, str],
        source: str = "127.0.0.2",
        check_interval_ms: int = 500,
    ) -> None:
        self.work_dir = Path(work_dir).absolute()
        self.port = port
        self.servers = dict(servers)
        self.source = source
        self.check_interval_ms = check_interval_ms
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def socket_path(self) -> Path:
        return self.work_dir / "admin.sock"

    @property
    def log_file(self) -> Path:
        return self.work_dir / "haproxy.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def config(self) -> str:
        lines = [
            "global",
            "    maxconn 4096",
            f"    stats socket {self.socket_path} mode 600 level admin",
            "defaults",
            "    mode http",
            "    timeout connect 2s",
            "    timeout client 120s",
            "    timeout server 120s",
            "    option forwardfor",
            "    option redispatch",
            "    retries 3",
            "frontend ledger",
            f"    bind 127.0.0.1:{self.port}",
            "    http-request set-header X-Forwarded-Proto http",
            "    default_backend sidecars",
            "backend sidecars",
            "    balance roundrobin",
            "    option httpchk GET /.sidecar/health/ready",
            "    http-check expect status 200",
        ]
        for name in self.servers:
            lines.append(f"    use-server {name} if {{ req.hdr({ROUTE_HEADER.lower()}) -m str {name} }}")
        for name, address in self.servers.items():
            lines.append(
                f"    server {name} {address} check inter {self.check_interval_ms}ms fall 2 rise 2 source {self.source}"
            )
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 30.0) -> None:
        """Write the configuration, check it (``haproxy -c``), start, and wait until the port accepts."""
        if self._proc is not None and self._proc.poll() is None:
            return
        binary = find_binary()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        cfg = self.work_dir / "haproxy.cfg"
        cfg.write_text(self.config())
        check = subprocess.run([str(binary), "-c", "-f", str(cfg)], capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise ConfigError(f"haproxy -c rejected the configuration:\n{check.stdout}{check.stderr}")
        with self.log_file.open("ab") as log:
            self._proc = subprocess.Popen(
                [str(binary), "-db", "-f", str(cfg)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise UpstreamError(f"haproxy exited {self._proc.returncode}:\n{self.log_file.read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            if time.monotonic() > deadline:
                self.stop()
                raise UpstreamError(f"haproxy did not listen on {self.port} within {timeout:.0f}s")
            time.sleep(0.05)

    def admin(self, command: str) -> str:
        """One command on the admin socket (``show servers state``, ``disable server sidecars/a``)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(self.socket_path))
            s.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def server_states(self) -> dict[str, str]:
        """Each server's operational state as HAProxy sees it: ``UP`` or ``DOWN`` (from its health checks)."""
        out: dict[str, str] = {}
        for line in self.admin("show servers state sidecars").splitlines():
            fields = line.split()
            if len(fields) > 5 and fields[3] in self.servers:
                out[fields[3]] = "UP" if fields[5] == "2" else "DOWN"  # srv_op_state 2 = running
        return out

    def wait_state(self, name: str, state: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.server_states().get(name) != state:
            if time.monotonic() > deadline:
                raise UpstreamError(f"haproxy: server {name} not {state} within {timeout:.0f}s: {self.server_states()}")
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM (hard stop) the process group, SIGKILL if it lingers; idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
