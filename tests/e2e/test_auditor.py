"""The auditor endpoint of the sidecar process, with tokens from the real Keycloak.

Who may read: a token of the `ledger-test` realm, signed by its published keys, unexpired, with
the `ledger-auditor` realm role. The auditor is a fresh user given that role through Keycloak's
admin API directly (test setup, not traffic under test); its tokens come through the sidecar.
Every token used here goes into `secrets_seen` (checked by test_zz_secrets.py).
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from yarl import URL

from sidecar.capture.tokens import unverified_claims
from sidecar.harness import activity
from sidecar.harness.keycloak import KeycloakServer
from sidecar.harness.realm import REALM
from tests.fixtures_keycloak import ADMIN_PASSWORD, ADMIN_USERNAME
from tests.fixtures_sidecar import SidecarProcess

pytestmark = [pytest.mark.keycloak]

ROLE = "ledger-auditor"
OBJECTS = "/.sidecar/audit/objects"
TOKEN_LEEWAY_S = 30  # sidecar.capture.tokens.TokenVerifier's default expiry leeway


@dataclass(frozen=True)
class Auditor:
    username: str
    password: str
    user_id: str


@pytest.fixture(scope="module")
def auditor(keycloak: KeycloakServer, secrets_seen: set[str]) -> Iterator[Auditor]:
    """A new user of the test realm holding the ledger-auditor realm role (made with Keycloak's admin API)."""
    user = Auditor(f"auditor-{uuid.uuid4().hex[:8]}", f"Aud-{uuid.uuid4().hex}!", "")
    secrets_seen.add(user.password)

    async def create() -> str:
        async with activity.Admin(keycloak.base_url, ADMIN_USERNAME, ADMIN_PASSWORD) as admin:
            status, _ = await admin.call(
                "POST",
                f"{REALM.name}/users",
                {
                    "username": user.username,
                    "enabled": True,
                    "email": f"{user.username}@example.test",
                    "emailVerified": True,
                    "firstName": "Audrey",
                    "lastName": "Auditor",
                    "credentials": [{"type": "password", "value": user.password, "temporary": False}],
                },
            )
            assert status == 201, status
            uid = await admin.user_id(REALM.name, user.username)
            role = await admin.role(REALM.name, ROLE)
            assert await admin.grant_realm_role(REALM.name, uid, role) == 204
            return uid

    uid = asyncio.run(create())
    yield Auditor(user.username, user.password, uid)


async def password_token(
    sidecar: SidecarProcess,
    secrets_seen: set[str],
    username: str,
    password: str,
    client_id: str = REALM.app.client_id,
    secret: str | None = REALM.app.secret,
) -> str:
    """An access token from a password grant through the sidecar; every token in the answer is a secret."""
    status, data = await activity.direct_grant(sidecar.base_url, REALM.name, client_id, secret, username, password)
    assert status == 200, data
    secrets_seen.update(str(data[k]) for k in ("access_token", "refresh_token", "id_token") if k in data)
    return str(data["access_token"])


async def get(url: str | URL, token: str | None = None) -> tuple[int, bytes, dict[str, str]]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers, allow_redirects=False) as resp:
        return resp.status, await resp.read(), dict(resp.headers)


def _b64(obj: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(obj)).rstrip(b"=").decode()


def _header(token: str) -> dict[str, Any]:
    head = token.split(".")[0]
    parsed: dict[str, Any] = orjson.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    return parsed


@pytest.fixture
async def auditor_token(sidecar: SidecarProcess, auditor: Auditor, secrets_seen: set[str]) -> AsyncIterator[str]:
    """A fresh access token of the auditor, obtained through the sidecar."""
    yield await password_token(sidecar, secrets_seen, auditor.username, auditor.password)


