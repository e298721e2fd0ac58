"""A Keycloak cluster with one sidecar per node, as processes on loopback, for tests and benchmarks. [dev only]

    client ── HAProxy (127.0.0.1:P, connects from 127.0.0.2) ─┬─ sidecar a ── Keycloak a ─┐
                                                              └─ sidecar b ── Keycloak b ─┴─ PostgreSQL
    sidecar a ──► versitygw s3://ledger/<origin a prefix>     sidecar b ──► s3://ledger/<origin b prefix>

Role: compose/docker-compose.cluster.yml as processes. Invariants:

* Keycloak runs ``kc.sh build`` once with compose/keycloak/keycloak-cluster.conf (``cache=ispn``,
  ``cache-stack=jdbc-ping``: discovery through the shared database, JGroups over TCP, no multicast);
  every node then runs ``start --optimized`` with its own JGroups bind address (127.0.0.1) and port,
  HTTP and management ports. The cached build is shared by both nodes (one key: conf, Java, dist).
* Each sidecar runs ``serve --config compose/sidecar.toml`` with only per-node values overridden
  through SIDECAR_* variables (upstream, data, listen, store prefix, origin, trusted proxies, the
  origins trust file): its own ledger, origin and key, replicating under its own prefix of the one
  bucket. It believes forwarded headers only from HAProxy's source address.
* Before any sidecar starts, each node's keys are made with ``sidecar keys init`` and the origins
  trust file of all of them with ``sidecar keys origins`` (compose's ``keys-init`` service does the
  same): every drift monitor reconciles against every origin's ledger read from the bucket
  (SIDECAR_DRIFT_PEERS, docs/operations.md §10.5).
* Keycloak's public URL (KC_HOSTNAME) is HAProxy's, so every token and redirect names the load
  balancer; each Keycloak believes X-Forwarded-* only from 127.0.0.1 (its sidecar).
* Every process is ended by its own pid / process group (`stop()`); `kill_sidecar()` is SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sidecar.errors import UpstreamError
from sidecar.harness.haproxy import HAProxy
from sidecar.harness.keycloak import ensure_distribution, free_port
from sidecar.harness.keycloak_prod import ProductionKeycloak
from sidecar.harness.postgres import PostgresCluster
from sidecar.harness.versitygw import S3Bucket, VersityGW

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_CONF = ROOT / "compose" / "keycloak" / "keycloak-cluster.conf"
SIDECAR_TOML = ROOT / "compose" / "sidecar.toml"
BUCKET = "ledger"
PROXY_SOURCE = "127.0.0.2"
# JGroups' FD_SOCK2 listens on the transport port + 50000 (Infinispan's default-jgroups-tcp.xml):
# the transport port must leave room for that below 65536.
_FD_SOCK_OFFSET = 50000
# "ISPN000094: Received new cluster view for channel ISPN: [node-a|1] (2) [node-a, node-b]"
_VIEW = re.compile(r"ISPN000094: Received new cluster view for channel \S+: \[[^\]]*\|\d+\] \((\d+)\)")


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def jgroups_port(taken: set[int]) -> int:
    """A free TCP port in 9000-15000 whose FD_SOCK2 partner (+50000) is free too."""
    for _ in range(500):
        port = random.randint(9000, 15000)
        if all(p not in taken and _free(p) for p in (port, port + 1, port + _FD_SOCK_OFFSET)):
            return port
    raise UpstreamError("no free port pair for JGroups in 9000-15000")


class ClusterKeycloak(ProductionKeycloak):
    """A production Keycloak node with clustered caches bound to loopback."""

    def __init__(self, *args: object, jgroups_port: int, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]  # ProductionKeycloak's own parameters
        self.jgroups_port = jgroups_port

    def deployment_env(self) -> dict[str, str]:
        env = super().deployment_env()
        env["KC_CACHE_EMBEDDED_NETWORK_BIND_ADDRESS"] = "127.0.0.1"
        env["KC_CACHE_EMBEDDED_NETWORK_BIND_PORT"] = str(self.jgroups_port)
        return env

    def cluster_members(self) -> int | None:
        """The member count the last view change in this node's log states (ISPN000094), or None."""
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return None
        count = None
        for m in _VIEW.finditer(text):
            count = int(m.group(1))
        return count


