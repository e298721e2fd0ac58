"""The auditor endpoint in-process, with tokens minted here and a fake realm JWKS: fast and exact.

tests/e2e/test_auditor.py runs the same promises against the real Keycloak; this file adds what
is hard to arrange there: tokens expired by any amount, and pulling from a ledger that grows
and seals segments while the auditor's client is between its listing and its reads.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from joserfc import jwt
from joserfc.jwk import RSAKey
from yarl import URL

from sidecar.app import LEDGER, Settings, make_app
from sidecar.audit.http_source import SidecarSource
from sidecar.audit.pull import pull
from sidecar.audit.remote import pull_and_verify
from sidecar.audit.verifier import load_trust, verify_directory
from sidecar.ledger.writer import LedgerConfig

from .support import event, init_keys, segment_records

REALM = "ledger-test"
ROLE = "ledger-auditor"
OBJECTS = "/.sidecar/audit/objects"


@dataclass
class Env:
    base: str  # the sidecar
    issuer: str
    key: RSAKey
    app: web.Application
    data: Path

    def token(
        self,
        *,
        roles: tuple[str, ...] = (ROLE,),
        exp_in: float = 300,
        issuer: str | None = None,
        key: RSAKey | None = None,
        username: str = "audrey",
    ) -> str:
        now = int(time.time())
        claims = {
            "iss": issuer or self.issuer,
            "sub": f"id-{username}",
            "preferred_username": username,
            "azp": "ledger-app",
            "sid": "s-1",
            "iat": now,
            "exp": int(now + exp_in),
            "realm_access": {"roles": list(roles)},
        }
        signer = key or self.key
        return jwt.encode({"alg": "RS256", "kid": self.key.kid, "typ": "JWT"}, claims, signer)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    """A sidecar app (small segments) in front of a fake Keycloak that publishes one realm's signing key."""
    key = RSAKey.generate_key(2048, parameters={"kid": "realm-key-1", "use": "sig", "alg": "RS256"})
    upstream_app = web.Application()

    async def certs(request: web.Request) -> web.Response:
        if request.match_info["realm"] != REALM:
            return web.json_response({"error": "Realm does not exist"}, status=404)
        return web.json_response({"keys": [key.as_dict(private=False)]})

    upstream_app.router.add_get("/realms/{realm}/protocol/openid-connect/certs", certs)
    upstream = TestServer(upstream_app, host="127.0.0.1")
    await upstream.start_server()
    base_upstream = str(upstream.make_url("")).rstrip("/")
    data = tmp_path / "ledger"
    init_keys(data)
    app = make_app(
        Settings(
            upstream=base_upstream, data_dir=data, auditor_realm=REALM, ledger=LedgerConfig(segment_max_bytes=8 * 1024)
        )
    )
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield Env(str(server.make_url("")).rstrip("/"), f"{base_upstream}/realms/{REALM}", key, app, data)
    finally:
        await server.close()
        await upstream.close()