async def test_refuses_missing_forged_and_foreign_tokens(
    sidecar: SidecarProcess, auditor_token: str, secrets_seen: set[str]
) -> None:
    """No token, a token signed by another key, an edited payload, alg=none or another realm's token: 401."""
    url = sidecar.base_url + OBJECTS
    status, body, headers = await get(url)
    assert status == 401 and "Bearer" in headers.get("WWW-Authenticate", ""), body

    claims = unverified_claims(auditor_token)
    assert claims is not None and ROLE in claims["realm_access"]["roles"]
    kid = _header(auditor_token)["kid"]
    # Same claims, same kid, the realm's algorithm, but a key Keycloak never had.
    stranger = RSAKey.generate_key(2048, parameters={"kid": kid})
    forged = jwt.encode({"alg": "RS256", "kid": kid, "typ": "JWT"}, claims, stranger)
    # Keycloak's signature, but over other claims (another user name and subject).
    head, payload, signature = auditor_token.split(".")
    edited = ".".join((head, _b64({**claims, "preferred_username": "mallory", "sub": str(uuid.uuid4())}), signature))
    unsigned = ".".join((_b64({"alg": "none", "typ": "JWT"}), payload, ""))
    status, data = await activity.token(
        sidecar.base_url,
        "master",
        {"grant_type": "password", "client_id": "admin-cli", "username": ADMIN_USERNAME, "password": ADMIN_PASSWORD},
    )
    assert status == 200
    master = str(data["access_token"])
    secrets_seen.update({forged, edited, unsigned, master, str(data.get("refresh_token", ""))} - {""})
    for name, token in (
        ("forged", forged),
        ("edited", edited),
        ("alg-none", unsigned),
        ("master realm", master),
        ("garbage", "not.a.jwt"),
    ):
        status, body, headers = await get(url, token)
        assert status == 401, (name, status, body)
        assert "invalid_token" in headers.get("WWW-Authenticate", ""), name
        status, body, _ = await get(f"{url}/segments/00000000.seg", token)
        assert status == 401 and not body.startswith(b"H"), (name, status)


async def test_token_without_the_role_is_forbidden_and_recorded(
    keycloak: KeycloakServer, sidecar: SidecarProcess, secrets_seen: set[str]
) -> None:
    """A valid token of a user without ledger-auditor gets 403, and the first attempt is a failed audit.read record.

    Later refusals of the same user within the rate-limit window are counted and aggregated
    (tests/e2e/test_hostile_proxy.py checks that part).
    """
    name, password = f"no-role-{uuid.uuid4().hex[:8]}", f"Pw-{uuid.uuid4().hex}!"
    secrets_seen.add(password)
    async with activity.Admin(keycloak.base_url, ADMIN_USERNAME, ADMIN_PASSWORD) as admin:
        status, _ = await admin.call(
            "POST",
            f"{REALM.name}/users",
            {
                "username": name,
                "enabled": True,
                "email": f"{name}@example.test",
                "emailVerified": True,
                "firstName": "No",
                "lastName": "Role",
                "credentials": [{"type": "password", "value": password, "temporary": False}],
            },
        )
        assert status == 201
    token = await password_token(sidecar, secrets_seen, name, password)
    for path in (OBJECTS, f"{OBJECTS}/segments/00000000.seg"):
        status, body, _ = await get(sidecar.base_url + path, token)
        assert status == 403 and ROLE.encode() in body, (path, status, body)
    denied = [
        r["event"]
        for r in sidecar.records()
        if r["event"]["type"] == "audit.read" and (r["event"].get("actor") or {}).get("username") == name
    ]
    assert [(e["outcome"], e["error"], e["details"]["object"]) for e in denied] == [("failed", "forbidden", "list")]


async def test_expired_token_is_refused(
    keycloak: KeycloakServer, sidecar: SidecarProcess, auditor: Auditor, secrets_seen: set[str]
) -> None:
    """A real auditor token from a client with a 1 s token lifespan works at once and is refused once expired."""
    client_id = f"short-lived-{uuid.uuid4().hex[:8]}"
    async with activity.Admin(keycloak.base_url, ADMIN_USERNAME, ADMIN_PASSWORD) as admin:
        status, _ = await admin.call(
            "POST",
            f"{REALM.name}/clients",
            {
                "clientId": client_id,
                "publicClient": True,
                "directAccessGrantsEnabled": True,
                "standardFlowEnabled": False,
                "attributes": {"access.token.lifespan": "1"},
            },
        )
        assert status == 201
        try:
            token = await password_token(sidecar, secrets_seen, auditor.username, auditor.password, client_id, None)
            claims = unverified_claims(token)
            assert claims is not None and claims["exp"] - claims["iat"] <= 1
            status, body, _ = await get(sidecar.base_url + OBJECTS, token)
            assert status == 200, body
            # The verifier allows TOKEN_LEEWAY_S of clock skew past `exp`; wait until beyond it.
            await asyncio.sleep(max(0.0, claims["exp"] + TOKEN_LEEWAY_S + 2 - time.time()))
            status, body, headers = await get(sidecar.base_url + OBJECTS, token)
            assert status == 401 and "invalid_token" in headers.get("WWW-Authenticate", ""), body
        finally:
            status, clients = await admin.call("GET", f"{REALM.name}/clients?clientId={client_id}")
            for c in clients or []:
                await admin.call("DELETE", f"{REALM.name}/clients/{c['id']}")


