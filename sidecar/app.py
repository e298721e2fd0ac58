"""`sidecar serve`: the aiohttp application that wires proxy, capture and ledger.

Lifecycle: each resource is one `cleanup_ctx` entry, registered in data-path order (`RESOURCES`):
the ledger opens (and recovers) first, then the index, the store (whose bucket check may refuse
the start), the replicator, the side calls to Keycloak, the state reader, the drift monitor, the
readiness probe and last the proxy. aiohttp enters them in that order and leaves the entered ones in reverse, also when
a later one fails to start, so a bucket without Object Lock still closes the index and the ledger
it opened. Adding a resource is one function and one line in `RESOURCES`.

The sidecar's own endpoints live under `/.sidecar/`, a prefix Keycloak never uses; everything else
is Keycloak's:

* `/.sidecar/health/live`: 200 while the process serves requests (restart it if not);
* `/.sidecar/health/ready` (and `/.sidecar/health`): 200 only while the ledger takes records, the
  replication is within bounds and Keycloak answers; 503 with the reasons otherwise;
* `/.sidecar/metrics`: Prometheus text format (sidecar.metrics);
* `/.sidecar/drift`: the drift monitor's state (baseline, last poll and sweep, active findings);
* `/.sidecar/audit/objects`: the auditor endpoint (sidecar.audit.endpoint).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import gc
import ipaddress
import logging
import secrets
import signal
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from sidecar import control, metrics
from sidecar.audit.endpoint import add_audit_routes
from sidecar.capture.hooks import LedgerHooks
from sidecar.capture.reader import KeycloakReader
from sidecar.capture.sessions import SessionDirectory
from sidecar.capture.tokens import TokenVerifier
from sidecar.core.events import Appender, EventType, IdentityEvent, Outcome, Party
from sidecar.drift.monitor import DriftConfig, DriftMonitor, previous_run_end
from sidecar.drift.peers import PeerFollower
from sidecar.errors import ConfigError, OverloadError, StorageError
from sidecar.ledger.index import LedgerIndex
from sidecar.ledger.keystore import KeyStore
from sidecar.ledger.subjects import Protector, SubjectKeys, erase_with, open_for_ledger, reveal, seal_snapshot
from sidecar.ledger.writer import Ledger, LedgerConfig
from sidecar.policy.schema import Policy, load_policy
from sidecar.proxy.forward import HANDLER_ARGS, ProxyLimits, ReverseProxy
from sidecar.replicate.drivers import open_store
from sidecar.replicate.replicator import Replicator
from sidecar.replicate.store import ObjectStore

log = logging.getLogger("sidecar")
access_log = logging.getLogger("sidecar.access")


@dataclass(frozen=True)
class Settings:
    upstream: str
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8443
    policy_file: Path | None = None
    ledger: LedgerConfig = field(default_factory=LedgerConfig)
    store_url: str | None = None  # remote copy: s3://bucket/prefix?endpoint=... or a directory
    store_retention_days: int = 365
    replication_interval_s: float = 0.2
    store_create_bucket: bool = False  # tests and demos only: create an Object Lock bucket if missing
    high_water_bytes: int = 256 * 1024 * 1024
    auditor_realm: str = "master"
    auditor_role: str = "ledger-auditor"
    reader_realm: str | None = None  # read-only service account for before/after state and names
    reader_client_id: str | None = None
    reader_secret: str | None = field(default=None, repr=False)
    # Peers (addresses or CIDR networks) whose X-Forwarded-For/-Proto are believed: a TLS load
    # balancer in front of the sidecar. From anyone else those headers are ignored and overwritten.
    trusted_proxies: tuple[str, ...] = ()
    upstream_probe_s: float = 5.0  # how often readiness checks that Keycloak answers; 0 turns it off
    access_log: bool = True  # one line per request on the "sidecar.access" logger
    drift: DriftConfig | None = field(default_factory=DriftConfig)  # None: no drift monitor (needs the reader)
    # A cluster's origins trust file: drift reconciles against every origin's ledger (docs/operations.md §10.5),
    # read from the bucket that holds every origin's prefix (default: the parent of store_url).
    drift_peers: Path | None = None
    drift_peers_store: str | None = None
    capture_budget_bytes: int = 64 * 1024 * 1024  # captured bodies held at once, all requests together
    identity_connections: int = 64  # upstream pool for captured requests (logins, tokens, admin writes)
    passthrough_connections: int = 256  # upstream pool for everything else
    auditor_recheck_s: float = 5.0  # how long an auditor's live role check is cached
    auditor_denied_window_s: float = 60.0  # per requester: one refusal record at once, one aggregate per window
    witness_file: Path | None = None  # witness list (docs/format.md §14.1); None: no witnessing
    witness_quorum: int = 1
    witness_stale_s: float = 300.0  # the newest checkpoint may wait this long for its quorum before not-ready
    # Subject key store (sidecar/ledger/subjects.py) and its backup copies: identifying values are
    # always encrypted under per-person keys. None: the default place, <data_dir>/subjects/.
    subjects_dir: Path | None = None
    subjects_backups: tuple[Path, ...] = ()


LEDGER = web.AppKey("ledger", Ledger)
POLICY = web.AppKey("policy", Policy)
SETTINGS = web.AppKey("settings", Settings)
REPLICATOR = web.AppKey("replicator", Replicator)


@dataclass
class Parts:
    """What make_app wires together; each resource fills in its part while it is open."""

    settings: Settings
    policy: Policy
    keys: KeyStore
    upstream: _Upstream
    tokens: TokenVerifier
    proxy: ReverseProxy | None = None
    reader: KeycloakReader | None = None
    ledger: Ledger | None = None
    index: LedgerIndex | None = None
    store: ObjectStore | None = None
    replicator: Replicator | None = None
    probe: UpstreamProbe | None = None
    drift: DriftMonitor | None = None
    subjects: SubjectKeys | None = None
    append: Appender | None = None
    # Readiness: each check returns None when fine, else a short reason. Resources add their own.
    checks: dict[str, Callable[[], str | None]] = field(default_factory=dict)
    _ledger_closed: bool = False

    async def close_ledger(self) -> None:
        """Close the writer once (its final checkpoint); later calls do nothing."""
        if self.ledger is not None and not self._ledger_closed:
            self._ledger_closed = True
            await self.ledger.close()


PARTS = web.AppKey("parts", Parts)
Resource = Callable[[web.Application], AsyncIterator[None]]


# ------------------------------------------------------------------------------------ side calls
class _Upstream:
    """Side calls the capture layer makes to Keycloak: JWKS and whoami. Never on behalf of nobody."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=5),
            cookie_jar=aiohttp.DummyCookieJar(),
            trace_configs=[metrics.upstream_trace("side")],
        )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def _get_json(self, path: str, headers: dict[str, str] | None = None) -> dict[str, Any] | None:
        assert self.session is not None
        try:
            async with self.session.get(self.base + path, headers=headers) as resp:
                if resp.status != 200:
                    return None
                data = await resp.json(content_type=None)
                return data if isinstance(data, dict) else None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("side call to Keycloak failed (%s): %s", path.split("?")[0], type(exc).__name__)
            return None

    async def jwks(self, realm: str) -> dict[str, Any] | None:
        return await self._get_json(f"/realms/{realm}/protocol/openid-connect/certs")

    async def whoami(
        self, realm: str, token: str, username: str | None, sid: str | None = None, client: str | None = None
    ) -> dict[str, Any] | None:
        """Who holds this lightweight admin token: {"userId", "displayName"} or None.

        Uses the caller's own token for reads Keycloak's own clients make: the console's whoami
        (console tokens only), else, when the username is known from the login the sidecar saw
        (e.g. kcadm's password grant), the exact-username lookup an admin token may do, else
        Keycloak's list of the sessions of the token's client, for the session the token names
        (a token issued through another node of a cluster: docs/operations.md §10.2).
        """
        auth = {"Authorization": f"Bearer {token}"}
        who = await self._get_json(f"/admin/{realm}/console/whoami?currentRealm={realm}", auth)
        if who is not None:
            return who
        if username:
            users = await self._get_list(
                f"/admin/realms/{realm}/users",
                auth,
                {"username": username, "exact": "true", "briefRepresentation": "true"},
            )
            if users is not None and len(users) == 1 and users[0].get("username") == username:
                return {"userId": users[0]["id"], "displayName": username}
            return None
        if sid and client:
            return await self._session_holder(realm, auth, sid, client)
        return None

    async def introspect(
        self, realm: str, token: str, headers: dict[str, str], client: dict[str, str]
    ) -> dict[str, Any] | None:
        """Keycloak's token introspection, authenticated as the request's own client (its Basic header or
        form credentials); the answer or None. SECURITY: neither the token nor the credentials are logged."""
        assert self.session is not None
        try:
            async with self.session.post(
                f"{self.base}/realms/{realm}/protocol/openid-connect/token/introspect",
                data={"token": token, "token_type_hint": "refresh_token", **client},
                headers=headers,
            ) as resp:
                data = await resp.json(content_type=None) if resp.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("side call to Keycloak failed (introspect): %s", type(exc).__name__)
            return None
        return data if isinstance(data, dict) else None

    async def _get_list(self, path: str, headers: dict[str, str], params: dict[str, str]) -> list[Any] | None:
        assert self.session is not None
        try:
            async with self.session.get(self.base + path, headers=headers, params=params) as resp:
                data = await resp.json(content_type=None) if resp.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        return data if isinstance(data, list) else None

    async def _session_holder(
        self, realm: str, auth: dict[str, str], sid: str, client: str, *, page: int = 100, pages: int = 10
    ) -> dict[str, Any] | None:
        """The user of session sid, from Keycloak's sessions of the client (bounded: `pages` pages of `page`)."""
        clients = await self._get_list(f"/admin/realms/{realm}/clients", auth, {"clientId": client})
        if not clients or len(clients) != 1 or not isinstance(clients[0].get("id"), str):
            return None
        path = f"/admin/realms/{realm}/clients/{clients[0]['id']}/user-sessions"
        for n in range(pages):
            sessions = await self._get_list(path, auth, {"first": str(n * page), "max": str(page)})
            if sessions is None:
                return None
            for entry in sessions:
                if isinstance(entry, dict) and entry.get("id") == sid and isinstance(entry.get("userId"), str):
                    name = entry.get("username")
                    return {"userId": entry["userId"], "displayName": name if isinstance(name, str) else None}
            if len(sessions) < page:
                return None
        return None


