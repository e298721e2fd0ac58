"""The Keycloak harness: the server starts, imports ``ledger-test`` and answers on its own port.

Every request here goes to Keycloak DIRECTLY (``keycloak.base_url``), bypassing the sidecar; the
frontend URL is still the sidecar's (``keycloak.public_url``).
"""

from __future__ import annotations

import base64
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from sidecar.harness.keycloak import KeycloakServer, free_port
from sidecar.harness.realm import REALM
from tests.fixtures_keycloak import ADMIN_PASSWORD, ADMIN_USERNAME

pytestmark = pytest.mark.keycloak


def _request(
    url: str, *, form: dict[str, str] | None = None, token: str | None = None, host: str | None = None
) -> tuple[int, Any]:
    """Send a GET (or a form POST) and return (status, parsed JSON body or None)."""
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    req = urllib.request.Request(url, data=data)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if host:
        req.add_header("Host", host)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    return status, json.loads(body) if body else None


def _token(kc: KeycloakServer, realm: str, form: dict[str, str]) -> tuple[int, Any]:
    return _request(f"{kc.base_url}/realms/{realm}/protocol/openid-connect/token", form=form)


def _admin_token(kc: KeycloakServer) -> str:
    status, body = _token(
        kc,
        "master",
        {
            "grant_type": "password",
            "client_id": "admin-cli",
            "username": ADMIN_USERNAME,
            "password": ADMIN_PASSWORD,
        },
    )
    assert status == 200, body
    token: str = body["access_token"]
    return token


def _claims(jwt: str) -> dict[str, Any]:
    payload = jwt.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


def _admin_get(kc: KeycloakServer, path: str) -> Any:
    status, body = _request(f"{kc.base_url}/admin/realms/{REALM.name}{path}", token=_admin_token(kc))
    assert status == 200, body
    return body


def test_realm_is_imported(keycloak: KeycloakServer) -> None:
    """The ledger-test realm exists with its users, roles, groups, clients and the robot's service account."""
    realm = _admin_get(keycloak, "")
    assert realm["realm"] == REALM.name
    assert realm["bruteForceProtected"] is False
    usernames = {u["username"] for u in _admin_get(keycloak, "/users?briefRepresentation=true&max=100")}
    assert {u.username for u in REALM.users} <= usernames
    assert {r["name"] for r in _admin_get(keycloak, "/roles")} >= set(REALM.realm_roles)
    assert {g["name"] for g in _admin_get(keycloak, "/groups")} >= set(REALM.groups)
    client_ids = {c["clientId"] for c in _admin_get(keycloak, "/clients")}
    assert {REALM.app.client_id, REALM.spa.client_id, REALM.robot.client_id} <= client_ids


def test_events_config_is_enabled(keycloak: KeycloakServer) -> None:
    """Login events, admin events and admin event representations are all enabled by the import."""
    config = _admin_get(keycloak, "/events/config")
    assert config["eventsEnabled"] is True
    assert config["adminEventsEnabled"] is True
    assert config["adminEventsDetailsEnabled"] is True


def test_password_grant_issues_token_for_the_sidecar_url(keycloak: KeycloakServer) -> None:
    """A direct grant made on Keycloak's own port yields a token whose iss is the sidecar's public URL."""
    status, body = _token(
        keycloak,
        REALM.name,
        {
            "grant_type": "password",
            "client_id": REALM.app.client_id,
            "client_secret": REALM.app.secret or "",
            "username": REALM.alice.username,
            "password": REALM.alice.password,
        },
    )
    assert status == 200, body
    claims = _claims(body["access_token"])
    assert claims["iss"] == f"{keycloak.public_url}/realms/{REALM.name}"
    assert claims["preferred_username"] == REALM.alice.username
    assert keycloak.public_url != keycloak.base_url