@dataclass
class SidecarNode:
    """One sidecar process in front of one Keycloak node."""

    name: str
    port: int
    origin: str
    prefix: str
    data_dir: Path
    log_file: Path
    env: dict[str, str] = field(repr=False)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def trust(self) -> Path:
        return self.data_dir / "trust.json"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "sidecar", "serve", "--config", str(SIDECAR_TOML)]

    def start(self, timeout: float = 60.0) -> None:
        if self.running:
            return
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.data_dir.parent,
            )
        deadline = time.monotonic() + timeout
        while not _ready(f"{self.url}/.sidecar/health/ready"):
            if self.proc.poll() is not None:
                raise UpstreamError(f"sidecar {self.name} exited {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise UpstreamError(f"sidecar {self.name} not ready within {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL the sidecar's process group (a crash: no shutdown, no final checkpoint)."""
        self._signal(signal.SIGKILL, 10)

    def stop(self) -> None:
        self._signal(signal.SIGTERM, 30)

    def _signal(self, sig: signal.Signals, grace: float) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _ready(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


@dataclass
class Cluster:
    """The running cluster: its parts and the addresses tests need."""

    pg: PostgresCluster
    worm: VersityGW
    bucket: S3Bucket
    nodes: list[ClusterKeycloak]
    sidecars: list[SidecarNode]
    lb: HAProxy
    admin_username: str
    origins: Path  # the origins trust file every sidecar's drift monitor was given
    admin_password: str = field(repr=False)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """The public URL: HAProxy's."""
        return self.lb.url

    def sidecar(self, name: str) -> SidecarNode:
        return next(s for s in self.sidecars if s.name == name)

    def store_url(self, prefix: str = "") -> str:
        return self.bucket.store_url(prefix)


def sidecar_env(
    *,
    name: str,
    upstream: str,
    data: Path,
    port: int,
    bucket: S3Bucket,
    origin: str,
    prefix: str,
    reader: tuple[str, str, str] | None,
    peers: Path | None = None,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The per-node SIDECAR_* values over compose/sidecar.toml (and the store credentials)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIDECAR_", "AWS_"))}
    env.update(bucket.env())
    env.update(
        {
            "SIDECAR_UPSTREAM": upstream,
            "SIDECAR_DATA": str(data),
            "SIDECAR_LISTEN": f"127.0.0.1:{port}",
            "SIDECAR_STORE": bucket.store_url(prefix),
            "SIDECAR_ORIGIN": origin,
            "SIDECAR_TRUSTED_PROXIES": PROXY_SOURCE,
            "SIDECAR_TLS_CERT": "",
            "SIDECAR_TLS_KEY": "",
            # Drift reconciles Keycloak's shared events against every origin's ledger (docs/operations.md §10.5).
            "SIDECAR_DRIFT_PEERS": str(peers) if peers is not None else "",
        }
    )
    if reader is not None:
        env["SIDECAR_READER_REALM"], env["SIDECAR_READER_CLIENT_ID"], env["SIDECAR_READER_SECRET"] = reader
    env.update(extra or {})
    return env


@contextlib.contextmanager
def running_cluster(
    work_dir: Path,
    *,
    names: Sequence[str] = ("a", "b"),
    realm_files: Sequence[Path] = (),
    reader: tuple[str, str, str] | None = None,
    sidecar_extra: dict[str, str] | None = None,
    admin_username: str = "admin",
    admin_password: str | None = None,
) -> Iterator[Cluster]:
    """Start PostgreSQL, versitygw, the Keycloak nodes, one sidecar per node and HAProxy; stop all after."""
    timings: dict[str, float] = {}
    began = time.monotonic()
    dist = ensure_distribution()
    admin_password = admin_password or secrets.token_urlsafe(18)
    db_password = secrets.token_urlsafe(18)
    taken: set[int] = set()

    def port() -> int:
        p = free_port()
        while p in taken:
            p = free_port()
        taken.add(p)
        return p

    lb_port = port()
    public = f"http://127.0.0.1:{lb_port}"
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(PostgresCluster())
        pg.create_database("keycloak", "keycloak", db_password)
        worm = stack.enter_context(VersityGW(work_dir / "worm"))
        bucket = worm.create_bucket(BUCKET, retention_days=1)
        timings["postgres+versitygw"] = round(time.monotonic() - began, 1)
        nodes: list[ClusterKeycloak] = []
        for name in names:
            jg = jgroups_port(taken)
            taken.update((jg, jg + 1, jg + _FD_SOCK_OFFSET))
            nodes.append(
                ClusterKeycloak(
                    dist,
                    work_dir / f"kc-{name}",
                    conf_file=CLUSTER_CONF,
                    http_port=port(),
                    management_port=port(),
                    public_url=public,
                    admin_username=admin_username,
                    admin_password=admin_password,
                    db_url=pg.jdbc_url("keycloak"),
                    db_username="keycloak",
                    db_password=db_password,
                    realm_files=realm_files,
                    jgroups_port=jg,
                )
            )
        for node in nodes:
            stack.callback(node.stop)
        # The first node creates the schema and imports the realm; the others join it once it is up
        # (started together they would queue on Liquibase's lock anyway, and compete for 2 cores).
        t = time.monotonic()
        nodes[0].start()
        timings[f"keycloak {names[0]}"] = round(time.monotonic() - t, 1)
        t = time.monotonic()
        errors: list[BaseException] = []

        def start(node: ClusterKeycloak) -> None:
            try:
                node.start()
            except BaseException as exc:  # re-raised in the caller's thread below
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(n,)) for n in nodes[1:]]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        if errors:
            raise errors[0]
        timings["keycloak others"] = round(time.monotonic() - t, 1)
        _wait_members(nodes, len(nodes), 120)
        sidecars: list[SidecarNode] = []
        heartbeat = (sidecar_extra or {}).get("SIDECAR_HEARTBEAT", "30")
        origins = _make_keys(work_dir, names, heartbeat)
        for name, node in zip(names, nodes, strict=True):
            sport = port()
            data = work_dir / f"sidecar-{name}" / "ledger"
            origin, prefix = f"auth.cluster.test/{name}", f"node-{name}"
            env = sidecar_env(
                name=name,
                upstream=node.base_url,
                data=data,
                port=sport,
                bucket=bucket,
                origin=origin,
                prefix=prefix,
                reader=reader,
                peers=origins,
                extra=sidecar_extra,
            )
            sidecars.append(SidecarNode(name, sport, origin, prefix, data, data.parent / "sidecar.log", env))
        for sc in sidecars:
            stack.callback(sc.stop)
        t = time.monotonic()
        for sc in sidecars:
            sc.start()
        timings["sidecars"] = round(time.monotonic() - t, 1)
        lb = stack.enter_context(
            HAProxy(work_dir / "haproxy", port=lb_port, servers={sc.name: f"127.0.0.1:{sc.port}" for sc in sidecars})
        )
        for sc in sidecars:
            lb.wait_state(sc.name, "UP", 30)
        timings["total"] = round(time.monotonic() - began, 1)
        yield Cluster(pg, worm, bucket, nodes, sidecars, lb, admin_username, origins, admin_password, timings)


def _make_keys(work_dir: Path, names: Sequence[str], heartbeat: str) -> Path:
    """Each node's keys (`sidecar keys init`) and the origins trust file of all (`sidecar keys origins`)."""
    trust_files = []
    for name in names:
        data = work_dir / f"sidecar-{name}" / "ledger"
        data.parent.mkdir(parents=True, exist_ok=True)
        if not (data / "trust.json").exists():
            _sidecar_cli("keys", "init", "--data", str(data), "--origin", f"auth.cluster.test/{name}")
        trust_files.append(str(data / "trust.json"))
    origins = work_dir / "origins.json"
    origins.write_text(_sidecar_cli("keys", "origins", *trust_files, "--heartbeat", heartbeat))
    return origins


def _sidecar_cli(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "sidecar", *args], capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise UpstreamError(f"sidecar {' '.join(args[:2])} failed: {done.stderr.strip()}")
    return done.stdout


def _wait_members(nodes: Sequence[ClusterKeycloak], count: int, timeout: float) -> None:
    """Until every node's log states a cluster view of `count` members (JGroups found its peers)."""
    deadline = time.monotonic() + timeout
    while any(n.cluster_members() != count for n in nodes):
        if time.monotonic() > deadline:
            views = {n.http_port: n.cluster_members() for n in nodes}
            raise UpstreamError(f"the Keycloak nodes did not form a {count}-member cluster: views {views}")
        time.sleep(0.5)
