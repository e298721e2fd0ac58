"""The thin end-to-end slice on the real Keycloak: browser, admin clients, oracle, verify.

Everything goes through the sidecar process (tests/fixtures_sidecar.py) in front of the
real Keycloak (tests/fixtures_keycloak.py); Keycloak's own event store is the oracle.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import async_playwright

from sidecar.harness import activity
from sidecar.harness.keycloak import KeycloakServer
from sidecar.harness.realm import REALM
from tests import oracle
from tests.fixtures_keycloak import ADMIN_PASSWORD, ADMIN_USERNAME
from tests.fixtures_sidecar import SidecarProcess

pytestmark = [pytest.mark.keycloak]

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


async def _settle(sidecar: SidecarProcess, count: int, wait_s: float = 10.0) -> list[dict[str, Any]]:
    """Records written so far, once at least `count` exist (the writer acknowledges before answering)."""
    deadline = time.monotonic() + wait_s
    while True:
        records = sidecar.records()
        if len(records) >= count or time.monotonic() > deadline:
            return records
        await asyncio.sleep(0.1)


def _new(records: list[dict[str, Any]], since: int) -> list[dict[str, Any]]:
    return [r for r in records if r["seq"] >= since]


async def _oracle(keycloak: KeycloakServer, sidecar: SidecarProcess, since_ms: int, since_ns: int) -> oracle.Match:
    token = await oracle.admin_token(keycloak.base_url, ADMIN_USERNAME, ADMIN_PASSWORD)
    user_events, admin_events = await oracle.keycloak_events(keycloak.base_url, token, REALM.name, since_ms)
    result = oracle.match(user_events, admin_events, sidecar.records(), REALM.name, since_ns)
    print(f"\noracle match table ({len(user_events)} user, {len(admin_events)} admin events):\n{result.render()}")
    return result


@pytest.mark.browser
async def test_browser_login_wrong_then_right(
    keycloak: KeycloakServer, sidecar: SidecarProcess, secrets_seen: set[str]
) -> None:
    """Chromium logs in through the sidecar with a wrong then the right password; both are recorded and match Keycloak's events."""
    since_ms, since_ns, start = oracle.now_ms() - 1, time.time_ns(), len(sidecar.records())
    auth = (
        f"{sidecar.base_url}/realms/{REALM.name}/protocol/openid-connect/auth?client_id={REALM.app.client_id}"
        f"&redirect_uri=http://127.0.0.1:9/callback&response_type=code&scope=openid&state=s1"
    )
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            await page.goto(auth)
            form_action = await page.get_attribute("#kc-form-login", "action")
            assert form_action is not None and form_action.startswith(sidecar.base_url), form_action
            await page.fill("#username", REALM.alice.username)
            await page.fill("#password", "definitely-not-alices-password")
            await page.click("#kc-login")
            await page.wait_for_selector("#input-error, .kc-feedback-text, [id*=error]", timeout=15000)
            redirected: list[str] = []
            page.on(
                "request", lambda req: redirected.append(req.url) if req.url.startswith("http://127.0.0.1:9/") else None
            )
            await page.fill("#password", REALM.alice.password)
            await page.click("#kc-login")
            for _ in range(100):
                if redirected:
                    break
                await asyncio.sleep(0.1)
            assert redirected and "code=" in redirected[0], "the right password did not end in a code redirect"
            for cookie in await page.context.cookies():
                secrets_seen.add(cookie["value"])
            secrets_seen.add(redirected[0].split("code=", 1)[1].split("&", 1)[0])
        finally:
            await browser.close()
    records = _new(await _settle(sidecar, start + 2), start)
    failed = [r["event"] for r in records if r["event"]["type"] == "login.failed"]
    ok = [r["event"] for r in records if r["event"]["type"] == "login.succeeded"]
    assert failed and failed[0]["actor"]["username"] == "alice" and failed[0]["outcome"] == "failed"
    assert ok and ok[0]["actor"]["username"] == "alice" and ok[0]["actor"].get("id")
    assert ok[0]["realm"] == REALM.name and ok[0]["client"] == REALM.app.client_id and ok[0]["ip"] == "127.0.0.1"
    assert ok[0].get("session"), "a browser login record names its session"
    result = await _oracle(keycloak, sidecar, since_ms, since_ns)
    assert result.table["LOGIN_ERROR -> login.failed"] == 1
    assert result.table["LOGIN -> login.succeeded"] == 1
    assert not result.unmatched and not result.phantom


