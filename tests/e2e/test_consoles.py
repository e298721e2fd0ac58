"""Keycloak's own consoles in Chromium through the sidecar: the admin console and the account console.

The admin console (a React SPA, client security-admin-console with lightweight tokens) assigns and
unassigns a realm role; the account console enrols and removes an authenticator app; an OTP login
fails once and then succeeds. Each test checks the ledger records it caused, and cross-checks them
with Keycloak's own event store (tests/oracle.py). A screenshot goes to /tmp when a step fails.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, Page, async_playwright

from sidecar.harness.keycloak import KeycloakServer
from sidecar.harness.realm import REALM
from tests import oracle
from tests.capture import totp
from tests.fixtures_keycloak import ADMIN_PASSWORD, ADMIN_USERNAME
from tests.fixtures_sidecar import SidecarProcess

pytestmark = [pytest.mark.keycloak, pytest.mark.browser]

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
TIMEOUT_MS = 60_000  # the SPAs load slowly on a busy two-core machine


@asynccontextmanager
async def _chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@asynccontextmanager
async def _page(browser: Browser, name: str, secrets_seen: set[str]) -> AsyncIterator[Page]:
    """A fresh browser context; on failure a screenshot lands in /tmp/test_consoles-<name>.png."""
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    try:
        yield page
    except BaseException:
        await page.screenshot(path=f"/tmp/test_consoles-{name}.png", full_page=True)
        raise
    finally:
        for cookie in await context.cookies():
            secrets_seen.add(cookie["value"])
        await context.close()


async def _direct(keycloak: KeycloakServer, method: str, path: str, body: Any = None) -> tuple[int, Any, str]:
    """An admin REST call straight to Keycloak (setup and cleanup, outside what the ledger is asked about)."""
    token = await oracle.admin_token(keycloak.base_url, ADMIN_USERNAME, ADMIN_PASSWORD)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        async with http.request(method, f"{keycloak.base_url}/admin/realms/{REALM.name}/{path}", json=body) as resp:
            text = await resp.text()
            data = await resp.json(content_type=None) if text[:1] in "[{" else None
            return resp.status, data, resp.headers.get("Location", "")


async def _new_user(keycloak: KeycloakServer, prefix: str) -> tuple[str, str, str]:
    """A fresh user (username, password, id), created directly at Keycloak before the test's window opens."""
    username = f"{prefix}-{secrets.token_hex(3)}"
    password = f"Pw-{secrets.token_urlsafe(12)}!"
    status, _, location = await _direct(
        keycloak,
        "POST",
        "users",
        {
            "username": username,
            "enabled": True,
            "email": f"{username}@example.test",
            "emailVerified": True,
            "firstName": "Test",
            "lastName": prefix.capitalize(),
            "credentials": [{"type": "password", "value": password, "temporary": False}],
        },
    )
    assert status == 201, status
    return username, password, location.rsplit("/", 1)[-1]


async def _records_since(
    sidecar: SidecarProcess, start: int, want: set[str], wait_s: float = 15.0
) -> list[dict[str, Any]]:
    """Record events written since `start`, once every type in `want` is among them (or `wait_s` passes)."""
    deadline = time.monotonic() + wait_s
    while True:
        events = [r["event"] for r in sidecar.records()[start:]]
        if want <= {e["type"] for e in events} or time.monotonic() > deadline:
            return events
        await asyncio.sleep(0.2)


async def _oracle(
    keycloak: KeycloakServer, sidecar: SidecarProcess, since_ms: int, since_ns: int
) -> tuple[oracle.Match, list[dict[str, Any]], list[dict[str, Any]]]:
    token = await oracle.admin_token(keycloak.base_url, ADMIN_USERNAME, ADMIN_PASSWORD)
    user_events, admin_events = await oracle.keycloak_events(keycloak.base_url, token, REALM.name, since_ms)
    result = oracle.match(user_events, admin_events, sidecar.records(), REALM.name, since_ns)
    print(f"\noracle match table ({len(user_events)} user, {len(admin_events)} admin events):\n{result.render()}")
    return result, user_events, admin_events


async def _sign_in(page: Page, username: str, password: str) -> None:
    await page.fill("#username", username)
    await page.fill("#password", password)
    await page.click("#kc-login")


