"""Keycloak in production mode for the process-topology test: ``kc.sh build`` once, then
``kc.sh start --optimized`` on PostgreSQL, configured by the same ``keycloak.conf`` as compose/.

Role: what compose/keycloak/Dockerfile does to the official image, done to a private copy of the
cached distribution. Invariants:

* The configuration is ``conf/keycloak.conf`` (the file compose/ bakes into its image) plus the
  per-deployment values compose passes as ``KC_*`` environment variables: the public URL
  (``KC_HOSTNAME``), the database URL and credentials, the proxy address Keycloak trusts, the
  listening address and ports. Nothing is given as a command-line option but ``start --optimized
  --import-realm``, so the test runs what the container runs.
* ``kc.sh build`` (about 20-40 s on 2 cores) runs only when no build for this distribution, Java
  and keycloak.conf content is cached: the built ``lib/quarkus`` is kept in the cache keyed by
  those, and laid over every later copy (``start --optimized`` trusts it as built).
* State lives in the database, so `restart()` (stop, start on the same ports) keeps realms,
  users and role mappings; the private copy under ``work_dir`` is rebuilt on each start.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from sidecar.errors import UpstreamError
from sidecar.harness.keycloak import KeycloakServer


class ProductionKeycloak(KeycloakServer):
    """``kc.sh start --optimized`` with keycloak.conf and KC_* environment, on an external database."""

    def __init__(
        self,
        dist_dir: Path,
        work_dir: Path,
        *,
        conf_file: Path,
        http_port: int,
        management_port: int,
        public_url: str,
        admin_username: str,
        admin_password: str,
        db_url: str,
        db_username: str,
        db_password: str,
        trusted_proxies: str = "127.0.0.1",
        realm_files: Sequence[Path] = (),
        java_home: Path | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        super().__init__(
            dist_dir,
            work_dir,
            http_port=http_port,
            management_port=management_port,
            public_url=public_url,
            admin_username=admin_username,
            admin_password=admin_password,
            realm_files=realm_files,
            java_home=java_home,
            cache_dir=cache_dir,
        )
        self.conf_file = conf_file
        self.db_url, self.db_username = db_url, db_username
        self._db_password = db_password
        self.trusted_proxies = trusted_proxies
        self.build_seconds: float | None = None  # None when the cached build was used

    def command(self) -> list[str]:
        return [str(self.home / "bin" / "kc.sh"), "start", "--optimized", "--import-realm"]

    def deployment_env(self) -> dict[str, str]:
        """The per-deployment KC_* values (what compose sets in the keycloak service's environment)."""
        return {
            "KC_HOSTNAME": self.public_url,
            "KC_DB_URL": self.db_url,
            "KC_DB_USERNAME": self.db_username,
            "KC_PROXY_TRUSTED_ADDRESSES": self.trusted_proxies,
            # SECURITY: loopback only; the sidecar is the one client (compose: an internal network).
            "KC_HTTP_HOST": "127.0.0.1",
            "KC_HTTP_PORT": str(self.http_port),
            "KC_HTTP_MANAGEMENT_PORT": str(self.management_port),
        }

    def _env(self) -> dict[str, str]:
        env = super()._env()  # drops the caller's KC_* variables
        env.update(self.deployment_env())
        env["KC_DB_PASSWORD"] = self._db_password
        return env

    def _augmentation_dir(self) -> Path:
        parts = ["production", self.conf_file.read_text(), str(self.java_home or ""), str(self.dist_dir.resolve())]
        digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]
        return self.cache_dir / "augmented" / f"{self.dist_dir.name}-prod-{digest}"

    def _prepare_home(self) -> None:
        super()._prepare_home()  # private copy, cached build laid over it, realm files for import
        shutil.copy2(self.conf_file, self.home / "conf" / "keycloak.conf")
        if (self._augmentation_dir() / "quarkus").is_dir():
            return
        began = time.monotonic()
        proc = subprocess.run(
            [str(self.home / "bin" / "kc.sh"), "build"],
            cwd=self.home,
            env=super()._env(),
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if proc.returncode != 0:
            raise UpstreamError(f"kc.sh build exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-3000:]}")
        self.build_seconds = time.monotonic() - began
        self._save_augmentation()

    def start(self, timeout: float = 600, *, hard_limit: float = 900) -> None:
        """Start and wait for readiness; the first start against an empty database creates Keycloak's
        schema (about 150 Liquibase change sets), which takes minutes on a busy 2-core machine."""
        super().start(timeout, hard_limit=hard_limit)

    def restart(self, timeout: float = 600) -> float:
        """Stop and start again on the same ports and database; returns the new start's seconds."""
        self.stop()
        self.start(timeout)
        assert self.startup_seconds is not None
        return self.startup_seconds