async def test_path_tricks_are_refused(sidecar: SidecarProcess, auditor_token: str) -> None:
    """'..', encoded dots and slashes, absolute paths and keys outside the layout never serve file contents."""
    secret_bytes = [p.read_bytes() for p in (sidecar.data_dir / "keys").glob("*.key")]
    secret_bytes += [sidecar.trust.read_bytes(), (sidecar.data_dir / "ledger.json").read_bytes()]
    tricks = [
        "../trust.json",
        "../../trust.json",
        "segments/../../trust.json",
        "segments/../keys/epoch-000000.key",
        "%2e%2e/trust.json",
        "%2E%2E/%2E%2E/trust.json",
        "segments/%2e%2e/%2e%2e/trust.json",
        "segments%2F..%2F..%2Ftrust.json",
        "..%2Ftrust.json",
        "%2Fetc%2Fpasswd",
        "/etc/passwd",
        "//etc/passwd",
        "%252e%252e/trust.json",
        "segments/..%5c..%5ctrust.json",
        "segments/00000000.seg%00.json",
        "trust.json",
        "ledger.json",
        "replication.json",
        "keys/epoch-000000.key",
        ".lock",
        "segments/.00000000.seg",
        "segments/0.seg",
        "segments/00000000.seg.bak",
        "checkpoints/x.note",
        "segments/99999999.seg",
        "checkpoints/000000000001-00000000000000000001.note",
    ]
    for trick in tricks:
        url = URL(f"{sidecar.base_url}{OBJECTS}/{trick}", encoded=True)
        status, body, _ = await get(url, auditor_token)
        assert status in (400, 404), (trick, status, body[:200])
        assert b"root:" not in body and not body.startswith(b"H"), trick
        assert not any(s in body for s in secret_bytes if s), trick
    status, body, _ = await get(URL(f"{sidecar.base_url}{OBJECTS}/../../trust.json", encoded=True))
    assert status in (401, 404) and not any(s in body for s in secret_bytes), "no token: refused before any path"


async def test_reads_are_served_and_recorded(sidecar: SidecarProcess, auditor: Auditor, auditor_token: str) -> None:
    """The auditor lists and reads objects (200) and each read appends an audit.read naming the auditor and object."""
    status, body, headers = await get(sidecar.base_url + OBJECTS, auditor_token)
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    listing = orjson.loads(body)
    keys = [o["key"] for o in listing]
    assert any(k.startswith("segments/") or k.startswith("tail/") for k in keys)
    assert any(k.startswith("checkpoints/") for k in keys)
    first = keys[0]
    status, data, _ = await get(f"{sidecar.base_url}{OBJECTS}/{first}", auditor_token)
    assert status == 200 and len(data) >= next(o["size"] for o in listing if o["key"] == first)
    reads = [
        r["event"]
        for r in sidecar.records()
        if r["event"]["type"] == "audit.read" and (r["event"].get("actor") or {}).get("username") == auditor.username
    ]
    assert [e["details"]["object"] for e in reads[-2:]] == ["list", first]
    for e in reads[-2:]:
        assert e["outcome"] == "succeeded" and e["realm"] == REALM.name
        assert e["actor"]["id"] == auditor.user_id and e["client"] == REALM.app.client_id
        assert e["ip"] == "127.0.0.1"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sidecar", *args], capture_output=True, text=True, timeout=180)


async def test_pull_and_verify_through_the_sidecar(sidecar: SidecarProcess, auditor_token: str, tmp_path: Path) -> None:
    """`sidecar pull URL --token` fetches a bundle that verifies, and `sidecar verify URL --token` passes (exit 0)."""
    out = tmp_path / "bundle"
    pulled = await asyncio.to_thread(
        _cli, "pull", sidecar.base_url, "--out", str(out), "--token", auditor_token, "--json"
    )
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    summary = orjson.loads(pulled.stdout)
    assert summary["findings"] == [] and summary["segments"] >= 1 and summary["checkpoints"] == 1
    newest = max((out / "checkpoints").glob("*.note"))
    bundle = await asyncio.to_thread(
        _cli, "verify", str(out), "--trust", str(sidecar.trust), "--checkpoint", str(newest)
    )
    assert bundle.returncode == 0, bundle.stdout + bundle.stderr
    remote = await asyncio.to_thread(
        _cli, "verify", sidecar.base_url, "--trust", str(sidecar.trust), "--token", auditor_token, "--json"
    )
    assert remote.returncode == 0, remote.stdout + remote.stderr
    verdict = orjson.loads(remote.stdout)
    assert verdict["verdict"] == "intact" and verdict["external_checkpoints"] == 1
    refused = await asyncio.to_thread(_cli, "verify", sidecar.base_url, "--trust", str(sidecar.trust))
    assert refused.returncode == 2 and "401" in refused.stderr, refused.stderr
