"""Hostile traffic cannot silence, blind or falsify the ledger: the capture classes of issue 8, on the real Keycloak.

Every request goes through the session sidecar process in front of the session Keycloak; Keycloak's own
event store and its live state (read directly, not through the sidecar) are the oracle. One test per class:

1. hostile claims (float, huge integer, non-ASCII key, 700 KB) cannot break the writer;
2. cookie values and extra form fields cannot redact attribution;
3. every realm signing algorithm keeps attribution verified;
4. forged tokens on /revoke and /logout never become the actor;
5. bodies are read as Keycloak (Jackson) reads them;
7. a password typed into the username field is kept only as a keyed fingerprint.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sidecar.harness.keycloak import KeycloakServer
from sidecar.harness.realm import REALM
from tests import oracle
from tests.fixtures_keycloak import ADMIN_PASSWORD, ADMIN_USERNAME
from tests.fixtures_sidecar import SidecarProcess

pytestmark = [pytest.mark.keycloak]

R = REALM.name
OIDC = f"/realms/{R}/protocol/openid-connect"


def unsigned(claims: object) -> str:
    """A JWT anyone can make: these claims, a plausible header, no valid signature."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(b'{"alg":"RS256","typ":"JWT"}')
    return f"{head}.{b64(json.dumps(claims).encode())}.Zm9yZ2Vk"


