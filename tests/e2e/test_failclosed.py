"""Fail-closed capture on the real Keycloak: with the WAL unwritable nothing unrecorded happens, and it recovers.

The WAL is made unwritable with `chattr +i` on the newest segment (root cannot write an immutable
file, nor truncate it). The test runs its own sidecar process in front of the session Keycloak, on a
port of its own: a ledger left broken by a failure here must not take the session sidecar, shared with
every other e2e test, down with it. Admin REST calls and direct grants carry no frontend URL, so a
second address in front of the same Keycloak serves them unchanged.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sidecar.harness.keycloak import KeycloakServer, free_port
from sidecar.harness.realm import REALM
from tests.fixtures_keycloak import ADMIN_PASSWORD, ADMIN_USERNAME
from tests.fixtures_sidecar import SidecarProcess, ledger_records, wait_http

pytestmark = [pytest.mark.keycloak]


@pytest.fixture
def own_sidecar(keycloak: KeycloakServer, tmp_path: Path) -> Iterator[SidecarProcess]:
    """A sidecar of this test's own in front of the session Keycloak (same command as the session one)."""
    data, store, log_file = tmp_path / "ledger", tmp_path / "store", tmp_path / "sidecar.log"
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "sidecar",
        "serve",
        "--init",
        "--origin",
        "e2e.test/failclosed",
        "--upstream",
        keycloak.base_url,
        "--data",
        str(data),
        "--store",
        str(store),
        "--listen",
        f"127.0.0.1:{port}",
        "--auditor-realm",
        REALM.name,
        "--log-level",
        "DEBUG",
    ]
    with log_file.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/.sidecar/health", 30)
        yield SidecarProcess(base, data, store, log_file, proc)
    finally:
        for seg in (data / "segments").glob("*.seg"):  # never leave an immutable file behind
            subprocess.run(["chattr", "-i", str(seg)], check=False)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


async def _token(base: str, realm: str, form: dict[str, str]) -> tuple[int, dict[str, str], Any]:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/realms/{realm}/protocol/openid-connect/token", data=form) as resp:
            text = await resp.text()
            data = await resp.json(content_type=None) if text.startswith("{") else text
            return resp.status, dict(resp.headers), data


async def _admin(base: str, token: str, method: str, path: str, body: Any = None) -> tuple[int, dict[str, str], Any]:
    async with aiohttp.ClientSession() as http:
        async with http.request(
            method, f"{base}/admin/realms/{REALM.name}/{path}", json=body, headers={"Authorization": f"Bearer {token}"}
        ) as resp:
            text = await resp.text()
            data = await resp.json(content_type=None) if text[:1] in "[{" and text else text
            return resp.status, dict(resp.headers), data


async def _realm_roles(keycloak: KeycloakServer, token: str, user_id: str) -> set[str]:
    """The user's realm role mappings, read directly from Keycloak (not through any sidecar)."""
    status, _, roles = await _admin(keycloak.base_url, token, "GET", f"users/{user_id}/role-mappings/realm")
    assert status == 200, roles
    return {r["name"] for r in roles}


def _newest_segment(data_dir: Path) -> Path:
    return sorted((data_dir / "segments").glob("*.seg"))[-1]


def _chattr(flag: str, path: Path) -> None:
    proc = subprocess.run(["chattr", flag, str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"chattr {flag} {path.name} failed (needs root on ext4/xfs): {proc.stderr}"


def _verify(ledger: Path, trust: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar", "verify", str(ledger), "--trust", str(trust)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def _health(base: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/.sidecar/health") as resp:
            return resp.status, await resp.json(content_type=None)


async def test_unwritable_wal_refuses_changes_and_logins_then_recovers(
    keycloak: KeycloakServer, own_sidecar: SidecarProcess, secrets_seen: set[str], tmp_path: Path
) -> None:
    """With the WAL immutable a role grant and a password login get 503 + Retry-After and Keycloak is unchanged; after chattr -i both work, and verify passes."""
    base = own_sidecar.base_url
    status, _, data = await _token(
        base,
        "master",
        {"grant_type": "password", "client_id": "admin-cli", "username": ADMIN_USERNAME, "password": ADMIN_PASSWORD},
    )
    assert status == 200, data
    token = data["access_token"]
    secrets_seen.add(token)
    status, _, users = await _admin(base, token, "GET", f"users?exact=true&username={REALM.dave.username}")
    dave = users[0]["id"]
    status, _, role = await _admin(base, token, "GET", "roles/auditor")
    grant = [{"id": role["id"], "name": "auditor"}]
    before = await _realm_roles(keycloak, token, dave)
    assert "auditor" not in before
    login = {
        "grant_type": "password",
        "client_id": REALM.app.client_id,
        "client_secret": REALM.app.secret or "",
        "username": REALM.dave.username,
        "password": REALM.dave.password,
    }
    records_before = len(ledger_records(own_sidecar.data_dir))

    seg = _newest_segment(own_sidecar.data_dir)
    _chattr("+i", seg)
    try:
        status, headers, _ = await _admin(base, token, "POST", f"users/{dave}/role-mappings/realm", grant)
        assert status == 503, status
        assert int(headers["Retry-After"]) >= 1
        assert await _realm_roles(keycloak, token, dave) == before, "Keycloak saw a change that was not recorded"
        status, headers, body = await _token(base, REALM.name, login)
        assert status == 503 and int(headers["Retry-After"]) >= 1, (status, body)
        assert "access_token" not in str(body)
    finally:
        _chattr("-i", seg)

    deadline = time.monotonic() + 20
    while True:  # the next append cuts the failed write back and carries on
        status, _, granted = await _admin(base, token, "POST", f"users/{dave}/role-mappings/realm", grant)
        if status != 503 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    health = await _health(base)
    assert status == 204, f"no recovery after chattr -i: {status} {granted}; health {health}"
    assert "auditor" in await _realm_roles(keycloak, token, dave)
    status, _, _ = await _admin(base, token, "DELETE", f"users/{dave}/role-mappings/realm", grant)
    assert status == 204
    assert await _realm_roles(keycloak, token, dave) == before
    status, _, body = await _token(base, REALM.name, login)
    assert status == 200, body
    secrets_seen.update(body[k] for k in ("access_token", "refresh_token"))
    assert health[0] == 200 and health[1]["status"] == "ok", health

    events = [r["event"] for r in ledger_records(own_sidecar.data_dir)[records_before:]]
    outcomes = [(e["type"], e["outcome"]) for e in events if e.get("details", {}).get("phase") != "intent"]
    assert ("role.granted", "succeeded") in outcomes and ("role.revoked", "succeeded") in outcomes
    assert ("login.succeeded", "succeeded") in outcomes
    refused = [e for e in events if e["type"] == "role.granted" and e["outcome"] == "pending"]
    assert len(refused) == 1, "only the grant that reached Keycloak has an intent record"

    copy = tmp_path / "copy"
    shutil.copytree(own_sidecar.data_dir / "segments", copy / "segments")
    verify = _verify(copy, own_sidecar.trust)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "INTACT" in verify.stdout
