"""A real WORM S3 server for tests, benchmarks and the demo: Versity's S3 gateway on loopback.

Role: the one place that knows how to obtain ``versitygw`` (built once with ``go install``, cached
outside the repository like Keycloak) and run it with the posix backend, versioning and S3 Object
Lock, on a free 127.0.0.1 port. moto speaks S3 but lets anyone shorten a COMPLIANCE retention;
versitygw enforces Object Lock, so WORM claims are proven here.

Use it as a context manager::

    with versitygw_bucket(tmp_path) as s3:        # an S3Bucket: endpoint, credentials, bucket
        store_url = s3.store_url("ledger")        # s3://bucket/ledger?endpoint=...&region=...
        env = s3.env()                            # AWS_* variables for a child process

or hold the server (`VersityGW`) to stop, kill, pause and restart it around one data directory.

Invariants:

* The binary in the cache is never written after it appears: ``go install`` writes it under
  ``GOBIN`` (``$SIDECAR_GO_BIN`` or ``~/.cache/sidecar-go/bin``), one build at a time (a lock file).
  A missing Go toolchain or a failed build is a `ConfigError` naming the command: never a skip.
* The server runs in its own session/process group; `stop()` signals the group (SIGTERM, then
  SIGKILL), `kill()` is SIGKILL at once (a crashed store), `pause()`/`resume()` are SIGSTOP/SIGCONT
  (a hung one). Objects live in ``work_dir/root`` and ``work_dir/versions`` and survive restarts on
  the same port.
* Credentials are random per server and reach the child through its environment, never argv
  (argv is world-readable in ``ps``).
* `create_bucket` makes a bucket with Object Lock on and a default COMPLIANCE retention, which is
  what `S3Store.ensure_bucket` requires of a production bucket.

Found by experiment with v1.8.0 (posix backend, ``--versioning-dir``): delete of a locked version,
shortening its retention and a governance bypass are refused (AccessDenied); ``If-None-Match: *``
on PUT is honoured (412).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self, TypedDict

from sidecar.errors import ConfigError, StorageError

VERSION = "v1.8.0"
MODULE = "github.com/versity/versitygw/cmd/versitygw"
BIN_ENV = "SIDECAR_GO_BIN"
REGION = "us-east-1"
_STOP_GRACE_SECONDS = 10.0
_LOG_TAIL_LINES = 30


def default_bin_dir() -> Path:
    """Where Go binaries are cached: ``$SIDECAR_GO_BIN`` or ``~/.cache/sidecar-go/bin``."""
    env = os.environ.get(BIN_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sidecar-go" / "bin"


def build_command(version: str = VERSION) -> list[str]:
    return ["go", "install", f"{MODULE}@{version}"]


def ensure_binary(bin_dir: Path | None = None, *, version: str = VERSION, timeout: float = 1800) -> Path:
    """Return the cached versitygw binary, building it with ``go install`` first if it is missing."""
    directory = (bin_dir or default_bin_dir()).absolute()
    binary = directory / "versitygw"
    if _runnable(binary):
        return binary
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".versitygw.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process building the same binary: wait for it
        if _runnable(binary):
            return binary
        cmd = build_command(version)
        env = {**os.environ, "GOBIN": str(directory)}
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ConfigError(f"cannot build versitygw: `GOBIN={directory} {' '.join(cmd)}` failed: {exc}") from exc
        if proc.returncode != 0 or not _runnable(binary):
            raise ConfigError(
                f"cannot build versitygw: `GOBIN={directory} {' '.join(cmd)}` exited "
                f"{proc.returncode}\n{(proc.stderr or proc.stdout).strip()[-2000:]}"
            )
    return binary


def _runnable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _state(pid: int) -> str | None:
    """The process state letter from /proc (R, S, T, ...), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on host a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class Credentials(TypedDict):
    aws_access_key_id: str
    aws_secret_access_key: str


@dataclass(frozen=True)
class S3Bucket:
    """What a client needs to reach one bucket on the server."""

    endpoint_url: str
    access_key: str
    secret_key: str = field(repr=False)
    bucket: str
    region: str = REGION

    def store_url(self, prefix: str = "ledger") -> str:
        """The `--store` URL of this bucket (credentials are not part of it: see `env`)."""
        return f"s3://{self.bucket}/{prefix}?endpoint={self.endpoint_url}&region={self.region}"

    def env(self) -> dict[str, str]:
        """AWS_* variables that let aiobotocore (in this or a child process) use these credentials."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def credentials(self) -> Credentials:
        """Keyword arguments for `S3Store` (and aiobotocore's create_client)."""
        return {"aws_access_key_id": self.access_key, "aws_secret_access_key": self.secret_key}

    def client(self) -> Any:
        """A synchronous botocore S3 client with these credentials (close it after use)."""
        return s3_client(self.endpoint_url, self.access_key, self.secret_key, self.region)


def s3_client(endpoint_url: str, access_key: str, secret_key: str, region: str = REGION) -> Any:
    """A synchronous botocore S3 client (path-style, two retries) for setup and for attacks in tests."""
    import botocore.session
    from botocore.config import Config

    return botocore.session.get_session().create_client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2, "mode": "standard"}),
    )