async def test_admin_console_assigns_and_unassigns_a_realm_role(
    keycloak: KeycloakServer, sidecar: SidecarProcess, secrets_seen: set[str]
) -> None:
    """In the admin console a realm role is assigned and unassigned; records name the admin (as Keycloak's authDetails do) and the user."""
    username, password, user_id = await _new_user(keycloak, "console")
    secrets_seen.add(password)
    since_ms, since_ns, start = oracle.now_ms() - 1, time.time_ns(), len(sidecar.records())
    async with _chromium() as browser, _page(browser, "admin", secrets_seen) as page:
        await page.goto(f"{sidecar.base_url}/admin/master/console/")
        await _sign_in(page, ADMIN_USERNAME, ADMIN_PASSWORD)
        await page.get_by_role("link", name="Manage realms").click()
        await page.get_by_role("link", name=REALM.name, exact=True).click()
        await page.get_by_role("link", name="Users", exact=True).click()
        search = page.get_by_placeholder("Search user")
        await search.fill(username)
        await search.press("Enter")
        await page.get_by_role("link", name=username, exact=True).click()
        await page.get_by_role("tab", name="Role mapping").click()
        await page.get_by_role("button", name="Assign role").first.click()
        await page.get_by_role("menuitem", name="Realm roles").click()
        dialog = page.get_by_role("dialog")
        await dialog.get_by_role("row").filter(has_text="operator").get_by_role("checkbox").check()
        await dialog.get_by_role("button", name="Assign", exact=True).click()
        assigned = page.get_by_role("row").filter(has_text="operator")
        await assigned.first.wait_for()
        await assigned.first.get_by_role("checkbox").check()
        await page.get_by_role("button", name="Unassign").first.click()
        await page.get_by_role("dialog").get_by_role("button", name="Remove").click()
        await assigned.first.wait_for(state="detached")

    events = await _records_since(sidecar, start, {"role.granted", "role.revoked"})
    outcomes = [
        e
        for e in events
        if e.get("details", {}).get("phase") == "outcome" and e["type"] in ("role.granted", "role.revoked")
    ]
    assert [e["type"] for e in outcomes] == ["role.granted", "role.revoked"], events
    result, _, admin_events = await _oracle(keycloak, sidecar, since_ms, since_ns)
    mappings = [e for e in admin_events if e["resourceType"] == "REALM_ROLE_MAPPING"]
    assert len(mappings) == 2
    admin_id = mappings[0]["authDetails"]["userId"]
    for e in outcomes:
        assert e["actor"]["id"] == admin_id and e["actor"]["username"] == ADMIN_USERNAME, e["actor"]
        assert e["client"] == "security-admin-console" and e["details"]["actor_verified"] is True
        assert e["target"]["id"] == user_id and e["target"]["kind"] == "user"
        assert e["details"]["roles"] == ["operator"] and e["outcome"] == "succeeded"
    assert outcomes[1]["details"]["path"] == f"ui-ext/role-mapping-delete/users/{user_id}", (
        "the console unassigns through the ui-ext endpoint"
    )
    assert result.table["CREATE REALM_ROLE_MAPPING -> role.granted"] == 1
    assert result.table["DELETE REALM_ROLE_MAPPING -> role.revoked"] == 1
    assert not result.unmatched and not result.phantom
    await _direct(keycloak, "DELETE", f"users/{user_id}")


