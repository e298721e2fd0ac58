"""A real Keycloak server for tests and the demo: fetch the quarkus dist, start it, stop it.

Role: the one place that knows how to obtain ``org.keycloak:keycloak-quarkus-dist`` (through ``mvn``, never
a registry host name), unpack it, and run ``bin/kc.sh start-dev`` on loopback ports behind the sidecar.

Invariants:

* The unpacked distribution in the cache is never run and never written after it appears. It appears
  atomically (unzipped into a temporary directory, then renamed), so a crashed unzip cannot leave a
  half-tree that looks finished. Each start runs a fresh private copy under ``work_dir/keycloak``
  (jars are hard-linked, everything else is copied), so parallel servers share no H2 file, no
  ``data/`` directory and no Quarkus build output.
* The database is ``dev-mem``: each start begins from an empty server plus the imported realms; nothing
  survives ``stop()``.
* ``start-dev`` re-augments Quarkus (about 20 s of the ~35 s cold start on 2 cores) whenever the build
  options differ from those baked into ``lib/quarkus``. After the first good start the augmented
  ``lib/quarkus`` is kept in the cache, keyed by options, JAVA_HOME and dist, and laid over every later
  copy, so later starts take about 12 s. Keycloak itself checks the persisted build options, so a stale
  or mismatched entry costs only time, never correctness.
* The server runs in its own session/process group; ``stop()`` signals the whole group (SIGTERM, then
  SIGKILL after 15 s) and is idempotent. An ``atexit`` hook stops it if the owner forgets.
* Keycloak's frontend URL is fixed to ``public_url`` (``--hostname``), the sidecar's address: the ``iss`` of
  every token, login form actions and redirects name the sidecar, also for requests that reach Keycloak
  directly. ``--proxy-headers=xforwarded`` makes Keycloak trust the sidecar's ``X-Forwarded-*`` headers,
  which is why the server listens on 127.0.0.1 only.

Found by experiment with 26.7.3 (Java 17):

* Direct requests to Keycloak's own port work even though ``--hostname`` names another port: any
  ``Host`` header (``127.0.0.1:<http_port>``, ``localhost``, ``evil.example``) gets 200 on discovery, the
  token endpoint and the admin API, and tokens minted there carry ``iss = <public_url>/realms/<realm>``.
  ``hostname-strict-host-check-enabled`` (HTTP 421 on a mismatching ``Host``) does not exist in 26.7.3:
  ``kc.sh`` rejects it as an unknown option and no jar mentions it, so it is not passed.
* Every option used below is accepted, including ``--db=dev-mem`` and
  ``--spi-events-listener--jboss-logging--success-level=info`` (success events appear in the log as
  ``INFO [org.keycloak.events] type="LOGIN", ...``).
* With ``--hostname`` set, ``hostname-strict`` is ignored (logged at start).
* A password grant with a wrong password answers **400** ``invalid_grant`` (not 401) and records
  ``LOGIN_ERROR`` / ``invalid_user_credentials``.
* Redirect URIs registered as ``http://127.0.0.1/*`` match a callback on any port (RFC 8252 loopback rule);
  a ``redirect_uri`` carrying a ``code`` query parameter is rejected with 400.
* Temurin 25 (``java_home=``) runs it too; the cold start is a little slower than on Java 17.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from sidecar.errors import ConfigError, UpstreamError

DEFAULT_VERSION = "26.7.3"
CACHE_ENV = "SIDECAR_KC_CACHE"
ARTIFACT = "org.keycloak:keycloak-quarkus-dist"

# Build-time options (baked into lib/quarkus by augmentation); everything else is a runtime option.
BUILD_OPTIONS: tuple[str, ...] = ("--db=dev-mem", "--health-enabled=true")
_STOP_GRACE_SECONDS = 15.0
_LOG_TAIL_LINES = 40
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def default_cache_dir() -> Path:
    """The cache directory: ``$SIDECAR_KC_CACHE`` or ``~/.cache/sidecar-kc``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sidecar-kc"


def maven_command(version: str, cache_dir: Path) -> list[str]:
    """The ``mvn`` command that puts the dist zip for *version* into *cache_dir*."""
    return [
        "mvn", "-B", "-q", "dependency:copy",
        f"-Dartifact={ARTIFACT}:{version}:zip",
        f"-DoutputDirectory={cache_dir}",
    ]  # fmt: skip