class UpstreamProbe:
    """Asks Keycloak for the master realm's public document now and then: is it answering?

    Any HTTP answer below 500 counts as "answering" (a 5xx is a proxy or a Keycloak that cannot
    serve). The first probe runs during start, so readiness is known before the first request.
    """

    def __init__(self, base: str, interval_s: float) -> None:
        self.url = base.rstrip("/") + "/realms/master"
        self.interval_s = interval_s
        self.error: str | None = "not probed yet"
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=max(1.0, min(5.0, self.interval_s))),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        await self.probe()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="upstream-probe")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()

    async def probe(self) -> None:
        assert self._session is not None
        try:
            async with self._session.get(self.url, allow_redirects=False) as resp:
                error = None if resp.status < 500 else f"Keycloak answered HTTP {resp.status}"
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            error = f"Keycloak unreachable ({type(exc).__name__})"
        if error != self.error:
            if error:
                log.warning("readiness: %s", error)
            elif self.error != "not probed yet":
                log.info("readiness: Keycloak answers again")
        self.error = error
        metrics.UPSTREAM_UP.set(0 if error else 1)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.probe()


# ------------------------------------------------------------------------------------ resources
# Each is entered in the order of RESOURCES and left in reverse (aiohttp cleanup_ctx).


async def _ledger(app: web.Application) -> AsyncIterator[None]:
    parts = app[PARTS]
    s = parts.settings
    parts.ledger = await Ledger.open(s.data_dir, config=s.ledger, policy_digest=parts.policy.digest)
    app[LEDGER] = parts.ledger
    assert parts.subjects is not None  # make_app opened it: there is no plaintext mode
    parts.ledger.protect = Protector(parts.subjects, parts.policy.pii, parts.ledger.origin, parts.ledger.clock.now_ns)
    store = parts.subjects
    parts.checks["subjects"] = store.recent_write_error
    parts.checks["ledger"] = lambda: (
        f"ledger broken: {parts.ledger.broken}" if parts.ledger and parts.ledger.broken else None
    )
    try:
        yield
    finally:
        await parts.close_ledger()