async def test_account_console_otp_enrolment_login_and_removal(
    keycloak: KeycloakServer, sidecar: SidecarProcess, secrets_seen: set[str]
) -> None:
    """A user enrols an authenticator in the account console, logs in with a wrong then right code, and removes it; all recorded with the user as actor."""
    username, password, user_id = await _new_user(keycloak, "otp")
    secrets_seen.add(password)
    since_ms, since_ns, start = oracle.now_ms() - 1, time.time_ns(), len(sidecar.records())
    account = f"{sidecar.base_url}/realms/{REALM.name}/account/"
    async with _chromium() as browser:
        async with _page(browser, "enrol", secrets_seen) as page:
            await page.goto(account)
            await _sign_in(page, username, password)
            await page.get_by_role("button", name="Account security").click()
            await page.get_by_role("link", name="Signing in").click()
            await page.get_by_test_id("otp/create").click()
            await page.wait_for_selector("#kc-totp-settings-form")
            await page.click("#mode-manual")
            shown = (await page.inner_text("#kc-totp-secret-key")).strip()
            key = totp.secret_from_manual_key(shown)
            secrets_seen.update({shown.replace(" ", ""), key.decode("ascii", "replace")})
            enrolled_at = time.time()
            await page.fill("#totp", totp.code(key, enrolled_at))
            await page.fill("#userLabel", "test-phone")
            await page.click("#saveTOTPBtn")
            await page.get_by_test_id("otp/credential-list").get_by_role("button", name="Delete").wait_for()

        async with _page(browser, "otp-login", secrets_seen) as page:
            await page.goto(account)
            await _sign_in(page, username, password)
            await page.wait_for_selector("#otp")
            wrong = f"{(int(totp.code(key)) + 500_000) % 1_000_000:06d}"
            await page.fill("#otp", wrong)
            await page.click("#kc-login")
            await page.wait_for_selector("#input-error-otp")
            # a code is single-use: take the next period's (inside Keycloak's look-around window of one)
            await page.fill("#otp", totp.code(key, max(time.time(), enrolled_at + 30)))
            await page.click("#kc-login")
            await page.get_by_role("button", name="Account security").click()
            await page.get_by_role("link", name="Signing in").click()
            await page.get_by_test_id("otp/credential-list").get_by_role("button", name="Delete").click()
            await page.click("#kc-accept")
            await page.get_by_test_id("otp/create").wait_for()
            await (
                page.get_by_test_id("otp/credential-list")
                .get_by_role("button", name="Delete")
                .wait_for(state="detached")
            )

    want = {"credential.enrolled", "mfa.otp.failed", "mfa.otp.verified", "credential.removed"}
    events = [e for e in await _records_since(sidecar, start, want) if e.get("realm") == REALM.name]
    mine = [
        e
        for e in events
        if (e.get("actor") or {}).get("id") == user_id or (e.get("actor") or {}).get("username") == username
    ]
    kinds = [(e["type"], e["outcome"]) for e in mine]
    for kind in (
        ("credential.enrolled", "succeeded"),
        ("mfa.otp.failed", "failed"),
        ("mfa.otp.verified", "succeeded"),
        ("credential.removed", "succeeded"),
    ):
        assert kind in kinds, (kind, kinds)
    by_type = {e["type"]: e for e in mine}
    for name in ("credential.enrolled", "mfa.otp.verified", "credential.removed"):
        assert by_type[name]["actor"]["id"] == user_id and by_type[name]["client"] == "account-console"
    assert by_type["credential.enrolled"]["details"]["credential_type"] == "otp"
    assert by_type["mfa.otp.failed"]["actor"]["username"] == username
    otp_logins = [e for e in mine if e["type"] == "login.succeeded" and e["details"].get("step") == "otp"]
    assert len(otp_logins) == 1 and otp_logins[0]["actor"]["id"] == user_id
    order = [e["type"] for e in mine]
    assert order.index("mfa.otp.failed") < order.index("mfa.otp.verified") < order.index("credential.removed")

    result, user_events, _ = await _oracle(keycloak, sidecar, since_ms, since_ns)
    assert result.table["UPDATE_CREDENTIAL -> credential.enrolled"] == 1
    assert result.table["REMOVE_CREDENTIAL -> credential.removed"] == 1
    assert result.table["LOGIN -> login.succeeded"] >= 2
    # Keycloak's LOGIN_ERROR for a wrong OTP names the user by id only, while the sidecar knows the
    # username typed at the password step; pair them through the user's own id <-> username.
    otp_errors = [e for e in result.unmatched if e.get("type") == "LOGIN_ERROR"]
    for error in otp_errors:
        assert error["userId"] == user_id and not (error.get("details") or {}).get("username"), error
    assert result.table["LOGIN_ERROR -> mfa.otp.failed"] + len(otp_errors) == 1, result.render()
    others = [e for e in result.unmatched if e.get("type") != "LOGIN_ERROR"]
    assert not others and not result.phantom, result.render()
    assert (
        sum(1 for e in user_events if e["type"] == "LOGIN_ERROR" and e.get("userId") == user_id)
        == kinds.count(("mfa.otp.failed", "failed"))
        == 1
    )
    await _direct(keycloak, "DELETE", f"users/{user_id}")