async def test_kcadm_grants_and_revokes_a_realm_role(
    keycloak: KeycloakServer, sidecar: SidecarProcess, tmp_path: Path
) -> None:
    """kcadm.sh, through the sidecar, grants and revokes a realm role; both records name the admin and match Keycloak's admin events."""
    since_ms, since_ns, start = oracle.now_ms() - 1, time.time_ns(), len(sidecar.records())
    config = tmp_path / "kcadm.config"
    keycloak.kcadm(
        "config",
        "credentials",
        "--realm",
        "master",
        "--user",
        ADMIN_USERNAME,
        "--password",
        ADMIN_PASSWORD,
        config_file=config,
        server=sidecar.base_url,
    )
    keycloak.kcadm(
        "add-roles", "-r", REALM.name, "--uusername", REALM.bob.username, "--rolename", "operator", config_file=config
    )
    keycloak.kcadm(
        "remove-roles",
        "-r",
        REALM.name,
        "--uusername",
        REALM.bob.username,
        "--rolename",
        "operator",
        config_file=config,
    )
    records = [r["event"] for r in _new(await _settle(sidecar, start + 4), start)]
    outcomes = [e for e in records if e.get("details", {}).get("phase") == "outcome"]
    granted = [e for e in outcomes if e["type"] == "role.granted"]
    revoked = [e for e in outcomes if e["type"] == "role.revoked"]
    assert granted and revoked
    for e in (granted[0], revoked[0]):
        assert e["actor"]["username"] == ADMIN_USERNAME and e["actor"].get("id"), e["actor"]
        assert e["details"]["roles"] == ["operator"] and e["outcome"] == "succeeded"
        assert e["target"]["kind"] == "user" and e["target"]["id"]
    intents = [e for e in records if e.get("details", {}).get("phase") == "intent"]
    assert len(intents) >= 2, "every admin change is preceded by a durable intent record"
    result = await _oracle(keycloak, sidecar, since_ms, since_ns)
    assert result.table["CREATE REALM_ROLE_MAPPING -> role.granted"] == 1
    assert result.table["DELETE REALM_ROLE_MAPPING -> role.revoked"] == 1
    assert not result.unmatched and not result.phantom


async def test_python_keycloak_grants_and_revokes_a_realm_role(
    keycloak: KeycloakServer, sidecar: SidecarProcess
) -> None:
    """python-keycloak's admin client, through the sidecar, grants and revokes a role; records name the admin and the target user."""
    from keycloak import KeycloakAdmin

    since_ms, since_ns, start = oracle.now_ms() - 1, time.time_ns(), len(sidecar.records())

    def work() -> str:
        admin = KeycloakAdmin(
            server_url=sidecar.base_url + "/",
            username=ADMIN_USERNAME,
            password=ADMIN_PASSWORD,
            realm_name=REALM.name,
            user_realm_name="master",
        )
        uid = admin.get_user_id(REALM.carol.username)
        assert uid is not None, REALM.carol.username
        role = admin.get_realm_role("viewer")
        admin.assign_realm_roles(uid, [role])
        admin.delete_realm_roles_of_user(uid, [role])
        return str(uid)

    uid = await asyncio.to_thread(work)
    records = [r["event"] for r in _new(await _settle(sidecar, start + 4), start)]
    changes = [
        e
        for e in records
        if e["type"] in ("role.granted", "role.revoked") and e.get("details", {}).get("phase") == "outcome"
    ]
    assert [e["type"] for e in changes] == ["role.granted", "role.revoked"]
    assert all(e["target"]["id"] == uid and e["actor"]["username"] == ADMIN_USERNAME for e in changes)
    assert all(e["target"].get("username") == REALM.carol.username for e in changes), "target ids resolve to names"
    granted, revoked = changes
    assert "viewer" not in granted["details"]["before"]["realm_roles"]
    assert "viewer" in granted["details"]["after"]["realm_roles"], "the record shows the effect, not just the request"
    assert "viewer" in revoked["details"]["before"]["realm_roles"]
    assert "viewer" not in revoked["details"]["after"]["realm_roles"]
    result = await _oracle(keycloak, sidecar, since_ms, since_ns)
    assert not result.unmatched and not result.phantom