def ensure_distribution(version: str = DEFAULT_VERSION, cache_dir: Path | None = None) -> Path:
    """Return the unpacked dist directory (containing ``bin/kc.sh``), fetching and unzipping once."""
    cache = (cache_dir or default_cache_dir()).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"keycloak-{version}"
    if (target / "bin" / "kc.sh").is_file():
        return target
    archive = cache / f"keycloak-quarkus-dist-{version}.zip"
    if not archive.is_file():
        cmd = maven_command(version, cache)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=1800)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ConfigError(f"cannot fetch Keycloak {version}: `{' '.join(cmd)}` failed: {exc}") from exc
        if proc.returncode != 0 or not archive.is_file():
            raise ConfigError(
                f"cannot fetch Keycloak {version}: `{' '.join(cmd)}` exited {proc.returncode}\n"
                + _ANSI.sub("", f"{proc.stderr}\n{proc.stdout}").strip()  # mvn -q reports on stdout
            )
    with tempfile.TemporaryDirectory(prefix=".unpack-", dir=cache) as tmp:
        _unzip(archive, Path(tmp))
        unpacked = Path(tmp) / f"keycloak-{version}"
        if not (unpacked / "bin" / "kc.sh").is_file():
            raise ConfigError(f"{archive}: no keycloak-{version}/bin/kc.sh inside")
        with contextlib.suppress(OSError):  # another process won the race: its tree is just as good
            unpacked.rename(target)
    if not (target / "bin" / "kc.sh").is_file():
        raise ConfigError(f"could not unpack {archive} into {target}")
    return target