async def _index(app: web.Application) -> AsyncIterator[None]:
    parts = app[PARTS]
    assert parts.ledger is not None
    index = LedgerIndex(parts.settings.data_dir / "index.sqlite")
    await index.open()
    try:
        parts.ledger.subscribers.append(index.on_commit)
        await index.catch_up(parts.settings.data_dir)  # records written while no index was listening
        index.start()
        parts.index = index
        yield
    finally:
        await index.close()


async def _store(app: web.Application) -> AsyncIterator[None]:
    parts = app[PARTS]
    s = parts.settings
    if not s.store_url:
        yield
        return
    store = open_store(s.store_url, retention_days=s.store_retention_days)
    try:
        # A bucket without versioning, Object Lock and a default retention would make the "cannot
        # rewrite" promise false: the start stops here instead.
        await store.ensure_ready(create=s.store_create_bucket)
        parts.store = store
        yield
    finally:
        await store.close()


async def _replicator(app: web.Application) -> AsyncIterator[None]:
    parts = app[PARTS]
    s = parts.settings
    if parts.store is None:
        yield
        return
    assert parts.ledger is not None
    rep = Replicator(
        s.data_dir,
        parts.store,
        interval_s=s.replication_interval_s,
        high_water_bytes=s.high_water_bytes,
        durable_end=parts.ledger.durable_end,
    )
    parts.ledger.subscribers.append(rep.on_commit)
    rep.start()
    parts.replicator = rep
    app[REPLICATOR] = rep

    def check() -> str | None:
        if rep.integrity_error:
            return f"replication integrity error: {rep.integrity_error}"
        if rep.over_high_water():
            return f"replication backlog above the high-water mark ({rep.last_error or 'store behind'})"
        return None

    parts.checks["replication"] = check
    try:
        yield
    finally:
        await rep.stop()