async def test_direct_grant_and_client_credentials(
    keycloak: KeycloakServer, sidecar: SidecarProcess, secrets_seen: set[str]
) -> None:
    """Direct-grant logins (right and wrong) and a client-credentials grant are recorded with actor, client, IP and outcome."""
    since_ms, since_ns, start = oracle.now_ms() - 1, time.time_ns(), len(sidecar.records())
    base = sidecar.base_url
    status, good = await activity.direct_grant(
        base, REALM.name, REALM.app.client_id, REALM.app.secret, REALM.dave.username, REALM.dave.password
    )
    assert status == 200
    secrets_seen.update(good[k] for k in ("access_token", "refresh_token", "id_token"))
    status, bad = await activity.direct_grant(
        base, REALM.name, REALM.app.client_id, REALM.app.secret, REALM.dave.username, "wrong-" + REALM.dave.password
    )
    assert status == 400 and bad["error"] == "invalid_grant"
    status, robot = await activity.client_credentials(base, REALM.name, REALM.robot.client_id, REALM.robot.secret or "")
    assert status == 200
    secrets_seen.add(robot["access_token"])
    records = [r["event"] for r in _new(await _settle(sidecar, start + 3), start)]
    by_type = {e["type"]: e for e in records}
    assert by_type["login.succeeded"]["actor"]["username"] == "dave"
    assert by_type["login.succeeded"]["actor"]["id"]
    assert by_type["login.failed"]["error"] == "invalid_grant"
    assert by_type["token.issued"]["client"] == REALM.robot.client_id
    assert by_type["token.issued"]["details"]["grant"] == "client_credentials"
    assert all(e["ip"] == "127.0.0.1" for e in records)
    result = await _oracle(keycloak, sidecar, since_ms, since_ns)
    assert result.table["LOGIN -> login.succeeded"] == 1
    assert result.table["LOGIN_ERROR -> login.failed"] == 1
    assert result.table["CLIENT_LOGIN -> token.issued"] == 1
    assert not result.unmatched and not result.phantom


async def test_spoofed_forwarded_for_is_overwritten(keycloak: KeycloakServer, sidecar: SidecarProcess) -> None:
    """A client-supplied X-Forwarded-For never reaches Keycloak: its event and our record show the real peer."""
    since_ms = oracle.now_ms() - 1
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{sidecar.base_url}/realms/{REALM.name}/protocol/openid-connect/token",
            headers={"X-Forwarded-For": "203.0.113.9", "Forwarded": "for=203.0.113.9"},
            data={
                "grant_type": "password",
                "client_id": REALM.app.client_id,
                "client_secret": REALM.app.secret or "",
                "username": REALM.bob.username,
                "password": "spoof-" + REALM.bob.password,
            },
        ) as resp:
            assert resp.status == 400
    token = await oracle.admin_token(keycloak.base_url, ADMIN_USERNAME, ADMIN_PASSWORD)
    user_events, _ = await oracle.keycloak_events(keycloak.base_url, token, REALM.name, since_ms)
    errors = [e for e in user_events if e["type"] == "LOGIN_ERROR"]
    assert errors and all(e["ipAddress"] == "127.0.0.1" for e in errors)
    assert not any("203.0.113.9" in str(r) for r in sidecar.records())


def _run_verify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar", "verify", *args], capture_output=True, text=True, timeout=120
    )


async def test_verify_passes_then_finds_a_changed_byte(sidecar: SidecarProcess, tmp_path: Path) -> None:
    """`sidecar verify` passes on the live ledger's copy and, after one byte changes, fails naming segment and seq."""
    copy = tmp_path / "ledger"
    shutil.copytree(sidecar.data_dir / "segments", copy / "segments")
    good = _run_verify(str(copy), "--trust", str(sidecar.trust))
    assert good.returncode == 0, good.stdout + good.stderr
    assert "INTACT" in good.stdout
    from sidecar.core import framing

    seg = sorted((copy / "segments").glob("*.seg"))[0]
    seg.chmod(0o644)
    data = bytearray(seg.read_bytes())
    record = next(
        f
        for f in framing.iter_frames(bytes(data))
        if not isinstance(f, framing.FrameDamage) and f.kind == framing.RECORD
    )
    at = record.offset + 5 + record.body.index(b'"type"') + 9  # inside the event type string
    data[at] ^= 0x01
    seg.write_bytes(bytes(data))
    bad = _run_verify(str(copy), "--trust", str(sidecar.trust))
    assert bad.returncode == 1
    assert f"segment {seg.name}" in bad.stdout and "frame-damaged" in bad.stdout, bad.stdout
    assert "Traceback" not in bad.stderr
