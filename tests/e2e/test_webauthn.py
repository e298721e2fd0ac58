"""WebAuthn registration through the sidecar, with Chromium's CDP virtual authenticator.

Chromium refuses WebAuthn on an IP-address origin, so this module runs its own Keycloak whose public
URL is http://localhost:<sidecar port> and its own sidecar process in front of it (loopback only).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import Dialog, Request, async_playwright

from sidecar.harness.keycloak import KeycloakServer, ensure_distribution, free_port
from sidecar.harness.realm import REALM
from tests import oracle
from tests.e2e.test_slice import CHROMIUM_ARGS
from tests.fixtures_keycloak import ADMIN_PASSWORD, ADMIN_USERNAME
from tests.fixtures_sidecar import ledger_records, sidecar_process

pytestmark = [pytest.mark.keycloak, pytest.mark.browser]

ORIGIN = "webauthn.test/ledger"


@dataclass
class Stack:
    keycloak: KeycloakServer
    public_url: str
    data_dir: Path
    log_file: Path

    def records(self) -> list[dict[str, Any]]:
        return ledger_records(self.data_dir)


def _ports(n: int) -> list[int]:
    chosen: list[int] = []
    while len(chosen) < n:
        port = free_port()
        if port not in chosen:
            chosen.append(port)
    return chosen


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A private Keycloak (public URL http://localhost:<port>) and a sidecar on that port."""
    sidecar_port, http_port, mgmt_port = _ports(3)
    root = tmp_path_factory.mktemp("webauthn")
    public_url = f"http://localhost:{sidecar_port}"
    server = KeycloakServer(
        ensure_distribution(),
        root / "kc",
        http_port=http_port,
        management_port=mgmt_port,
        public_url=public_url,
        admin_username=ADMIN_USERNAME,
        admin_password=ADMIN_PASSWORD,
        realm_files=[REALM.file],
        log_file=root / "keycloak.log",
    )
    data, store, log_file = root / "ledger", root / "store", root / "sidecar.log"
    with server:
        args = [
            "--init",
            "--origin",
            ORIGIN,
            "--upstream",
            server.base_url,
            "--data",
            str(data),
            "--store",
            str(store),
            "--listen",
            f"127.0.0.1:{sidecar_port}",
            "--log-level",
            "DEBUG",
        ]
        with sidecar_process(args, sidecar_port, log_file):
            yield Stack(server, public_url, data, log_file)


async def _ensure_webauthn_register(base: str, token: str) -> dict[str, Any]:
    url = f"{base}/admin/realms/{REALM.name}/authentication/required-actions/webauthn-register"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        async with http.get(url) as resp:
            assert resp.status == 200, await resp.text()
            action: dict[str, Any] = await resp.json()
        if not action.get("enabled"):
            async with http.put(url, json={**action, "enabled": True}) as resp:
                assert resp.status == 204, await resp.text()
            action["enabled"] = True
    return action


async def _require_webauthn_as_second_factor(base: str, token: str) -> list[dict[str, Any]]:
    """Make the browser flow's conditional 2FA sub-flow offer WebAuthn (alternative to OTP) to users who have a key."""
    url = f"{base}/admin/realms/{REALM.name}/authentication/flows/browser/executions"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        async with http.get(url) as resp:
            executions: list[dict[str, Any]] = await resp.json()
        found = [e for e in executions if e.get("providerId") == "webauthn-authenticator"]
        if not found:
            sub = next(e for e in executions if e.get("authenticationFlow") and "onditional" in e["displayName"])
            async with http.post(
                f"{base}/admin/realms/{REALM.name}/authentication/flows/{sub['displayName']}/executions/execution",
                json={"provider": "webauthn-authenticator"},
            ) as resp:
                assert resp.status == 201, await resp.text()
            async with http.get(url) as resp:
                executions = await resp.json()
            found = [e for e in executions if e.get("providerId") == "webauthn-authenticator"]
        if found[0]["requirement"] != "ALTERNATIVE":
            async with http.put(url, json={**found[0], "requirement": "ALTERNATIVE"}) as resp:
                assert resp.status in (202, 204), await resp.text()
        async with http.get(url) as resp:
            executions = await resp.json()
    return executions