async def _final_checkpoint(app: web.Application) -> AsyncIterator[None]:
    """On the way down, close the writer before the replicator and index stop, so the final
    checkpoint reaches both (the `_ledger` resource's own close then does nothing)."""
    yield
    await app[PARTS].close_ledger()


async def _side_calls(app: web.Application) -> AsyncIterator[None]:
    parts = app[PARTS]
    await parts.upstream.start()
    try:
        yield
    finally:
        await parts.upstream.close()


async def _state_reader(app: web.Application) -> AsyncIterator[None]:
    reader = app[PARTS].reader
    if reader is None:
        yield
        return
    await reader.start()
    try:
        yield
    finally:
        await reader.close()


async def _drift_monitor(app: web.Application) -> AsyncIterator[None]:
    """The drift monitor (sidecar.drift.monitor): its own task, off the request path."""
    parts = app[PARTS]
    s = parts.settings
    if parts.reader is None or s.drift is None or parts.ledger is None or parts.append is None:
        yield
        return
    # Keycloak events since the ledger's previous run count too: changes made while the sidecar was down.
    since = await asyncio.get_running_loop().run_in_executor(None, previous_run_end, s.data_dir)
    monitor = DriftMonitor(
        parts.reader,
        parts.append,
        s.data_dir,
        s.drift,
        client_id=parts.reader.client_id,
        since_ns=since,
        store=parts.store,
    )
    store, origin, clock = parts.subjects, parts.ledger.origin, parts.ledger.clock
    assert store is not None
    monitor.reveal = functools.partial(reveal, origin=origin, store=store)
    monitor.seal_state = lambda state: seal_snapshot(store, origin, state, clock.now_ns())
    root = None
    if s.drift_peers is not None:
        root, monitor.peers = _peer_follower(s, parts.ledger.origin)
    parts.ledger.subscribers.append(monitor.on_commit)
    monitor.start()
    parts.drift = monitor
    try:
        yield
    finally:
        await monitor.stop()
        if root is not None:
            await root.close()


def _peer_follower(s: Settings, origin: str) -> tuple[ObjectStore, PeerFollower]:
    """The other origins' ledgers for the drift monitor of a cluster node; ConfigError names what is wrong."""
    from sidecar.audit.origins import load_origins_trust, parent_url, sub_url
    from sidecar.audit.verifier import UnusableInput

    assert s.drift_peers is not None
    try:
        trust = load_origins_trust(s.drift_peers)
    except UnusableInput as exc:
        raise ConfigError(f"drift_peers: {exc}") from exc
    if trust is None:
        raise ConfigError(f"drift_peers: {s.drift_peers} is not an origins trust file (kc-ledger-origins/1)")
    if origin not in trust.anchors:
        raise ConfigError(f"drift_peers: {s.drift_peers} does not list this ledger's origin {origin!r}")
    url = s.drift_peers_store or (parent_url(s.store_url) if s.store_url else None)
    if not url:
        raise ConfigError("drift_peers needs the bucket the origins replicate to: set store or drift_peers_store")
    days = s.store_retention_days
    root = open_store(url, retention_days=days)
    peers = PeerFollower(
        trust,
        origin,
        root,
        lambda prefix: open_store(sub_url(url, prefix), retention_days=days),
        s.data_dir / "peers",
        window_s=(s.drift or DriftConfig()).window_s,
    )
    return root, peers


