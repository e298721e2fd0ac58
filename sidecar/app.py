"""`sidecar serve`: the aiohttp application that wires proxy, capture and ledger.

Lifecycles hang off `cleanup_ctx` in data-path order: the ledger opens (and
recovers) before the proxy accepts a request, and closes (after a final
checkpoint) only once the proxy has stopped. The sidecar's own endpoints live
under `/.sidecar/`, a prefix Keycloak never uses; everything else is Keycloak's.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from sidecar.audit.endpoint import add_audit_routes
from sidecar.capture.hooks import LedgerHooks
from sidecar.capture.reader import KeycloakReader
from sidecar.capture.sessions import SessionDirectory
from sidecar.capture.tokens import TokenVerifier
from sidecar.core.events import EventType, IdentityEvent, Outcome, Party
from sidecar.errors import StorageError
from sidecar.ledger.index import LedgerIndex
from sidecar.ledger.keystore import KeyStore
from sidecar.ledger.writer import Ledger, LedgerConfig
from sidecar.policy.schema import Policy, load_policy
from sidecar.proxy.forward import ProxyLimits, ReverseProxy
from sidecar.replicate.replicator import Replicator
from sidecar.replicate.s3 import S3Store
from sidecar.replicate.store import open_store

log = logging.getLogger("sidecar")


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


LEDGER = web.AppKey("ledger", Ledger)
POLICY = web.AppKey("policy", Policy)
SETTINGS = web.AppKey("settings", Settings)
REPLICATOR = web.AppKey("replicator", Replicator)


class _Upstream:
    """Side calls the capture layer makes to Keycloak: JWKS and whoami. Never on behalf of nobody."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5),
                                             cookie_jar=aiohttp.DummyCookieJar())

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

    async def whoami(self, realm: str, token: str, username: str | None) -> dict[str, Any] | None:
        """Who holds this lightweight admin token: {"userId", "displayName"} or None.

        Uses the caller's own token for reads Keycloak's own clients make: the console's whoami
        (console tokens only), else, when the username is known from the login the sidecar saw
        (e.g. kcadm's password grant), the exact-username lookup an admin token may do.
        """
        auth = {"Authorization": f"Bearer {token}"}
        who = await self._get_json(f"/admin/{realm}/console/whoami?currentRealm={realm}", auth)
        if who is not None or not username:
            return who
        assert self.session is not None
        try:
            async with self.session.get(f"{self.base}/admin/realms/{realm}/users", headers=auth,
                                        params={"username": username, "exact": "true",
                                                "briefRepresentation": "true"}) as resp:
                users = await resp.json(content_type=None) if resp.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        if isinstance(users, list) and len(users) == 1 and users[0].get("username") == username:
            return {"userId": users[0]["id"], "displayName": username}
        return None


def make_app(settings: Settings) -> web.Application:
    policy = load_policy(settings.policy_file)
    keys = KeyStore(settings.data_dir)
    keys.trust()  # fail early, with the fix in the message, if keys were never initialised
    app = web.Application()
    app[POLICY] = policy
    app[SETTINGS] = settings
    upstream = _Upstream(settings.upstream)

    replicator: list[Replicator] = []

    async def append(event: IdentityEvent | dict[str, Any]) -> Any:
        if replicator and replicator[0].over_high_water(max_age_s=0.1):
            # P9: local disk is bounded; with the store unreachable past the mark, the failure policy decides.
            raise StorageError(f"replication backlog above {settings.high_water_bytes} bytes "
                               f"({replicator[0].last_error or 'store behind'})")
        return await app[LEDGER].append(event)

    tokens = TokenVerifier(upstream.jwks)
    reader = None
    if settings.reader_realm and settings.reader_client_id and settings.reader_secret:
        realm, client_id = settings.reader_realm, settings.reader_client_id

        async def reader_login(ok: bool, error: str | None) -> None:
            await append(IdentityEvent(EventType.TOKEN_ISSUED if ok else EventType.TOKEN_FAILED,
                                       Outcome.SUCCEEDED if ok else Outcome.FAILED, realm=realm, client=client_id,
                                       actor=Party(client=client_id, kind="client"), error=error,
                                       details={"grant": "client_credentials", "via": "sidecar-state-reader"}))

        reader = KeycloakReader(settings.upstream, realm, client_id, settings.reader_secret, on_login=reader_login)
    hooks = LedgerHooks(append, policy, tokens, SessionDirectory(secrets.token_bytes(32)),
                        upstream.whoami, keys.fingerprint_key(), reader)
    proxy = ReverseProxy(settings.upstream, hooks, ProxyLimits(max_captured_body=policy.capture.max_body_bytes))

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        ledger = await Ledger.open(settings.data_dir, config=settings.ledger, policy_digest=policy.digest)
        app[LEDGER] = ledger
        index = LedgerIndex(settings.data_dir / "index.sqlite")
        await index.open()
        ledger.subscribers.append(index.on_commit)
        await index.catch_up(settings.data_dir)  # records written while no index was listening
        index.start()
        store = None
        if settings.store_url:
            store = open_store(settings.store_url, retention_days=settings.store_retention_days)
            if isinstance(store, S3Store):
                # A bucket without versioning and Object Lock would make the "cannot rewrite" promise false.
                await store.ensure_bucket(create=settings.store_create_bucket)
            rep = Replicator(settings.data_dir, store, interval_s=settings.replication_interval_s,
                             high_water_bytes=settings.high_water_bytes)
            ledger.subscribers.append(rep.on_commit)
            rep.start()
            replicator.append(rep)
            app[REPLICATOR] = rep
        await upstream.start()
        if reader is not None:
            await reader.start()
        await proxy.start()
        log.info("sidecar ready: ledger %s (%d records), upstream %s, policy %s (%s)", settings.data_dir,
                 ledger.size, settings.upstream, policy.name, policy.digest[:12])
        try:
            yield
        finally:
            await proxy.close()
            await upstream.close()
            if reader is not None:
                await reader.close()
            await ledger.close()
            await index.close()
            if replicator:
                await replicator[0].stop()
            if store is not None:
                await store.close()

    app.cleanup_ctx.append(lifecycle)

    async def health(request: web.Request) -> web.Response:
        ledger = request.app[LEDGER]
        ok = ledger.broken is None
        body = {"status": "ok" if ok else "failing", "ledger": {
            "records": ledger.size, "segment": ledger.segment, "queue": ledger.queue_depth(),
            "broken": ledger.broken, "key": ledger.public_key.name}, "policy": policy.digest}
        if replicator:
            rep = replicator[0]
            body["replication"] = rep.status()
            if rep.integrity_error or rep.over_high_water():
                ok = False
                body["status"] = "failing"
        return web.json_response(body, status=200 if ok else 503)

    app.router.add_get("/.sidecar/health", health)
    add_audit_routes(app, settings.data_dir, tokens, append, realm=settings.auditor_realm,
                     role=settings.auditor_role, fail_closed=policy.failure.audit_reads == "closed")
    proxy.add_routes(app)
    return app