def claims_of(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


def header_of(token: str) -> dict[str, Any]:
    part = token.split(".")[0]
    return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


async def call(
    base: str,
    method: str,
    path: str,
    *,
    data: Any = None,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    token: str | None = None,
) -> tuple[int, Any]:
    hdrs = dict(headers or {})
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        kwargs: dict[str, Any] = {"headers": hdrs, "params": params, "allow_redirects": False}
        if body is not None and "Content-Type" not in hdrs:
            kwargs["skip_auto_headers"] = ["Content-Type"]  # really none (aiohttp would add octet-stream)
        if data is not None:
            kwargs["data"] = data
        elif body is not None:
            kwargs["data"] = body
        async with http.request(method, base + path, **kwargs) as resp:
            raw = await resp.read()
            try:
                return resp.status, json.loads(raw) if raw[:1] in (b"{", b"[") else raw
            except ValueError:
                return resp.status, raw


async def password_grant(base: str, username: str, password: str, **extra: str) -> tuple[int, Any]:
    return await call(
        base,
        "POST",
        f"{OIDC}/token",
        data={
            "grant_type": "password",
            "client_id": REALM.app.client_id,
            "client_secret": REALM.app.secret or "",
            "username": username,
            "password": password,
            "scope": "openid",
            **extra,
        },
    )


class Keycloak:
    """Direct (not through the sidecar) admin reads and setup: the oracle side."""

    def __init__(self, server: KeycloakServer) -> None:
        self.base = server.base_url
        self.token = ""

    async def login(self) -> None:
        self.token = await oracle.admin_token(self.base, ADMIN_USERNAME, ADMIN_PASSWORD)

    async def admin(self, method: str, path: str, doc: Any = None) -> tuple[int, Any]:
        body = json.dumps(doc).encode() if doc is not None else None
        return await call(
            self.base,
            method,
            f"/admin/realms/{R}{path}",
            body=body,
            token=self.token,
            headers={"Content-Type": "application/json"} if body is not None else None,
        )

    async def new_user(self, **fields: Any) -> str:
        name = f"hc-{uuid.uuid4().hex[:10]}"
        status, _ = await self.admin("POST", "/users", {"username": name, "enabled": True, **fields})
        assert status == 201
        status, found = await self.admin("GET", f"/users?username={name}&exact=true")
        return str(found[0]["id"])

    async def user_id(self, username: str) -> str:
        _, found = await self.admin("GET", f"/users?username={username}&exact=true")
        return str(found[0]["id"])

    async def realm_roles(self, user_id: str) -> set[str]:
        _, roles = await self.admin("GET", f"/users/{user_id}/role-mappings/realm")
        return {r["name"] for r in roles}

    async def events(self, since_ms: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return await oracle.keycloak_events(self.base, self.token, R, since_ms)


@pytest.fixture
async def kc(keycloak: KeycloakServer) -> Keycloak:
    k = Keycloak(keycloak)
    await k.login()
    return k


def records_since(sidecar: SidecarProcess, seq: int) -> list[dict[str, Any]]:
    return [r for r in sidecar.records() if r["seq"] > seq]


def last_seq(sidecar: SidecarProcess) -> int:
    recs = sidecar.records()
    return int(recs[-1]["seq"]) if recs else 0


def by_request(records: list[dict[str, Any]], etype: str) -> list[dict[str, Any]]:
    return [r["event"] for r in records if r["event"]["type"] == etype]


async def carol_token(sidecar: SidecarProcess, secrets: set[str]) -> str:
    status, data = await password_grant(sidecar.base_url, REALM.carol.username, REALM.carol.password)
    assert status == 200, data
    secrets.update({data["access_token"], data["refresh_token"]})
    return str(data["access_token"])


# ---------------------------------------------------------------------------- class 1
def _verify_copy(sidecar: SidecarProcess, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`sidecar verify` on a copy of the live ledger's segments (the writer keeps appending heartbeats)."""
    copy = tmp_path / "ledger"
    shutil.copytree(sidecar.data_dir / "segments", copy / "segments")
    return subprocess.run(
        [sys.executable, "-m", "sidecar", "verify", str(copy), "--trust", str(sidecar.trust)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _files_holding(needle: bytes, *roots: Path) -> list[str]:
    return [
        str(p)
        for root in roots
        for p in ([root] if root.is_file() else root.rglob("*"))
        if p.is_file() and needle in p.read_bytes()
    ]


async def test_hostile_claims_cannot_break_the_ledger(
    sidecar: SidecarProcess, kc: Keycloak, secrets_seen: set[str], tmp_path: Path
) -> None:
    """Unsigned tokens with a float sub, an int beyond 2^53, a non-ASCII key or a 700 KB claim, on /revoke, a refresh
    grant and a logout hint, leave the ledger healthy: bounded records, logins still recorded, verify intact."""
    since_ms, start = oracle.now_ms() - 1, last_seq(sidecar)
    hostile: list[dict[str, Any]] = [
        {"sub": 1.5},
        {"sub": "u", "sid": 2**60 + 1, "exp": 2**70},
        {"ä": {"ö": 1}, "sub": "x"},
        {"sub": "y" * 700_000},
    ]
    for claims in hostile:
        token = unsigned({"iss": f"{sidecar.base_url}/realms/{R}", **claims})
        status, _ = await call(
            sidecar.base_url, "POST", f"{OIDC}/revoke", data={"client_id": REALM.spa.client_id, "token": token}
        )
        assert status != 503
        status, _ = await call(
            sidecar.base_url,
            "POST",
            f"{OIDC}/token",
            data={"grant_type": "refresh_token", "client_id": REALM.spa.client_id, "refresh_token": token},
        )
        assert status in (400, 401, 413)
        status, _ = await call(sidecar.base_url, "GET", f"{OIDC}/logout", params={"id_token_hint": token})
        assert status != 503
    status, health = await call(sidecar.base_url, "GET", "/.sidecar/health")
    assert status == 200, health
    status, data = await password_grant(sidecar.base_url, REALM.alice.username, REALM.alice.password)
    assert status == 200
    secrets_seen.update({data["access_token"], data["refresh_token"], data["id_token"]})
    new = records_since(sidecar, start)
    assert all(len(json.dumps(r)) < 64 * 1024 for r in new), max(len(json.dumps(r)) for r in new)
    revokes = by_request(new, "token.revoked")
    assert len(revokes) == len(hostile)
    assert all(r["outcome"] != "succeeded" and r["actor"] == {"kind": "unverified"} for r in revokes)
    assert by_request(new, "login.succeeded")[-1]["actor"]["username"] == REALM.alice.username
    user_events, _ = await kc.events(since_ms)
    assert sum(e["type"] == "REVOKE_GRANT_ERROR" for e in user_events) >= 1  # Keycloak refused what it could parse
    assert not any(e["type"] == "REVOKE_GRANT" for e in user_events)
    verify = _verify_copy(sidecar, tmp_path)
    assert verify.returncode == 0 and "INTACT" in verify.stdout, verify.stdout + verify.stderr


# ---------------------------------------------------------------------------- class 2
async def test_cookies_and_form_fields_cannot_redact_attribution(
    sidecar: SidecarProcess, kc: Keycloak, secrets_seen: set[str]
) -> None:
    """Cookies holding the actor's and target's ids, the realm and the role, and form fields repeating the username,
    leave actor, target, realm, roles, IP, type and outcome intact in records matching Keycloak's admin event."""
    since_ms, start = oracle.now_ms() - 1, last_seq(sidecar)
    carol_id, target = await kc.user_id(REALM.carol.username), await kc.new_user()
    status, data = await password_grant(
        sidecar.base_url, REALM.carol.username, REALM.carol.password, x=REALM.carol.username, y=R, z="login.succeeded"
    )
    assert status == 200
    secrets_seen.update({data["access_token"], data["refresh_token"]})
    _, role = await kc.admin("GET", "/roles/viewer")
    cookie = f"a={carol_id}; b={target}; c={R}; d=viewer; e=127.0.0.1; f=role.granted; g=succeeded"
    status, _ = await call(
        sidecar.base_url,
        "POST",
        f"/admin/realms/{R}/users/{target}/role-mappings/realm",
        body=json.dumps([{"id": role["id"], "name": "viewer"}]).encode(),
        token=data["access_token"],
        headers={"Content-Type": "application/json", "Cookie": cookie},
    )
    assert status == 204 and "viewer" in await kc.realm_roles(target)
    new = records_since(sidecar, start)
    login = by_request(new, "login.succeeded")[-1]
    assert login["actor"]["username"] == REALM.carol.username and login["realm"] == R
    grant = [e for e in by_request(new, "role.granted") if e["details"]["phase"] == "outcome"][-1]
    assert grant["actor"]["id"] == carol_id and grant["target"]["id"] == target and grant["realm"] == R
    assert grant["details"]["roles"] == ["viewer"] and grant["ip"] == "127.0.0.1"
    assert grant["outcome"] == "succeeded" and "[redacted]" not in json.dumps([r["event"] for r in new])
    _, admin_events = await kc.events(since_ms)
    assert any(
        e["operationType"] == "CREATE"
        and e["resourcePath"] == f"users/{target}/role-mappings/realm"
        and e["authDetails"]["userId"] == carol_id
        for e in admin_events
    )


# ---------------------------------------------------------------------------- class 3
@pytest.mark.parametrize("alg", ["PS256", "ES384", "RS512", "EdDSA"])
async def test_realm_signature_algorithms_keep_attribution(
    sidecar: SidecarProcess, kc: Keycloak, secrets_seen: set[str], alg: str
) -> None:
    """With the realm signing with PS256, ES384, RS512 or EdDSA, an admin change is attributed to the verified admin
    Keycloak names, with no alarm."""
    status, _ = await kc.admin("PUT", "", {"defaultSignatureAlgorithm": alg})
    assert status == 204
    try:
        since_ms, start = oracle.now_ms() - 1, last_seq(sidecar)
        token = await carol_token(sidecar, secrets_seen)
        assert header_of(token)["alg"] == alg
        carol_id, target = await kc.user_id(REALM.carol.username), await kc.new_user()
        _, role = await kc.admin("GET", "/roles/operator")
        status, _ = await call(
            sidecar.base_url,
            "POST",
            f"/admin/realms/{R}/users/{target}/role-mappings/realm",
            body=json.dumps([{"id": role["id"], "name": "operator"}]).encode(),
            token=token,
            headers={"Content-Type": "application/json"},
        )
        assert status == 204 and "operator" in await kc.realm_roles(target)
        new = records_since(sidecar, start)
        grant = [e for e in by_request(new, "role.granted") if e["details"]["phase"] == "outcome"][-1]
        assert grant["actor"]["id"] == carol_id and grant["details"]["actor_verified"] is True
        assert not by_request(new, "alarm.raised")
        _, admin_events = await kc.events(since_ms)
        assert any(
            e["resourcePath"] == f"users/{target}/role-mappings/realm" and e["authDetails"]["userId"] == carol_id
            for e in admin_events
        )
    finally:
        status, _ = await kc.admin("PUT", "", {"defaultSignatureAlgorithm": "RS256"})
        assert status == 204


# ---------------------------------------------------------------------------- class 4
async def test_forged_tokens_are_never_the_actor(sidecar: SidecarProcess, kc: Keycloak, secrets_seen: set[str]) -> None:
    """A forged token naming alice on /revoke (Keycloak: REVOKE_GRANT_ERROR) and a forged id_token_hint naming alice
    on /logout are never alice's success; her session lives on; a genuine hint is bob's verified logout."""
    since_ms, start = oracle.now_ms() - 1, last_seq(sidecar)
    alice_id, bob_id = await kc.user_id(REALM.alice.username), await kc.user_id(REALM.bob.username)
    status, alice = await password_grant(sidecar.base_url, REALM.alice.username, REALM.alice.password)
    assert status == 200
    secrets_seen.update({alice["access_token"], alice["refresh_token"], alice["id_token"]})
    sid = claims_of(alice["access_token"])["sid"]
    forged = unsigned(
        {
            "iss": f"{sidecar.base_url}/realms/{R}",
            "sub": alice_id,
            "sid": sid,
            "typ": "Refresh",
            "azp": REALM.spa.client_id,
            "preferred_username": REALM.alice.username,
        }
    )
    status, _ = await call(
        sidecar.base_url,
        "POST",
        f"{OIDC}/revoke",
        data={"client_id": REALM.spa.client_id, "token": forged, "token_type_hint": "refresh_token"},
    )
    assert status == 200  # RFC 7009: Keycloak answers 200 to any token
    forged_id = unsigned(
        {"iss": f"{sidecar.base_url}/realms/{R}", "sub": alice_id, "sid": sid, "typ": "ID", "azp": REALM.app.client_id}
    )
    status, _ = await call(sidecar.base_url, "GET", f"{OIDC}/logout", params={"id_token_hint": forged_id})
    assert status >= 400
    status, bob = await password_grant(sidecar.base_url, REALM.bob.username, REALM.bob.password)
    assert status == 200
    secrets_seen.update({bob["access_token"], bob["refresh_token"], bob["id_token"]})
    status, _ = await call(sidecar.base_url, "GET", f"{OIDC}/logout", params={"id_token_hint": bob["id_token"]})
    assert status < 400
    _, sessions = await kc.admin("GET", f"/users/{alice_id}/sessions")
    assert sid in {s["id"] for s in sessions}, "Keycloak ended nothing of alice's"
    user_events, _ = await kc.events(since_ms)
    assert any(e["type"] == "REVOKE_GRANT_ERROR" for e in user_events)
    assert any(e["type"] == "LOGOUT" and e.get("userId") == bob_id for e in user_events)
    new = [r["event"] for r in records_since(sidecar, start)]
    for e in new:
        if e["type"] in ("token.revoked", "logout.completed") and e["outcome"] == "succeeded":
            assert (e.get("actor") or {}).get("id") != alice_id, e
    revoke = by_request(records_since(sidecar, start), "token.revoked")[-1]
    assert revoke["actor"] == {"kind": "unverified"} and revoke["details"]["unverified"]["sub"] == alice_id
    logouts = by_request(records_since(sidecar, start), "logout.completed")
    assert logouts[-2]["outcome"] == "failed" and logouts[-2]["actor"] == {"kind": "unverified"}
    assert logouts[-1]["outcome"] == "succeeded" and logouts[-1]["actor"]["id"] == bob_id


# ---------------------------------------------------------------------------- class 5
async def test_bodies_read_as_keycloak_reads_them(
    sidecar: SidecarProcess, kc: Keycloak, secrets_seen: set[str]
) -> None:
    """Role grants with a BOM, UTF-16, UTF-32, trailing bytes, a lone surrogate or no Content-Type, which Keycloak
    applies, are recorded with the role Keycloak's state shows; a BOM revoke of one role is not all_roles; a lenient
    "false" or 0 that Keycloak applies is user.disabled."""
    start = last_seq(sidecar)
    token = await carol_token(sidecar, secrets_seen)
    _, role = await kc.admin("GET", "/roles/viewer")
    doc = json.dumps([{"id": role["id"], "name": "viewer"}])
    variants = {
        "bom": (b"\xef\xbb\xbf" + doc.encode(), "application/json"),
        "utf-16": (doc.encode("utf-16-le"), "application/json"),
        "utf-32": (doc.encode("utf-32-be"), "application/json; charset=utf-8"),
        "trailing": (doc.encode() + b' ] {"x": 1', "application/json"),
        "surrogate": (
            json.dumps([{"id": role["id"], "name": "viewer", "description": "\ud800"}]).encode(),
            "application/json",
        ),
        "no-content-type": (doc.encode(), None),
    }
    targets = {}
    for name, (body, ctype) in variants.items():
        target = targets[name] = await kc.new_user()
        status, _ = await call(
            sidecar.base_url,
            "POST",
            f"/admin/realms/{R}/users/{target}/role-mappings/realm",
            body=body,
            token=token,
            headers={"Content-Type": ctype} if ctype else {},
        )
        assert status == 204, name
        assert "viewer" in await kc.realm_roles(target), f"Keycloak applied {name}"
    revoke_target = await kc.new_user()
    _, operator = await kc.admin("GET", "/roles/operator")
    await kc.admin("POST", f"/users/{revoke_target}/role-mappings/realm", [role, operator])
    status, _ = await call(
        sidecar.base_url,
        "DELETE",
        f"/admin/realms/{R}/users/{revoke_target}/role-mappings/realm",
        body=b"\xef\xbb\xbf" + doc.encode(),
        token=token,
        headers={"Content-Type": "application/json"},
    )
    assert status == 204 and await kc.realm_roles(revoke_target) >= {"operator"}
    disabled = {}
    for raw in (b'{"enabled":"false"}', b'{"enabled":0}'):
        user = disabled[raw] = await kc.new_user()
        status, _ = await call(
            sidecar.base_url,
            "PUT",
            f"/admin/realms/{R}/users/{user}",
            body=raw,
            token=token,
            headers={"Content-Type": "application/json"},
        )
        assert status == 204
        _, rep = await kc.admin("GET", f"/users/{user}")
        assert rep["enabled"] is False, "Keycloak applied it as false"
    outcomes = [
        r["event"] for r in records_since(sidecar, start) if r["event"].get("details", {}).get("phase") == "outcome"
    ]
    for name, target in targets.items():
        grant = [e for e in outcomes if e["type"] == "role.granted" and e["target"]["id"] == target]
        assert len(grant) == 1 and grant[0]["details"]["roles"] == ["viewer"], (name, grant)
        assert grant[0]["details"]["after"]["realm_roles"] and "viewer" in grant[0]["details"]["after"]["realm_roles"]
    revoke = [e for e in outcomes if e["type"] == "role.revoked" and e["target"]["id"] == revoke_target]
    assert len(revoke) == 1 and revoke[0]["details"]["roles"] == ["viewer"] and "all_roles" not in revoke[0]["details"]
    for raw, user in disabled.items():
        assert [e["type"] for e in outcomes if (e.get("target") or {}).get("id") == user] == ["user.disabled"], raw


# ---------------------------------------------------------------------------- class 7 (username-password)
async def test_password_typed_as_username_is_only_a_fingerprint(
    sidecar: SidecarProcess, kc: Keycloak, secrets_seen: set[str]
) -> None:
    """A login whose username box holds a password (no such user: Keycloak's user_not_found) is stored as a keyed
    fingerprint only, nowhere verbatim; a wrong password for a real user still names the user."""
    since_ms, start = oracle.now_ms() - 1, last_seq(sidecar)
    typed = f"Typed-{uuid.uuid4().hex[:12]}-Pw!"
    secrets_seen.add(typed)
    status, _ = await password_grant(sidecar.base_url, typed, "whatever")
    assert status in (400, 401)
    status, _ = await password_grant(sidecar.base_url, REALM.bob.username, "not-bobs-password")
    assert status in (400, 401)
    user_events, _ = await kc.events(since_ms)
    assert any(e["type"] == "LOGIN_ERROR" and e.get("error") == "user_not_found" for e in user_events)
    failed = by_request(records_since(sidecar, start), "login.failed")
    assert (
        failed[-2]["details"]["username_status"] == "unknown-user" and len(failed[-2]["details"]["username_fp"]) == 32
    )
    assert "username" not in failed[-2]["actor"]
    assert failed[-1]["actor"]["username"] == REALM.bob.username
    # The writer acknowledged before the response: what was recorded is on disk (segments, index, log).
    assert _files_holding(typed.encode(), sidecar.data_dir, sidecar.log_file) == []