async def _control(app: web.Application) -> AsyncIterator[None]:
    """The operator's control channel (sidecar/control.py): live erasure through the one ledger writer."""
    parts = app[PARTS]
    store, ledger = parts.subjects, parts.ledger
    assert store is not None and ledger is not None

    async def erase(subject: str, by: str, reason: str) -> dict[str, Any]:
        assert parts.append is not None
        return await erase_with(parts.append, store, subject, by=by, reason=reason, now_ns=ledger.clock.now_ns)

    async for _ in control.serve_control(parts.settings.data_dir, erase):
        yield


async def _upstream_probe(app: web.Application) -> AsyncIterator[None]:
    parts = app[PARTS]
    if parts.settings.upstream_probe_s <= 0:
        yield
        return
    probe = UpstreamProbe(parts.settings.upstream, parts.settings.upstream_probe_s)
    await probe.start()
    parts.probe = probe
    parts.checks["upstream"] = lambda: probe.error
    try:
        yield
    finally:
        await probe.close()


async def _proxy(app: web.Application) -> AsyncIterator[None]:
    parts = app[PARTS]
    assert parts.proxy is not None and parts.ledger is not None
    await parts.proxy.start()
    log.info(
        "sidecar ready: ledger %s (%d records), upstream %s, policy %s (%s)",
        parts.settings.data_dir,
        parts.ledger.size,
        parts.settings.upstream,
        parts.policy.name,
        parts.policy.digest[:12],
    )
    try:
        yield
    finally:
        await parts.proxy.close()


async def _witness(app: web.Application) -> AsyncIterator[None]:
    """Witness client (docs/format.md §14.1): cosigning follows commits, never the request path."""
    from sidecar.core.witness import parse_witness_list
    from sidecar.witness.client import WitnessClient

    parts = app[PARTS]
    s = parts.settings
    if s.witness_file is None:
        yield
        return
    assert parts.ledger is not None
    try:
        witnesses = parse_witness_list(s.witness_file.read_bytes())
        client = WitnessClient(
            s.data_dir,
            witnesses,
            parts.keys.witness_signer(),
            quorum=s.witness_quorum,
            stale_after_s=s.witness_stale_s,
            store=parts.store,
        )
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{s.witness_file}: {exc}") from exc
    parts.ledger.subscribers.append(client.on_commit)
    parts.checks["witness"] = client.not_ready_reason
    await client.start()
    try:
        yield
    finally:
        await client.close()


RESOURCES: tuple[Resource, ...] = (
    _ledger,
    _index,
    _store,
    _replicator,
    _witness,
    _final_checkpoint,
    _side_calls,
    _state_reader,
    _drift_monitor,
    _control,
    _upstream_probe,
    _proxy,
)


# ------------------------------------------------------------------------------------ the append path
_refusal: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("sidecar_refusal", default=None)


def _note_refusal(reason: str) -> None:
    metrics.APPEND_ERRORS.labels(reason=reason).inc()
    holder = _refusal.get()
    if holder is not None:
        holder.append(reason)


def _event_labels(event: IdentityEvent | dict[str, Any]) -> tuple[str, str, str | None]:
    if isinstance(event, IdentityEvent):
        return str(event.type), str(event.outcome), event.actor.kind if event.actor else None
    actor = event.get("actor")
    return (
        str(event.get("type", "unknown")),
        str(event.get("outcome", "unknown")),
        actor.get("kind") if isinstance(actor, dict) else None,
    )


def _appender(parts: Parts) -> Appender:
    high_water = parts.settings.high_water_bytes

    async def append(event: IdentityEvent) -> Any:
        rep, ledger = parts.replicator, parts.ledger
        if rep is not None and rep.over_high_water(max_age_s=0.1):
            # P9: local disk is bounded; with the store unreachable past the mark, the failure policy decides.
            _note_refusal("high_water")
            raise StorageError(f"replication backlog above {high_water} bytes ({rep.last_error or 'store behind'})")
        if ledger is None:
            _note_refusal("storage")
            raise StorageError("ledger not open")
        began = time.perf_counter()
        try:
            receipt = await ledger.append(event)
        except OverloadError:
            _note_refusal("queue_full")
            raise
        except StorageError:
            _note_refusal("storage")
            raise
        metrics.APPEND_SECONDS.observe(time.perf_counter() - began)
        kind, outcome, actor_kind = _event_labels(event)
        metrics.RECORDS.labels(type=kind, outcome=outcome).inc()
        if actor_kind == "unverified":
            metrics.UNVERIFIED_TOKENS.labels(type=kind).inc()
        return receipt

    return append