def test_client_credentials_grant_for_robot(keycloak: KeycloakServer) -> None:
    """The ledger-robot service account obtains a token carrying its realm-management roles."""
    status, body = _token(
        keycloak,
        REALM.name,
        {
            "grant_type": "client_credentials",
            "client_id": REALM.robot.client_id,
            "client_secret": REALM.robot.secret or "",
        },
    )
    assert status == 200, body
    claims = _claims(body["access_token"])
    assert claims["preferred_username"] == REALM.robot_service_account
    assert set(claims["resource_access"]["realm-management"]["roles"]) >= set(REALM.robot_roles)


def test_wrong_password_is_recorded_as_login_error(keycloak: KeycloakServer) -> None:
    """A failed password grant is refused and shows up in the realm's events as LOGIN_ERROR."""
    form = {
        "grant_type": "password",
        "client_id": REALM.app.client_id,
        "client_secret": REALM.app.secret or "",
        "username": REALM.bob.username,
        "password": "not-" + REALM.bob.password,
    }
    status, body = _token(keycloak, REALM.name, form)
    # 26.7.3 answers 400 (older releases answered 401) with the standard OAuth error code.
    assert status == 400 and body["error"] == "invalid_grant", body
    deadline = time.monotonic() + 10
    while True:
        events = _admin_get(keycloak, "/events?type=LOGIN_ERROR&client=ledger-app&max=50")
        errors = [e for e in events if e.get("details", {}).get("username") == REALM.bob.username]
        if errors or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert errors, events
    assert errors[0]["error"] == "invalid_user_credentials"


def _authorize(kc: KeycloakServer, redirect_uri: str) -> tuple[int, str]:
    """Open ledger-app's authorization endpoint directly; return (status, HTML page)."""
    query = {"client_id": REALM.app.client_id, "response_type": "code", "scope": "openid"}
    url = f"{kc.base_url}/realms/{REALM.name}/protocol/openid-connect/auth"
    try:
        with urllib.request.urlopen(f"{url}?{urllib.parse.urlencode({**query, 'redirect_uri': redirect_uri})}") as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_loopback_redirect_uri_accepts_any_port(keycloak: KeycloakServer) -> None:
    """A 127.0.0.1 callback on any port gets a login form posting to the sidecar; other hosts get 400."""
    status, page = _authorize(keycloak, f"http://127.0.0.1:{free_port()}/callback")
    assert status == 200, page[:500]
    action = re.search(r'<form[^>]*action="([^"]+)"', page)
    assert action is not None, page[:500]
    assert action.group(1).startswith(f"{keycloak.public_url}/realms/{REALM.name}/login-actions/")
    status, page = _authorize(keycloak, "http://evil.example/callback")
    assert status == 400 and "Invalid parameter: redirect_uri" in page, page[:500]


def test_direct_access_ignores_a_foreign_host_header(keycloak: KeycloakServer) -> None:
    """Keycloak 26.7.3 with a fixed --hostname still serves requests whose Host names another host."""
    for host in (f"127.0.0.1:{keycloak.http_port}", "somewhere-else.example"):
        status, body = _request(f"{keycloak.base_url}/realms/{REALM.name}/.well-known/openid-configuration", host=host)
        assert status == 200, (host, body)
        assert body["issuer"] == f"{keycloak.public_url}/realms/{REALM.name}"
    status, body = _request(f"{keycloak.management_url}/health/ready")
    assert status == 200 and body["status"] == "UP"
    assert keycloak.startup_seconds is not None and keycloak.startup_seconds > 0


def test_kcadm_runs_with_a_private_config(keycloak: KeycloakServer, tmp_path: Path) -> None:
    """kcadm logs in and reads the realm using only the config file it is given."""
    config = tmp_path / "kcadm.config"
    keycloak.kcadm(
        "config", "credentials", "--realm", "master", "--user", ADMIN_USERNAME, "--password", ADMIN_PASSWORD,
        config_file=config,
    )  # fmt: skip
    assert config.is_file()
    out = keycloak.kcadm("get", f"realms/{REALM.name}", "--fields", "realm,eventsEnabled", config_file=config)
    assert json.loads(out.stdout) == {"realm": REALM.name, "eventsEnabled": True}