class VersityGW:
    """One versitygw process (posix backend, versioning on) over work_dir; restartable on its port."""

    def __init__(self, work_dir: Path, *, port: int | None = None, binary: Path | None = None) -> None:
        self.work_dir = Path(work_dir).absolute()
        self.port = port if port is not None else free_port()
        self._binary = binary
        self.access_key = "vgw" + secrets.token_hex(8)
        self.secret_key = secrets.token_hex(20)
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False
        atexit.register(self.stop)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_file(self) -> Path:
        return self.work_dir / "versitygw.log"

    def command(self) -> list[str]:
        binary = self._binary or ensure_binary()
        return [
            str(binary),
            "--port",
            f"127.0.0.1:{self.port}",
            "--region",
            REGION,
            "--quiet",
            "posix",
            "--versioning-dir",
            str(self.work_dir / "versions"),
            str(self.work_dir / "root"),
        ]

    def start(self, timeout: float = 30.0) -> None:
        """Start (or start again, on the same port and data); return once it answers S3 requests."""
        if self.running:
            return
        cmd = self.command()
        for sub in ("root", "versions"):
            (self.work_dir / sub).mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "ROOT_ACCESS_KEY": self.access_key, "ROOT_SECRET_KEY": self.secret_key}
        with self.log_file.open("ab") as log:
            self._proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
            )
        self._paused = False
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise StorageError(f"versitygw exited {code} at start:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise StorageError(
                    f"versitygw did not answer on {self.endpoint_url} within {timeout:.0f}s:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def _answers(self) -> bool:
        """Whether an HTTP request to the port gets any answer (an unsigned request gets 403)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                return s.recv(12).startswith(b"HTTP/")
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL after a grace period; idempotent."""
        self._signal_group((signal.SIGCONT, signal.SIGTERM), _STOP_GRACE_SECONDS)

    def kill(self) -> None:
        """SIGKILL the process group at once (a crashed store); start() brings it back."""
        self._signal_group((signal.SIGKILL,), 5.0)

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections but nothing answers (a hung store)."""
        if self.running and not self._paused:
            pid = self._proc.pid  # type: ignore[union-attr]  # running implies a process
            os.killpg(pid, signal.SIGSTOP)
            self._paused = True
            # Delivery is asynchronous: wait until the kernel reports the process stopped.
            deadline = time.monotonic() + 5.0
            while _state(pid) not in ("T", "t", None) and time.monotonic() < deadline:
                time.sleep(0.005)

    def resume(self) -> None:
        if self.running and self._paused:
            os.killpg(self._proc.pid, signal.SIGCONT)  # type: ignore[union-attr]  # running implies a process
        self._paused = False

    @property
    def paused(self) -> bool:
        return self._paused

    def _signal_group(self, sigs: Sequence[signal.Signals], grace: float) -> None:
        proc, self._proc = self._proc, None
        self._paused = False
        if proc is None:
            return
        pgid = proc.pid
        for sig in sigs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            proc.wait(5.0)

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def client(self) -> Any:
        """A synchronous botocore S3 client with the root credentials (for setup and attacks in tests)."""
        return s3_client(self.endpoint_url, self.access_key, self.secret_key)

    def create_bucket(
        self,
        name: str | None = None,
        *,
        object_lock: bool = True,
        retention_days: int | None = 1,
        mode: Literal["COMPLIANCE", "GOVERNANCE"] = "COMPLIANCE",
    ) -> S3Bucket:
        """Create a bucket: with Object Lock on and (if retention_days) that default retention, unless told not to."""
        name = name or f"ledger-{secrets.token_hex(6)}"
        client = self.client()
        try:
            params: dict[str, Any] = {"Bucket": name}
            if object_lock:
                params["ObjectLockEnabledForBucket"] = True
            client.create_bucket(**params)
            if object_lock and retention_days:
                client.put_object_lock_configuration(
                    Bucket=name,
                    ObjectLockConfiguration={
                        "ObjectLockEnabled": "Enabled",
                        "Rule": {"DefaultRetention": {"Mode": mode, "Days": retention_days}},
                    },
                )
        finally:
            client.close()
        return self.bucket(name)

    def bucket(self, name: str) -> S3Bucket:
        return S3Bucket(self.endpoint_url, self.access_key, self.secret_key, name)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def versitygw_bucket(work_dir: Path | None = None, *, retention_days: int = 1) -> Iterator[S3Bucket]:
    """A running versitygw with one Object Lock bucket (default COMPLIANCE retention); stopped on exit.

    work_dir holds the server's data; without one a temporary directory is used and removed after.
    """
    with contextlib.ExitStack() as stack:
        if work_dir is None:
            work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="versitygw-")))
        server = stack.enter_context(VersityGW(work_dir))
        yield server.create_bucket(retention_days=retention_days)


def main(argv: Sequence[str]) -> int:
    """``python -m sidecar.harness.versitygw build``: build (or reuse) the cached binary, print its path."""
    if list(argv) != ["build"]:
        print("usage: python -m sidecar.harness.versitygw build", file=sys.stderr)
        return 2
    try:
        print(ensure_binary())
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