# ------------------------------------------------------------------------------------ middlewares
def _networks(specs: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    nets = []
    for spec in specs:
        try:
            nets.append(ipaddress.ip_network(spec.strip(), strict=False))
        except ValueError as exc:
            raise ConfigError(f"trusted proxy {spec!r}: not an address or CIDR network") from exc
    return tuple(nets)


def _trusted(addr: str | None, nets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    if not addr:
        return False
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return any(ip in net for net in nets)


def client_address(
    peer: str | None,
    forwarded_for: list[str],
    forwarded_proto: str | None,
    nets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...],
) -> tuple[str | None, str | None]:
    """(client address, scheme) to believe for a request from *peer*.

    Only a trusted peer's X-Forwarded-For is read, right to left, skipping trusted hops: the first
    address that is not a trusted proxy is the client (what the load balancer itself saw). A value
    that is not an IP address ends the walk there. From any other peer the headers count for
    nothing: the socket address is the client, and the proxy then overwrites the headers.
    """
    if not _trusted(peer, nets):
        return peer, None
    hops = [h.strip() for line in forwarded_for for h in line.split(",") if h.strip()]
    client = peer
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break
        client = hop
        if not _trusted(hop, nets):
            break
    proto = (forwarded_proto or "").split(",")[-1].strip().lower()
    return client, proto if proto in ("http", "https") else None


def _middlewares(parts: Parts) -> list[Any]:
    # Label children resolved once, not per request (a labels() lookup takes a lock and builds a key).
    request_seconds = {kind: metrics.REQUEST_SECONDS.labels(kind=kind) for kind in ("proxy", "sidecar")}
    responses = {n: metrics.RESPONSES.labels(code=f"{n}xx") for n in range(1, 6)}
    nets = _networks(parts.settings.trusted_proxies)
    want_access = parts.settings.access_log

    @web.middleware
    async def observe(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if nets:
            remote, scheme = client_address(
                request.remote,
                request.headers.getall("X-Forwarded-For", []),
                request.headers.get("X-Forwarded-Proto"),
                nets,
            )
            changes: dict[str, Any] = {}
            if remote != request.remote and remote is not None:
                changes["remote"] = remote
            if scheme is not None and scheme != request.scheme:
                changes["scheme"] = scheme
            if changes:
                request = request.clone(**changes)
        began = time.perf_counter()
        holder: list[str] = []
        token = _refusal.set(holder)
        status = 500
        try:
            resp = await handler(request)
            status = resp.status
            return resp
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            _refusal.reset(token)
            elapsed = time.perf_counter() - began
            kind = "sidecar" if request.path.startswith("/.sidecar/") else "proxy"
            request_seconds[kind].observe(elapsed)
            (responses.get(status // 100) or metrics.RESPONSES.labels(code=f"{status // 100}xx")).inc()
            if status == 503:
                metrics.UNAVAILABLE.labels(
                    reason=holder[-1] if holder else ("upstream" if kind == "proxy" else "other")
                ).inc()
            if want_access:
                # With a subject key store the client's IP is erasable personal data: never in a log line.
                _access_line(request, status, elapsed, kind, with_client=False)

    return [observe]


def _access_line(request: web.Request, status: int, elapsed: float, kind: str, *, with_client: bool = True) -> None:
    """One line per request: never a query string, a header, a cookie or a body (they carry secrets)."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    # SECURITY: raw path only up to '?', percent-encoded as received (no decoded line breaks), bounded.
    path = request.raw_path.partition("?")[0][:512]
    access_log.info(
        "%s %s %d %.1fms",
        request.method,
        path,
        status,
        elapsed * 1000,
        extra={
            "http": {
                "method": request.method,
                "path": path,
                "status": status,
                "ms": round(elapsed * 1000, 2),
                "client": request.remote if with_client else None,
                "kind": kind,
            }
        },
    )


# ------------------------------------------------------------------------------------ the app
def make_app(settings: Settings, *, extra_resources: tuple[Resource, ...] = ()) -> web.Application:
    policy = load_policy(settings.policy_file)
    keys = KeyStore(settings.data_dir)
    keys.trust()  # fail early, with the fix in the message, if keys were never initialised
    upstream = _Upstream(settings.upstream)
    tokens = TokenVerifier(upstream.jwks)
    parts = Parts(settings, policy, keys, upstream, tokens)
    # Always a subject key store, bound to this ledger: a missing, foreign or unreadable one stops the
    # start (never plaintext); a new ledger gets one at <data>/subjects/ unless told where.
    parts.subjects, how = open_for_ledger(settings.data_dir, settings.subjects_dir, settings.subjects_backups)
    log.log(
        logging.WARNING if how == "created" else logging.INFO,
        "subject key store %s (%s, %d backup copies)%s",
        parts.subjects.path,
        how,
        len(settings.subjects_backups),
        ": back it up (docs/operations.md §3.1)" if how == "created" else "",
    )
    append = _appender(parts)
    parts.append = append
    if settings.reader_realm and settings.reader_client_id and settings.reader_secret:
        realm, client_id = settings.reader_realm, settings.reader_client_id

        async def reader_login(ok: bool | None, error: str | None, claims: dict[str, Any]) -> None:
            sub = claims.get("sub")
            # ok None: no answer came, so whether Keycloak issued a token is not known (outcome unknown)
            outcome = Outcome.UNKNOWN if ok is None else Outcome.SUCCEEDED if ok else Outcome.FAILED
            await append(
                IdentityEvent(
                    EventType.TOKEN_FAILED if ok is False else EventType.TOKEN_ISSUED,
                    outcome,
                    realm=realm,
                    client=client_id,
                    actor=Party(id=sub if isinstance(sub, str) else None, client=client_id, kind="client"),
                    error=error,
                    details={"grant": "client_credentials", "via": "sidecar-state-reader"},
                )
            )

        parts.reader = KeycloakReader(
            settings.upstream, realm, client_id, settings.reader_secret, on_login=reader_login
        )
    hooks = LedgerHooks(
        append,
        policy,
        tokens,
        SessionDirectory(secrets.token_bytes(32)),
        upstream.whoami,
        keys.fingerprint_key(),
        parts.reader,
        upstream.introspect,
    )
    parts.proxy = ReverseProxy(
        settings.upstream,
        hooks,
        ProxyLimits(
            max_captured_body=policy.capture.max_body_bytes,
            capture_budget=settings.capture_budget_bytes,
            identity_connections=settings.identity_connections,
            max_connections=settings.passthrough_connections,
        ),
    )
    proxy = parts.proxy
    # Readiness fails while captured requests wait for an upstream connection (logins would time out).
    parts.checks["proxy"] = lambda: "identity pool saturated" if "identity" in proxy.status()["saturated"] else None

    app = web.Application(middlewares=_middlewares(parts), handler_args=HANDLER_ARGS)
    app[PARTS] = parts
    app[POLICY] = policy
    app[SETTINGS] = settings
    for resource in (*RESOURCES[:-1], *extra_resources, RESOURCES[-1]):
        app.cleanup_ctx.append(resource)

    app.router.add_get("/.sidecar/health/live", _live)
    app.router.add_get("/.sidecar/health/ready", _ready)
    app.router.add_get("/.sidecar/health", _ready)
    app.router.add_get("/.sidecar/metrics", _metrics)
    app.router.add_get("/.sidecar/drift", _drift)
    reader = parts.reader
    live = reader.user_realm_access if reader is not None and reader.realm == settings.auditor_realm else None
    add_audit_routes(
        app,
        settings.data_dir,
        tokens,
        append,
        realm=settings.auditor_realm,
        role=settings.auditor_role,
        fail_closed=policy.failure.audit_reads == "closed",
        live=live,
        recheck_s=settings.auditor_recheck_s,
        denied_window_s=settings.auditor_denied_window_s,
    )
    parts.proxy.add_routes(app)
    return app


async def _drift(request: web.Request) -> web.Response:
    monitor = request.app[PARTS].drift
    return web.json_response({"enabled": False} if monitor is None else {"enabled": True, **monitor.to_json()})


async def _live(request: web.Request) -> web.Response:
    return web.json_response({"status": "live"})


def readiness(parts: Parts) -> dict[str, Any]:
    """The readiness body: status, the failing checks' reasons, and the ledger and replication state."""
    reasons = {name: why for name, check in parts.checks.items() if (why := check()) is not None}
    body: dict[str, Any] = {"status": "failing" if reasons else "ok", "reasons": reasons, "policy": parts.policy.digest}
    ledger = parts.ledger
    if ledger is not None:
        body["ledger"] = {
            "records": ledger.size,
            "segment": ledger.segment,
            "queue": ledger.queue_depth(),
            "broken": ledger.broken,
            "fault": ledger.fault(),
            "rejected": ledger.rejected,
            "key": ledger.public_key.name,
        }
    if parts.replicator is not None:
        body["replication"] = parts.replicator.status()
    if parts.probe is not None:
        body["upstream"] = {"url": parts.probe.url, "error": parts.probe.error}
    if parts.proxy is not None:
        body["proxy"] = parts.proxy.status()
    return body


async def _ready(request: web.Request) -> web.Response:
    body = readiness(request.app[PARTS])
    ok = body["status"] == "ok"
    metrics.READY.set(1 if ok else 0)
    return web.json_response(body, status=200 if ok else 503)


def _refresh_gauges(parts: Parts) -> None:
    ledger, rep = parts.ledger, parts.replicator
    if ledger is not None:
        metrics.QUEUE_DEPTH.set(ledger.queue_depth())
        metrics.LEDGER_RECORDS.set(ledger.size)
        metrics.LEDGER_BROKEN.set(1 if ledger.broken else 0)
    if rep is not None:
        status = rep.status()
        metrics.REPLICATION_BACKLOG.set(status["backlog_bytes"])
        metrics.REPLICATION_PENDING.set((status["pending_since_ms"] or 0.0) / 1000)
        for stat in ("p50", "p99", "max"):
            value = status[f"lag_ms_{stat}"]
            metrics.REPLICATION_LAG.labels(stat=stat).set((value or 0.0) / 1000)
        for state in metrics.REPLICATION_STATES:
            metrics.REPLICATION_STATE.labels(state=state).set(1 if status["state"] == state else 0)
        if status["last_success_ns"]:
            metrics.REPLICATION_LAST_SUCCESS.set(status["last_success_ns"] / 1e9)
        metrics.REPLICATION_OBJECTS.set(status["objects"])
    metrics.READY.set(0 if any(check() for check in parts.checks.values()) else 1)


async def _metrics(request: web.Request) -> web.Response:
    _refresh_gauges(request.app[PARTS])
    body, content_type = metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": content_type})


# ------------------------------------------------------------------------------------ running
class TlsFiles:
    """The listener's certificate and key; `reload()` (on SIGHUP) swaps in new files if they load."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert, self.key = cert, key
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._load(self.context)

    def _load(self, context: ssl.SSLContext) -> None:
        try:
            context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"TLS certificate {self.cert} / key {self.key}: {exc}") from exc

    def reload(self) -> bool:
        """Load the files again; a pair that does not load leaves the current one in place."""
        try:
            self._load(ssl.create_default_context(ssl.Purpose.CLIENT_AUTH))  # prove the new pair first
            self._load(self.context)  # new handshakes use it; open connections keep theirs
        except ConfigError as exc:
            log.error("TLS reload failed, keeping the current certificate: %s", exc)
            return False
        log.info("TLS certificate reloaded from %s", self.cert)
        return True


async def serve_app(
    app: web.Application,
    host: str,
    port: int,
    *,
    tls: TlsFiles | None = None,
    ready: Callable[[list[Any]], None] | None = None,
) -> None:
    """Run *app* until SIGINT or SIGTERM; SIGHUP reloads the TLS files.

    Unlike aiohttp's run_app this also leaves the entered resources when a later one fails to
    start (aiohttp's `app.cleanup()` after a failed startup leaves exactly those entered).
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(
        signal.SIGHUP, tls.reload if tls is not None else lambda: log.info("SIGHUP: no TLS listener, nothing to reload")
    )
    try:
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=tls.context if tls else None)
        await site.start()
        # What start-up built (modules, policy, key store, the app) lives as long as the process: moved
        # out of the collector's generations, so no full collection under traffic walks it again.
        gc.freeze()
        if ready is not None:
            ready(runner.addresses)
        await stop.wait()
        log.info("stopping")
    finally:
        try:
            await runner.cleanup()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(sig)