def _unzip(archive: Path, dest: Path) -> None:
    """Extract *archive* into *dest*, keeping the Unix permission bits (``zipfile`` drops them)."""
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            path = Path(zf.extract(info, dest))
            mode = (info.external_attr >> 16) & 0o7777
            if mode and not info.is_dir():
                path.chmod(mode)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on *host* a moment ago (the usual bind-to-0 trick; racy by nature)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _port_in_use(host: str, port: int) -> bool:
    """Whether a server listens on the port. Connections of a server that just stopped may linger
    there in TIME_WAIT; Keycloak binds with SO_REUSEADDR despite them, and so does this check."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
        return False


def _clone_dist(src: Path, dst: Path) -> None:
    """Copy the dist to *dst*; the jars under lib/lib are hard-linked (nothing ever writes them)."""
    jars = src / "lib" / "lib"

    def copy(s: str, d: str) -> object:
        if Path(s).is_relative_to(jars):
            with contextlib.suppress(OSError):  # other filesystem, or links not allowed: copy instead
                os.link(s, d)
                return d
        return shutil.copy2(s, d)

    shutil.copytree(src, dst, symlinks=True, copy_function=copy)


class KeycloakServer:
    """One ``kc.sh start-dev`` process on loopback, fronted by the sidecar at *public_url*."""

    def __init__(
        self,
        dist_dir: Path,
        work_dir: Path,
        *,
        http_port: int,
        management_port: int,
        public_url: str,
        admin_username: str,
        admin_password: str,
        realm_files: Sequence[Path] = (),
        log_file: Path | None = None,
        java_home: Path | None = None,
        extra_args: Sequence[str] = (),
        cache_dir: Path | None = None,
    ) -> None:
        self.dist_dir = dist_dir
        self.work_dir = work_dir
        self.http_port = http_port
        self.management_port = management_port
        self.public_url = public_url.rstrip("/")
        self.admin_username = admin_username
        self.admin_password = admin_password
        self.realm_files = tuple(realm_files)
        self.log_file = log_file or work_dir / "keycloak.log"
        self.java_home = java_home
        self.extra_args = tuple(extra_args)
        self.cache_dir = cache_dir or default_cache_dir()
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- addresses --------------------------------------------------------------------------------

    @property
    def home(self) -> Path:
        """This instance's private copy of the distribution."""
        return self.work_dir / "keycloak"

    @property
    def base_url(self) -> str:
        """Keycloak's own HTTP address, bypassing the sidecar."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def management_url(self) -> str:
        """The management interface (``/health/*``, ``/metrics``)."""
        return f"http://127.0.0.1:{self.management_port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        """The full ``kc.sh`` command line that ``start()`` runs."""
        return [
            str(self.home / "bin" / "kc.sh"),
            "start-dev",
            *BUILD_OPTIONS,
            # SECURITY: xforwarded headers are trusted from any peer, so only loopback may reach the port.
            "--http-host=127.0.0.1",
            f"--http-port={self.http_port}",
            f"--http-management-port={self.management_port}",
            f"--hostname={self.public_url}",
            "--proxy-headers=xforwarded",
            "--import-realm",
            "--spi-events-listener--jboss-logging--success-level=info",
            *self.extra_args,
        ]

    def _env(self) -> dict[str, str]:
        # KC_* variables from the caller (KC_DB, KC_HOSTNAME, ...) would silently override the options
        # below; the server is configured by command() alone.
        env = {k: v for k, v in os.environ.items() if not k.startswith("KC_")}
        if self.java_home is not None:
            env["JAVA_HOME"] = str(self.java_home)
        return env

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self, timeout: float = 180, *, hard_limit: float = 900) -> None:
        """Launch Keycloak and wait until ``/health/ready`` answers 200; raise ``UpstreamError`` if not.

        `timeout` bounds a start that makes no progress: the wait ends when the server has written
        nothing to its log for that long (a hang), or after `hard_limit` seconds in all. A start that
        keeps logging (schema creation, realm import) on a loaded machine is not cut off mid-way.
        """
        if self.running:
            return
        for port in (self.http_port, self.management_port):
            if _port_in_use("127.0.0.1", port):
                # A server already there would answer our health probe and fool the wait below.
                raise UpstreamError(f"cannot start Keycloak: 127.0.0.1:{port} is already in use")
        self._prepare_home()
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        env = self._env()
        env["KC_BOOTSTRAP_ADMIN_USERNAME"] = self.admin_username
        env["KC_BOOTSTRAP_ADMIN_PASSWORD"] = self.admin_password
        began = time.monotonic()
        with self.log_file.open("ab") as log:
            self._proc = subprocess.Popen(
                self.command(),
                cwd=self.home,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        atexit.register(self.stop)
        logged, progress_at = -1, began
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self.stop()
                raise UpstreamError(f"Keycloak exited with status {code} during start\n{self.log_tail()}")
            if self._ready():
                break
            now = time.monotonic()
            size = self.log_file.stat().st_size if self.log_file.exists() else 0
            if size != logged:
                logged, progress_at = size, now
            if now - progress_at > timeout or now - began > hard_limit:
                self.stop()
                why = (
                    f"nothing logged for {timeout:.0f} s"
                    if now - progress_at > timeout
                    else f"still starting after {hard_limit:.0f} s"
                )
                raise UpstreamError(f"Keycloak not ready ({why})\n{self.log_tail()}")
            time.sleep(0.5)
        self.startup_seconds = time.monotonic() - began
        self._save_augmentation()

    def stop(self) -> None:
        """Stop the whole process group: SIGTERM, then SIGKILL after 15 s. Safe to call twice."""
        proc, self._proc = self._proc, None
        atexit.unregister(self.stop)
        if proc is None:
            return
        pgid = proc.pid  # start_new_session=True: the child leads its own group
        for sig, grace in ((signal.SIGTERM, _STOP_GRACE_SECONDS), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                proc.poll()  # reap our direct child so it does not linger as a group member
                if not _group_alive(pgid):
                    proc.wait()
                    return
                time.sleep(0.1)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last *lines* lines of the server log (empty if there is none yet)."""
        try:
            text = self.log_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.management_url}/health/ready", timeout=2) as resp:
                status: int = resp.status
                return status == 200
        except (urllib.error.URLError, OSError):
            return False

    # -- the private copy and the augmentation cache ----------------------------------------------

    def _augmentation_dir(self) -> Path:
        # extra_args may hold build options too (--features, --metrics-enabled); over-keying costs disk only.
        parts = [*BUILD_OPTIONS, *self.extra_args, str(self.java_home or ""), str(self.dist_dir.resolve())]
        key = "\0".join(parts)
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return self.cache_dir / "augmented" / f"{self.dist_dir.name}-{digest}"

    def _prepare_home(self) -> None:
        if self.home.exists():
            shutil.rmtree(self.home)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        _clone_dist(self.dist_dir, self.home)
        built = self._augmentation_dir() / "quarkus"
        if built.is_dir():
            shutil.rmtree(self.home / "lib" / "quarkus")
            shutil.copytree(built, self.home / "lib" / "quarkus")
        imports = self.home / "data" / "import"
        imports.mkdir(parents=True, exist_ok=True)
        for realm in self.realm_files:
            shutil.copy2(realm, imports / realm.name)

    def _save_augmentation(self) -> None:
        target = self._augmentation_dir()
        if (target / "quarkus").is_dir():
            return
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".save-", dir=target) as tmp:
            staged = Path(tmp) / "quarkus"
            shutil.copytree(self.home / "lib" / "quarkus", staged)
            with contextlib.suppress(OSError):  # a parallel start saved it first
                staged.rename(target / "quarkus")

    # -- admin CLI ------------------------------------------------------------------------------

    def kcadm(
        self, *args: str, config_file: Path, server: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run ``bin/kcadm.sh ARGS --config CONFIG_FILE`` and return it; raise ``UpstreamError`` on failure.

        The config file keeps kcadm away from the user's ``~/.keycloak``. *server* (default: Keycloak's
        own port) is passed as ``--server`` to ``config credentials``; later commands read it from the
        config file.
        """
        cmd = [str(self.dist_dir / "bin" / "kcadm.sh"), *args, "--config", str(config_file)]
        if args[:2] == ("config", "credentials") and "--server" not in args:
            cmd += ["--server", server or self.base_url]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=self._env(), timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise UpstreamError(f"kcadm {' '.join(args)}: {exc}") from exc
        if proc.returncode != 0:
            detail = proc.stderr.strip() or proc.stdout.strip()
            raise UpstreamError(f"kcadm {' '.join(args)} exited {proc.returncode}: {detail}")
        return proc


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv: Sequence[str]) -> int:
    """``python -m sidecar.harness.keycloak fetch [VERSION]``: fetch and unpack, print the path."""
    if not argv or argv[0] != "fetch" or len(argv) > 2:
        print("usage: python -m sidecar.harness.keycloak fetch [VERSION]", file=sys.stderr)
        return 2
    version = argv[1] if len(argv) == 2 else DEFAULT_VERSION
    try:
        print(ensure_distribution(version))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