async def test_webauthn_registration_is_recorded(stack: Stack) -> None:
    """Alice registers a WebAuthn key (virtual authenticator) through the sidecar and then logs in with it as second factor; the ledger records both as Keycloak does, without any WebAuthn form value."""
    token = await oracle.admin_token(stack.keycloak.base_url, ADMIN_USERNAME, ADMIN_PASSWORD)
    action = await _ensure_webauthn_register(stack.keycloak.base_url, token)
    print(f"\nrequired action webauthn-register: {action}")
    flow = await _require_webauthn_as_second_factor(stack.keycloak.base_url, token)
    print("browser flow:", [(e["level"], e["displayName"], e.get("providerId"), e["requirement"]) for e in flow])
    since_ms, start = oracle.now_ms() - 1, len(stack.records())
    app = web.Application()

    async def landed(_: web.Request) -> web.Response:
        return web.Response(text="callback")

    app.router.add_get("/cb", landed)
    runner = web.AppRunner(app)
    await runner.setup()
    cb_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", cb_port).start()  # the client's redirect target, so pages settle
    callback = f"http://localhost:{cb_port}/cb"
    auth = (
        f"{stack.public_url}/realms/{REALM.name}/protocol/openid-connect/auth?client_id={REALM.app.client_id}"
        f"&redirect_uri={callback}&response_type=code&scope=openid&kc_action=webauthn-register"
    )
    posts: list[tuple[str, str, dict[str, str]]] = []
    redirected: list[str] = []
    responses: list[tuple[str, int]] = []

    def on_request(req: Request) -> None:
        if req.url.startswith(callback):
            redirected.append(req.url)
        if req.method == "POST":
            try:
                form = req.post_data_json or {}
            except Exception:  # not a form body
                form = {}
            posts.append((req.url, req.post_data or "", {k: str(v) for k, v in dict(form).items()}))

    pending: set[asyncio.Future[None]] = set()

    def on_dialog(dialog: Dialog) -> None:  # Keycloak asks for the key's label with window.prompt()
        pending.add(asyncio.ensure_future(dialog.accept("test-key")))

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path="/usr/bin/chromium", args=[*CHROMIUM_ARGS, "--host-resolver-rules=MAP localhost 127.0.0.1"]
        )
        try:
            page = await browser.new_page()
            cdp = await page.context.new_cdp_session(page)
            await cdp.send("WebAuthn.enable")
            await cdp.send(
                "WebAuthn.addVirtualAuthenticator",
                {
                    "options": {
                        "protocol": "ctap2",
                        "transport": "internal",
                        "hasResidentKey": True,
                        "hasUserVerification": True,
                        "isUserVerified": True,
                        "automaticPresenceSimulation": True,
                    }
                },
            )
            page.on("request", on_request)
            page.on("response", lambda r: responses.append((r.url, r.status)) if r.request.method == "POST" else None)
            page.on("dialog", on_dialog)
            await page.goto(auth)
            await page.fill("#username", REALM.alice.username)
            await page.fill("#password", REALM.alice.password)
            await page.click("#kc-login")
            register = page.locator("#registerWebAuthn")
            await register.wait_for(timeout=15000)
            await page.wait_for_load_state("networkidle")  # the button's handler comes from a module script
            for _ in range(3):  # a click that lands before the handler is attached does nothing: click again
                await register.click()
                for _ in range(50):
                    if redirected or any("execution=webauthn-register" in u for u, _, _ in posts):
                        break
                    await asyncio.sleep(0.1)
                else:
                    continue
                break
            for _ in range(100):
                if redirected:
                    break
                await asyncio.sleep(0.1)
            if not redirected:
                print(await page.content())
            assert redirected and "code=" in redirected[0], "the registration did not end in a code redirect"
            # a fresh login: password, then the key just registered as the second factor
            await page.context.clear_cookies()
            registered, n_posts = redirected[0], len(posts)
            redirected.clear()
            await page.wait_for_url(lambda u: u.startswith(callback), timeout=10000)
            await page.wait_for_load_state("load")
            assert await page.text_content("body") == "callback"
            await page.goto(auth.replace("&kc_action=webauthn-register", "&state=s2"))
            await page.fill("#username", REALM.alice.username)
            await page.fill("#password", REALM.alice.password)
            await page.click("#kc-login")
            button = page.locator("#authenticateWebAuthnButton")
            for _ in range(150):
                if redirected or await button.count():
                    break
                await asyncio.sleep(0.1)
            if not redirected:
                await page.wait_for_load_state("networkidle")
                print("second-factor page:", await page.get_attribute("body", "data-page-id"))
                for _ in range(3):
                    if await button.count():
                        await button.click()
                    for _ in range(50):
                        if redirected or any("clientDataJSON" in f for _, _, f in posts[n_posts:]):
                            break
                        await asyncio.sleep(0.1)
                    else:
                        continue
                    break
                for _ in range(100):
                    if redirected:
                        break
                    await asyncio.sleep(0.1)
            if not redirected:
                print(await page.content())
            login_redirect = redirected[0] if redirected else ""
            redirected[:] = [registered]
        finally:
            await browser.close()
            await runner.cleanup()
    print("POSTs:", [(u, sorted(f)) for u, _, f in posts])
    print("POST responses:", responses)
    print(
        "redirect:",
        [
            u.split("?", 1)[0] + "?" + "&".join(p.split("=", 1)[0] for p in u.split("?", 1)[1].split("&"))
            for u in redirected
            if "?" in u
        ],
    )
    assert redirected and "code=" in redirected[0], "the registration did not end in a code redirect"
    webauthn_post = next(f for u, _, f in posts if "execution=webauthn-register" in u)
    assert webauthn_post.get("clientDataJSON") and webauthn_post.get("attestationObject")

    assert "code=" in login_redirect, "the password + WebAuthn login did not end in a code redirect"
    assertion = next(f for u, _, f in posts if "/login-actions/authenticate" in u and "clientDataJSON" in f)
    print("WebAuthn assertion form fields:", sorted(assertion))

    deadline = time.monotonic() + 10
    while True:
        new = [r["event"] for r in stack.records()[start:]]
        enrolled = [e for e in new if e["type"] == "credential.enrolled"]
        logins = [e for e in new if e["type"] == "login.succeeded"]
        if (enrolled and len(logins) >= 2) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    for e in new:
        print("ledger:", e)
    assert enrolled, [e["type"] for e in new]
    rec = enrolled[0]
    assert rec["outcome"] == "succeeded" and rec["details"]["credential_type"] == "webauthn", rec
    assert rec["actor"]["username"] == REALM.alice.username and rec["actor"].get("id"), rec["actor"]
    second = [e for e in logins if e["details"].get("step") == "webauthn"]
    assert second, [e["details"] for e in logins]
    assert second[0]["actor"]["username"] == REALM.alice.username and second[0]["actor"]["id"] == rec["actor"]["id"]
    assert not [e for e in new if e["outcome"] != "succeeded"], "no step of either flow failed"

    user_events, _ = await oracle.keycloak_events(stack.keycloak.base_url, token, REALM.name, since_ms)
    for ev in user_events:
        print("keycloak:", ev["type"], ev.get("details"))
    updates = [
        ev
        for ev in user_events
        if ev["type"] == "UPDATE_CREDENTIAL" and ev.get("details", {}).get("credential_type") == "webauthn"
    ]
    assert updates and updates[0]["userId"] == rec["actor"]["id"]
    assert len([ev for ev in user_events if ev["type"] == "LOGIN" and ev["userId"] == rec["actor"]["id"]]) == 2

    secrets = {webauthn_post[k] for k in ("clientDataJSON", "attestationObject") if webauthn_post.get(k)}
    secrets |= {assertion[k] for k in ("clientDataJSON", "authenticatorData", "signature") if assertion.get(k)}
    for path in stack.data_dir.rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            for s in secrets:
                assert s.encode() not in blob, f"{path} holds a WebAuthn form value"