async def get(url: str | URL, token: str | None = None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
        return resp.status, await resp.read()


def audit_reads(data: Path) -> list[dict[str, Any]]:
    """The audit.read events, decrypted with the ledger's own subject key store (serve always encrypts)."""
    from tests.fixtures_sidecar import ledger_records

    return [r["event"] for r in ledger_records(data) if r["event"]["type"] == "audit.read"]


async def test_tokens(env: Env) -> None:
    """Only an unexpired token of the auditor realm, signed by its key and carrying the role, reads (else 401/403)."""
    url = env.base + OBJECTS
    assert (await get(url))[0] == 401
    assert (await get(url, env.token()))[0] == 200
    assert (await get(url, env.token(exp_in=-3600)))[0] == 401  # expired an hour ago
    assert (await get(url, env.token(exp_in=-10)))[0] == 200  # within the verifier's 30 s leeway
    stranger = RSAKey.generate_key(2048, parameters={"kid": "realm-key-1"})
    assert (await get(url, env.token(key=stranger)))[0] == 401
    other_realm = env.issuer.rsplit("/", 1)[0] + "/master"
    assert (await get(url, env.token(issuer=other_realm)))[0] == 401
    assert (await get(url, env.token(roles=("viewer",), username="bob")))[0] == 403
    reads = audit_reads(env.data)
    assert [(e["outcome"], e["actor"]["username"], e["details"]["object"]) for e in reads] == [
        ("succeeded", "audrey", "list"),
        ("succeeded", "audrey", "list"),
        ("failed", "bob", "list"),
    ]


async def test_path_tricks(env: Env) -> None:
    """Every crafted key is 400 (not a layout key) or 404, and never returns a byte of a file outside segments/."""
    token = env.token()
    secret = [p.read_bytes() for p in (env.data / "keys").glob("*")] + [(env.data / "trust.json").read_bytes()]
    seen: dict[str, int] = {}
    for trick in [
        "../trust.json",
        "%2e%2e/trust.json",
        "segments%2F..%2F..%2Ftrust.json",
        "%2Fetc%2Fpasswd",
        "//etc/passwd",
        "keys/epoch-000000.key",
        "trust.json",
        ".lock",
        "segments/0.seg",
        "segments/99999999.seg",
        "tail/00000000/999999999999.chunk",
        "segments/00000000.seg%00",
    ]:
        status, body = await get(URL(f"{env.base}{OBJECTS}/{trick}", encoded=True), token)
        seen[trick] = status
        assert status in (400, 404) and not any(s in body for s in secret), (trick, status)
    assert seen["../trust.json"] in (400, 404)
    assert seen["%2e%2e/trust.json"] == seen["segments%2F..%2F..%2Ftrust.json"] == 400
    assert seen["keys/epoch-000000.key"] == seen["trust.json"] == 400
    assert seen["segments/99999999.seg"] == 404
    print("\n" + ", ".join(f"{k} -> {v}" for k, v in seen.items()))


async def test_pull_while_the_ledger_grows_and_seals(env: Env, tmp_path: Path) -> None:
    """A pull through the endpoint while records keep coming (and segments seal) is consistent and verifies."""
    ledger = env.app[LEDGER]
    stop = asyncio.Event()

    async def writer() -> None:
        i = 0
        while not stop.is_set():
            await ledger.append(event(i, pad=400))
            i += 1
            await asyncio.sleep(0.002)

    for i in range(40):
        await ledger.append(event(10_000 + i, pad=400))
    task = asyncio.create_task(writer())
    try:
        source = SidecarSource(env.base, env.token())
        try:
            listed = await source.list()
            await asyncio.sleep(0.5)  # the open segment grows and is sealed meanwhile
            result = await pull(source, tmp_path / "bundle")
        finally:
            await source.close()
        report = await pull_and_verify(
            env.base, tmp_path / "again", load_trust(env.data / "trust.json"), token=env.token(), workers=1
        )
    finally:
        stop.set()
        await task
    assert result.findings == [], result.findings
    assert any(o.key.startswith("tail/") for o in listed)
    assert report.ok, report.findings
    pulled = segment_records(tmp_path / "bundle")
    assert pulled == segment_records(env.data)[: len(pulled)], "the bundle is a prefix of the live ledger"
    local = verify_directory(env.data, load_trust(env.data / "trust.json"), workers=1)
    assert local.ok and local.size > report.size


async def test_listing_shape(env: Env) -> None:
    """The listing is JSON [{key, size}] in the store layout; fetched objects have the listed size or more."""
    status, body = await get(env.base + OBJECTS, env.token())
    assert status == 200
    listing = orjson.loads(body)
    assert all(set(o) == {"key", "size"} for o in listing)
    for o in listing:
        status, data = await get(f"{env.base}{OBJECTS}/{o['key']}", env.token())
        assert status == 200 and len(data) >= o["size"]
