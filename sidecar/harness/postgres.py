"""A private PostgreSQL cluster on loopback for the process-topology test: Debian's server binaries,
``initdb`` and ``pg_ctl`` under a temporary directory, ended by its own ``pg_ctl stop``.

Role: the database Keycloak runs on in production mode, without touching the machine's own
clusters. Invariants:

* The cluster lives in a fresh directory (mode 0700) and listens on 127.0.0.1 and a free port,
  with its Unix socket inside that directory; nothing else on the machine can use it.
* ``initdb`` refuses to run as root, so as root the cluster belongs to the ``postgres`` system user
  (every server command runs through ``runuser -u postgres``); otherwise to the current user.
* The superuser connects only over that private socket (``trust`` there); TCP needs a password
  (``scram-sha-256``). Passwords reach ``psql`` on its standard input, never its command line.
* `stop()` is idempotent (``pg_ctl stop -m fast``) and removes the directory.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from sidecar.errors import ConfigError, StorageError
from sidecar.harness.keycloak import free_port

PG_BIN_CANDIDATES = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin")


def find_bin_dir() -> Path:
    """The directory holding initdb and pg_ctl (``$SIDECAR_PG_BIN`` or Debian's versioned path)."""
    env = os.environ.get("SIDECAR_PG_BIN")
    installed = sorted((str(p) for p in Path("/usr/lib/postgresql").glob("*/bin")), reverse=True)
    for candidate in ([env] if env else []) + list(PG_BIN_CANDIDATES) + installed:
        if (Path(candidate) / "initdb").is_file():
            return Path(candidate)
    raise ConfigError("PostgreSQL server binaries not found (apt-get install postgresql; or set SIDECAR_PG_BIN)")


class PostgresCluster:
    """One private cluster: `start()`, `create_database()`, `stop()`; `jdbc_url(db)` for Keycloak."""

    def __init__(self, *, port: int | None = None, bin_dir: Path | None = None) -> None:
        self.bin_dir = bin_dir or find_bin_dir()
        self.port = port or free_port()
        self.owner = "postgres" if os.geteuid() == 0 else None
        self.root: Path | None = None
        self.startup_seconds: float | None = None

    @property
    def data_dir(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        assert self.root is not None
        return self.root / "socket"

    @property
    def log_file(self) -> Path:
        assert self.root is not None
        return self.root / "postgres.log"

    def jdbc_url(self, database: str) -> str:
        return f"jdbc:postgresql://127.0.0.1:{self.port}/{database}"

    def _cmd(self, *args: str) -> list[str]:
        return ["runuser", "-u", self.owner, "--", *args] if self.owner else list(args)

    def _run(self, *args: str, stdin: str | None = None, timeout: float = 120) -> str:
        proc = subprocess.run(
            self._cmd(*args), input=stdin, capture_output=True, text=True, timeout=timeout, check=False, cwd="/"
        )
        if proc.returncode != 0:
            raise StorageError(f"{Path(args[0]).name} exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()}")
        return proc.stdout

    def start(self) -> None:
        """initdb a fresh cluster and start it; returns once it accepts connections."""
        if self.root is not None:
            return
        began = time.monotonic()
        self.root = Path(tempfile.mkdtemp(prefix="sidecar-pg-"))
        atexit.register(self.stop)
        if self.owner:
            entry = pwd.getpwnam(self.owner)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._run("mkdir", "-m", "0700", str(self.socket_dir))
        self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-instructions",
        )
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.socket_dir} -c fsync=off"
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )
        self.startup_seconds = time.monotonic() - began

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL (from stdin) as the superuser over the private socket."""
        return self._run(
            str(self.bin_dir / "psql"),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            str(self.socket_dir),
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            database,
            "-f",
            "-",
            stdin=sql,
        )

    def create_database(self, name: str, owner: str, password: str) -> None:
        """A login role with this password owning a new database of the same name."""
        if "'" in password or not name.isidentifier() or not owner.isidentifier():
            raise ConfigError("database and role names must be identifiers; the password may not contain a quote")
        self.psql(f"CREATE ROLE {owner} LOGIN PASSWORD '{password}';\nCREATE DATABASE {name} OWNER {owner};\n")

    def stop(self) -> None:
        """Fast shutdown and removal of the cluster directory; safe to call twice."""
        root, self.root = self.root, None
        atexit.unregister(self.stop)
        if root is None:
            return
        data = root / "data"
        if (data / "postmaster.pid").exists():
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                subprocess.run(
                    self._cmd(str(self.bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"),
                    capture_output=True,
                    timeout=60,
                    check=False,
                    cwd="/",
                )
        shutil.rmtree(root, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except (OSError, AssertionError):
            return ""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
