"""Nothing Keycloak routes escapes capture (issue 9), on the real Keycloak through the sidecar.

Each test drives one surface through the sidecar process and uses Keycloak's own
event store and live state as the oracle (tests/oracle.py): every Keycloak event
of the test's window has its ledger record, and no record claims a success
Keycloak did not apply.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from sidecar.harness.keycloak import KeycloakServer
from sidecar.harness.realm import REALM
from tests import oracle
from tests.e2e.rawhttp import SPELLINGS, Answer, RawClient, spell, target_of
from tests.fixtures_keycloak import ADMIN_PASSWORD, ADMIN_USERNAME
from tests.fixtures_sidecar import SidecarProcess

pytestmark = [pytest.mark.keycloak, pytest.mark.timeout(600)]

OIDC = f"/realms/{REALM.name}/protocol/openid-connect"
CALLBACK = "http://127.0.0.1:9/cb"


# ---------------------------------------------------------------------------------------------- helpers
async def direct_admin(keycloak: KeycloakServer, method: str, path: str, body: Any = None) -> tuple[int, Any, str]:
    """An admin REST call straight to Keycloak (setup outside the window the ledger is asked about)."""
    token = await oracle.admin_token(keycloak.base_url, ADMIN_USERNAME, ADMIN_PASSWORD)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        async with http.request(method, f"{keycloak.base_url}/admin/realms/{REALM.name}/{path}", json=body) as resp:
            text = await resp.text()
            data = await resp.json(content_type=None) if text[:1] in "[{" else None
            return resp.status, data, resp.headers.get("Location", "")


async def new_user(keycloak: KeycloakServer, prefix: str, **extra: Any) -> tuple[str, str, str]:
    """A fresh user (username, password, id), created directly at Keycloak."""
    username = f"{prefix}-{secrets.token_hex(4)}"
    password = f"Pw-{secrets.token_urlsafe(12)}!"
    status, _, location = await direct_admin(
        keycloak,
        "POST",
        "users",
        {
            "username": username,
            "enabled": True,
            "email": f"{username}@example.test",
            "emailVerified": True,
            "firstName": "Surface",
            "lastName": "Test",
            "credentials": [{"type": "password", "value": password, "temporary": False}],
            **extra,
        },
    )
    assert status == 201, status
    return username, password, location.rsplit("/", 1)[-1]


async def match_window(
    keycloak: KeycloakServer, sidecar: SidecarProcess, since_ms: int, since_ns: int
) -> tuple[oracle.Match, list[dict[str, Any]], list[dict[str, Any]]]:
    await asyncio.sleep(0.5)
    token = await oracle.admin_token(keycloak.base_url, ADMIN_USERNAME, ADMIN_PASSWORD)
    user_events, admin_events = await oracle.keycloak_events(keycloak.base_url, token, REALM.name, since_ms)
    result = oracle.match(user_events, admin_events, sidecar.records(), REALM.name, since_ns)
    print(f"\noracle ({len(user_events)} user, {len(admin_events)} admin events):\n{result.render()}")
    return result, user_events, admin_events


def events_since(sidecar: SidecarProcess, since_ns: int) -> list[dict[str, Any]]:
    """Capture records since `since_ns` (not the drift monitor's, which reports the direct setup calls, nor the
    state reader's own logins)."""
    return [
        r["event"]
        for r in sidecar.records()
        if int(r["ts"]) >= since_ns
        and r["event"]["type"] not in ("drift.detected", "state.snapshot")
        and r["event"].get("details", {}).get("via") != "sidecar-state-reader"
    ]


# ---------------------------------------------------------------------------------------------- gap 1
Spell = Callable[[str], str]


async def _token(http: RawClient, spelled: Spell, form: dict[str, str], realm: str = REALM.name) -> Answer:
    return await http.send("POST", spelled(f"/realms/{realm}/protocol/openid-connect/token"), form=form)


def _password_form(username: str, password: str) -> dict[str, str]:
    return {
        "grant_type": "password",
        "client_id": REALM.app.client_id,
        "client_secret": REALM.app.secret or "",
        "username": username,
        "password": password,
        "scope": "openid",
    }


async def _tokens(base: str) -> dict[str, Any]:
    answer = await _token(RawClient(base), lambda t: t, _password_form(REALM.bob.username, REALM.bob.password))
    assert answer.status == 200, answer.text
    data: dict[str, Any] = json.loads(answer.body)
    return data


async def _login_page(http: RawClient) -> Answer:
    query = f"client_id={REALM.app.client_id}&redirect_uri={CALLBACK}&response_type=code&scope=openid&state=s1"
    page = await http.send("GET", f"{OIDC}/auth?{query}")
    assert page.status == 200, page.status
    return page


class Scenarios:
    """One Keycloak identity endpoint each; `spelled` rewrites the target of the request under test.

    Password hashing is most of Keycloak's cost here, so what can be shared is: one refresh-token
    chain, one browser session for the SSO logins, one admin token, one user whose password is
    changed again and again by the required action.
    """

    def __init__(self, keycloak: KeycloakServer, sidecar: SidecarProcess) -> None:
        self.kc, self.sc = keycloak, sidecar
        self.refresh_tokens: dict[str, str] = {}
        self.sso: dict[str, RawClient] = {}
        self.carol: dict[str, str] = {}
        self.pending: tuple[str, str, str] = ("", "", "")
        self.new_passwords: list[str] = []

    async def password_ok(self, base: str, spelled: Spell) -> Answer:
        return await _token(RawClient(base), spelled, _password_form(REALM.alice.username, REALM.alice.password))

    async def password_bad(self, base: str, spelled: Spell) -> Answer:
        return await _token(RawClient(base), spelled, _password_form(REALM.alice.username, "not-her-password"))

    async def client_credentials(self, base: str, spelled: Spell) -> Answer:
        return await _token(RawClient(base), spelled, _robot_form())

    async def refresh(self, base: str, spelled: Spell) -> Answer:
        if base not in self.refresh_tokens:
            self.refresh_tokens[base] = (await _tokens(base))["refresh_token"]
        answer = await _token(
            RawClient(base),
            spelled,
            {
                "grant_type": "refresh_token",
                "client_id": REALM.app.client_id,
                "client_secret": REALM.app.secret or "",
                "refresh_token": self.refresh_tokens[base],
            },
        )
        if answer.status == 200:
            self.refresh_tokens[base] = json.loads(answer.body)["refresh_token"]
        return answer

    async def revoke(self, base: str, spelled: Spell) -> Answer:
        issued = await _token(RawClient(base), lambda t: t, _robot_form())
        return await RawClient(base).send(
            "POST",
            spelled(f"{OIDC}/revoke"),
            form={**_robot_form(), "token": json.loads(issued.body)["access_token"], "token_type_hint": "access_token"},
        )

    async def logout(self, base: str, spelled: Spell) -> Answer:
        tokens = await _tokens(base)
        return await RawClient(base).send(
            "POST",
            spelled(f"{OIDC}/logout"),
            form={
                "client_id": REALM.app.client_id,
                "client_secret": REALM.app.secret or "",
                "refresh_token": tokens["refresh_token"],
            },
        )

    async def form_login(self, base: str, spelled: Spell) -> Answer:
        http = RawClient(base)
        page = await _login_page(http)
        action = page.form_action()
        assert action
        return await http.send(
            "POST",
            spelled(target_of(action)),
            form={"username": REALM.dave.username, "password": REALM.dave.password, "credentialId": ""},
        )

    async def sso_auth(self, base: str, spelled: Spell) -> Answer:
        if base not in self.sso:
            http = self.sso[base] = RawClient(base)
            done = await _password_step(http, REALM.dave.username, REALM.dave.password)
            assert done.status == 302 and "code" in done.location_params(), done.status
        query = f"client_id={REALM.app.client_id}&redirect_uri={CALLBACK}&response_type=code&scope=openid&state=s2"
        return await self.sso[base].send("GET", spelled(f"{OIDC}/auth?{query}"))

    async def required_action(self, base: str, spelled: Spell) -> Answer:
        username, password, uid = self.pending
        # through the sidecar (an UPDATE USER Keycloak records must have its record too)
        pending = await RawClient(base).send(
            "PUT",
            f"/admin/realms/{REALM.name}/users/{uid}",
            json.dumps({"requiredActions": ["UPDATE_PASSWORD"]}).encode(),
            {"Authorization": f"Bearer {await self._carol(base)}", "Content-Type": "application/json"},
        )
        assert pending.status == 204, pending.status
        http = RawClient(base)
        step = await _password_step(http, username, password)
        assert step.status == 302 and "required-action" in step.location, (step.status, step.location)
        form_page = await http.send("GET", target_of(step.location))
        post_to = form_page.form_action()
        assert post_to, form_page.status
        new_password = f"New-{secrets.token_urlsafe(12)}!"
        self.new_passwords.append(new_password)
        answer = await http.send(
            "POST", spelled(target_of(post_to)), form={"password-new": new_password, "password-confirm": new_password}
        )
        if answer.status == 302:
            self.pending = (username, new_password, uid)
        return answer

    async def _carol(self, base: str) -> str:
        if base not in self.carol:
            tokens = await _token(
                RawClient(base),
                lambda t: t,
                {
                    "grant_type": "password",
                    "client_id": "admin-cli",
                    "username": REALM.carol.username,
                    "password": REALM.carol.password,
                },
            )
            self.carol[base] = json.loads(tokens.body)["access_token"]
        return self.carol[base]

    async def admin_grant(self, base: str, spelled: Spell) -> Answer:
        token = await self._carol(base)
        _, user, _ = await direct_admin(self.kc, "GET", f"users?username={REALM.bob.username}&exact=true")
        _, role, _ = await direct_admin(self.kc, "GET", "roles/viewer")
        body = json.dumps([{"id": role["id"], "name": role["name"]}]).encode()
        path = f"/admin/realms/{REALM.name}/users/{user[0]['id']}/role-mappings/realm"
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        answer = await RawClient(base).send("POST", spelled(path), body, headers)
        await RawClient(base).send("DELETE", path, body, headers)
        return answer

    async def admin_login(self, base: str, spelled: Spell) -> Answer:
        """An admin logs in at a spelled token endpoint; the change that follows must name them."""
        login = await _token(
            RawClient(base),
            spelled,
            {
                "grant_type": "password",
                "client_id": "admin-cli",
                "username": REALM.carol.username,
                "password": REALM.carol.password,
            },
        )
        if login.status != 200:
            return login
        token = json.loads(login.body)["access_token"]
        _, user, _ = await direct_admin(self.kc, "GET", f"users?username={REALM.alice.username}&exact=true")
        _, role, _ = await direct_admin(self.kc, "GET", "roles/auditor")
        body = json.dumps([{"id": role["id"], "name": role["name"]}]).encode()
        path = f"/admin/realms/{REALM.name}/users/{user[0]['id']}/role-mappings/realm"
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        for method in ("POST", "DELETE"):
            await RawClient(base).send(method, path, body, headers)
        return login


def _robot_form() -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_id": REALM.robot.client_id,
        "client_secret": REALM.robot.secret or "",
    }


async def _password_step(http: RawClient, username: str, password: str) -> Answer:
    page = await _login_page(http)
    action = page.form_action()
    assert action
    return await http.send(
        "POST", target_of(action), form={"username": username, "password": password, "credentialId": ""}
    )


# scenario -> (the endpoint it exercises, a cheap request to that endpoint: method, target, form)
SCENARIOS: dict[str, str] = {
    "password_ok": "token",
    "password_bad": "token",
    "client_credentials": "token",
    "refresh": "token",
    "admin_login": "token",
    "revoke": "revoke",
    "logout": "logout",
    "form_login": "authenticate",
    "sso_auth": "auth",
    "required_action": "required-action",
    "admin_grant": "admin",
}
PROBES: dict[str, tuple[str, str]] = {
    "token": ("POST", f"{OIDC}/token"),
    "revoke": ("POST", f"{OIDC}/revoke"),
    "logout": ("POST", f"{OIDC}/logout"),
    "authenticate": ("POST", f"/realms/{REALM.name}/login-actions/authenticate"),
    "required-action": ("POST", f"/realms/{REALM.name}/login-actions/required-action"),
    "auth": ("GET", f"{OIDC}/auth?client_id={REALM.app.client_id}&redirect_uri={CALLBACK}&response_type=code"),
    "admin": ("POST", f"/admin/realms/{REALM.name}/users/{{bob}}/role-mappings/realm"),
}
_PAGE = re.compile(r'data-page-id="([^"]+)"')


def _signature(answer: Answer) -> tuple[int, str]:
    """What a cheap request's answer says about routing: status and the error or page it names."""
    text = answer.text
    if (m := _PAGE.search(text)) is not None:
        return answer.status, m.group(1)
    return answer.status, text[:120] if text[:1] == "{" else answer.headers.get("Content-Type", "")


async def test_every_spelling_keycloak_routes_is_recorded(
    keycloak: KeycloakServer, sidecar: SidecarProcess, secrets_seen: set[str]
) -> None:
    """Each identity endpoint in every spelling: probed directly and through the sidecar with the same answers, and every Keycloak event of the spellings Keycloak routes has its record."""
    answered: dict[str, list[str]] = {}
    _, bob, _ = await direct_admin(keycloak, "GET", f"users?username={REALM.bob.username}&exact=true")

    async def probe(endpoint: str, method: str, template: str) -> None:
        target = template.replace("{bob}", bob[0]["id"])  # a real user: Keycloak looks the user up first
        plain = None
        for how in SPELLINGS:
            headers = None
            if endpoint == "admin":  # the admin API answers 401 to any path without a (fresh) token
                headers = {
                    "Authorization": "Bearer "
                    + await oracle.admin_token(keycloak.base_url, ADMIN_USERNAME, ADMIN_PASSWORD)
                }
            spelled = spell(target, how, keycloak.base_url)
            direct = _signature(await RawClient(keycloak.base_url).send(method, spelled, form={}, headers=headers))
            via = _signature(
                await RawClient(sidecar.base_url).send(
                    method, spell(target, how, sidecar.base_url), form={}, headers=headers
                )
            )
            assert via == direct, (endpoint, how, direct, via)
            plain = direct if how == "plain" else plain
            if direct == plain:
                answered.setdefault(endpoint, []).append(how)

    await asyncio.gather(*(probe(endpoint, method, template) for endpoint, (method, template) in PROBES.items()))
    print(f"\nspellings Keycloak routes like the plain one: {answered}")
    # Keycloak routes more than the plain spelling of every endpoint (at least the trailing slash):
    assert all("slash" in spellings for spellings in answered.values()), answered
    scenarios = Scenarios(keycloak, sidecar)
    scenarios.pending = await new_user(keycloak, "spell")
    secrets_seen.add(scenarios.pending[1])
    await asyncio.sleep(1.1)
    since_ms, since_ns = oracle.now_ms(), time.time_ns()

    async def run(name: str) -> None:
        for how in answered[SCENARIOS[name]]:
            await getattr(scenarios, name)(sidecar.base_url, lambda t, h=how: spell(t, h, sidecar.base_url))

    await asyncio.gather(*(run(name) for name in SCENARIOS))  # endpoints side by side, spellings in turn
    secrets_seen.update(scenarios.new_passwords)
    result, user_events, admin_events = await match_window(keycloak, sidecar, since_ms, since_ns)
    assert not result.unmatched, f"Keycloak events without a record: {result.render()}"
    assert not result.phantom, f"records of successes Keycloak did not see: {result.render()}"
    kinds = {e["type"] for e in user_events}
    assert {"LOGIN", "LOGIN_ERROR", "CLIENT_LOGIN", "REVOKE_GRANT", "LOGOUT", "UPDATE_PASSWORD"} <= kinds, kinds
    assert len([e for e in admin_events if e["resourceType"] == "REALM_ROLE_MAPPING"]) >= 4 * len(answered["admin"])
    records = events_since(sidecar, since_ns)
    # Keycloak does not store REFRESH_TOKEN by default: the refreshes are checked on the records alone
    refreshed = [e for e in records if e["type"] == "token.refreshed" and e["outcome"] == "succeeded"]
    assert len(refreshed) == len(answered["token"]), len(refreshed)
    # every admin change made after a login at a spelled token endpoint names the admin
    carol = [e for e in records if e["type"] in ("role.granted", "role.revoked")]
    assert carol and all(
        (e.get("actor") or {}).get("username") == REALM.carol.username and e["actor"].get("id") for e in carol
    ), [e.get("actor") for e in carol]


# ---------------------------------------------------------------------------------------------- admin surfaces
class Carol:
    """Carol (realm admin of the test realm) through the sidecar, logged in with admin-cli like kcadm."""

    def __init__(self, sidecar: SidecarProcess) -> None:
        self.base = sidecar.base_url
        self.token = ""
        self.renew_at = 0.0

    async def login(self) -> Carol:
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{self.base}{OIDC}/token",
                data={
                    "grant_type": "password",
                    "client_id": "admin-cli",
                    "username": REALM.carol.username,
                    "password": REALM.carol.password,
                },
            ) as resp:
                data = await resp.json()
                self.token = data["access_token"]
        # A new login well before the token expires (a long workload on a loaded machine outlives one token).
        self.renew_at = time.monotonic() + max(5.0, float(data.get("expires_in", 60)) / 2)
        return self

    async def call(self, method: str, url: str, body: Any = None) -> tuple[int, Any]:
        if time.monotonic() >= self.renew_at:
            await self.login()
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.token}"}) as http:
            async with http.request(method, f"{self.base}{url}", json=body) as resp:
                text = await resp.text()
                return resp.status, (await resp.json(content_type=None)) if text[:1] in "[{" else text

    async def admin(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return await self.call(
            method, f"/admin/realms/{REALM.name}/{path}" if path else f"/admin/realms/{REALM.name}", body
        )


def outcomes(records: list[dict[str, Any]], etype: str) -> list[dict[str, Any]]:
    return [e for e in records if e["type"] == etype and e.get("details", {}).get("phase") != "intent"]


async def test_dcr_writes_are_recorded_like_admin_writes(
    keycloak: KeycloakServer, sidecar: SidecarProcess, secrets_seen: set[str]
) -> None:
    """Dynamic Client Registration with an admin token: create, update and delete (also of a non-DCR client) each get an intent and an outcome record matching Keycloak's CLIENT_* events."""
    victim = f"plain-client-{secrets.token_hex(3)}"
    assert (await direct_admin(keycloak, "POST", "clients", {"clientId": victim, "publicClient": True}))[0] == 201
    carol = await Carol(sidecar).login()
    await asyncio.sleep(1.1)
    since_ms, since_ns = oracle.now_ms(), time.time_ns()
    name = f"dcr-{secrets.token_hex(3)}"
    dcr = f"/realms/{REALM.name}/clients-registrations/default"
    status, created = await carol.call("POST", dcr, {"clientId": name, "publicClient": False})
    assert status == 201, created
    secrets_seen.update(str(created.get(k)) for k in ("secret", "registrationAccessToken") if created.get(k))
    assert (await carol.call("PUT", f"{dcr}/{name}", {"clientId": name, "description": "changed"}))[0] == 200
    assert (await carol.call("DELETE", f"{dcr}/{name}"))[0] == 204
    assert (await carol.call("DELETE", f"{dcr}/{victim}"))[0] == 204
    result, user_events, _ = await match_window(keycloak, sidecar, since_ms, since_ns)
    assert not result.unmatched and not result.phantom, result.render()
    assert [e["type"] for e in user_events if e["type"].startswith("CLIENT_")] == [
        "CLIENT_DELETE",
        "CLIENT_DELETE",
        "CLIENT_UPDATE",
        "CLIENT_REGISTER",
    ]
    records = events_since(sidecar, since_ns)
    intents = [e for e in records if e.get("details", {}).get("phase") == "intent"]
    assert [e["type"] for e in intents] == ["client.created", "client.updated", "client.deleted", "client.deleted"]
    made = outcomes(records, "client.created")
    assert made[0]["target"] == {"id": created["id"], "client": name, "kind": "client"}
    assert made[0]["actor"]["username"] == REALM.carol.username
    assert [e["target"]["client"] for e in outcomes(records, "client.deleted")] == [name, victim]
    # live state: both clients are gone
    _, found, _ = await direct_admin(keycloak, "GET", f"clients?clientId={victim}")
    assert found == []


async def test_partial_import_records_every_object(keycloak: KeycloakServer, sidecar: SidecarProcess) -> None:
    """partialImport gives one record per object Keycloak reports added, overwritten or skipped, with the roles and groups a user came with; skipped ones are `unchanged`."""
    tag = secrets.token_hex(3)
    body: dict[str, Any] = {
        "ifResourceExists": "SKIP",
        "users": [{"username": f"pi-user-{tag}", "enabled": True, "realmRoles": ["viewer"], "groups": ["/ops"]}],
        "clients": [{"clientId": f"pi-client-{tag}", "publicClient": True}],
        "groups": [{"name": f"pi-group-{tag}", "path": f"/pi-group-{tag}"}],
        "roles": {"realm": [{"name": f"pi-role-{tag}"}], "client": {REALM.app.client_id: [{"name": f"pi-cr-{tag}"}]}},
    }
    carol = await Carol(sidecar).login()
    await asyncio.sleep(1.1)
    since_ms, since_ns = oracle.now_ms(), time.time_ns()
    answers = []
    for mode in ("SKIP", "SKIP", "OVERWRITE"):
        status, answer = await carol.admin("POST", "partialImport", {**body, "ifResourceExists": mode})
        assert status == 200, answer
        answers.append(answer)
    result, _, admin_events = await match_window(keycloak, sidecar, since_ms, since_ns)
    assert not result.unmatched and not result.phantom, result.render()
    records = events_since(sidecar, since_ns)
    per_object = [e for e in records if e.get("details", {}).get("via") == "partialImport"]
    assert len(per_object) == sum(len(a["results"]) for a in answers)
    assert len([e for e in per_object if e["outcome"] == "succeeded"]) == len(admin_events)
    user = next(e for e in per_object if e["type"] == "user.created" and e["outcome"] == "succeeded")
    assert user["target"]["username"] == f"pi-user-{tag}" and user["details"]["realm_roles"] == ["viewer"]
    assert user["details"]["groups"] == ["/ops"] and user["actor"]["username"] == REALM.carol.username
    skipped = [e for e in per_object if e["details"]["import_action"] == "SKIPPED"]
    assert len(skipped) == answers[1]["skipped"] == 5 and all(e["outcome"] == "unchanged" for e in skipped)
    assert {e["type"] for e in per_object} == {
        "user.created",
        "user.updated",
        "client.created",
        "client.updated",
        "group.created",
        "group.updated",
        "role.created",
        "role.updated",
    }


async def test_noop_membership_is_recorded_as_unchanged(keycloak: KeycloakServer, sidecar: SidecarProcess) -> None:
    """Joining a group the user is in, or leaving one they are not in, is recorded with outcome `unchanged` (Keycloak records no event)."""
    _, _, uid = await new_user(keycloak, "noop")
    _, groups, _ = await direct_admin(keycloak, "GET", "groups?search=ops&exact=true")
    ops = next(g for g in groups if g["name"] == "ops")
    _, groups, _ = await direct_admin(keycloak, "GET", "groups?search=devs&exact=true")
    devs = next(g for g in groups if g["name"] == "devs")
    assert (await direct_admin(keycloak, "PUT", f"users/{uid}/groups/{ops['id']}"))[0] == 204
    carol = await Carol(sidecar).login()
    await asyncio.sleep(1.1)
    since_ms, since_ns = oracle.now_ms(), time.time_ns()
    assert (await carol.admin("PUT", f"users/{uid}/groups/{ops['id']}"))[0] == 204  # already a member
    assert (await carol.admin("DELETE", f"users/{uid}/groups/{devs['id']}"))[0] == 204  # not a member
    assert (await carol.admin("PUT", f"users/{uid}/groups/{devs['id']}"))[0] == 204  # a real change
    result, _, admin_events = await match_window(keycloak, sidecar, since_ms, since_ns)
    assert not result.unmatched and not result.phantom, result.render()
    assert [(e["operationType"], e["resourceType"]) for e in admin_events] == [("CREATE", "GROUP_MEMBERSHIP")]
    records = events_since(sidecar, since_ns)
    assert [(e["type"], e["outcome"]) for e in records if e["details"].get("phase") == "outcome"] == [
        ("group.joined", "unchanged"),
        ("group.left", "unchanged"),
        ("group.joined", "succeeded"),
    ]
    _, now, _ = await direct_admin(keycloak, "GET", f"users/{uid}/groups")
    assert sorted(g["path"] for g in now) == ["/devs", "/ops"]


# ---------------------------------------------------------------------------------------------- login gaps
_HIDDEN = re.compile(r'name="totpSecret"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*name="totpSecret"')


async def test_otp_step_followed_by_a_required_action_keeps_mfa(
    keycloak: KeycloakServer, sidecar: SidecarProcess, secrets_seen: set[str]
) -> None:
    """An OTP step that passes into a required action (new password) is recorded as `mfa.otp.verified` before the login's own record."""
    from tests.capture import totp

    username, password, uid = await new_user(keycloak, "mfa", requiredActions=["CONFIGURE_TOTP"])
    secrets_seen.add(password)
    http = RawClient(keycloak.base_url)  # enrolment straight at Keycloak: not what this test asks about
    step = await _password_step(http, username, password)
    page = await http.send("GET", target_of(step.location))
    m = _HIDDEN.search(page.text)
    assert m, page.status
    secret = m.group(1) or m.group(2)
    secrets_seen.add(secret)
    key = totp.secret_from_hidden_field(secret)
    action = page.form_action()
    assert action
    enrolled = await http.send(
        "POST", target_of(action), form={"totp": totp.code(key), "totpSecret": secret, "userLabel": "phone"}
    )
    assert enrolled.status == 302, enrolled.status
    assert (await direct_admin(keycloak, "PUT", f"users/{uid}", {"requiredActions": ["UPDATE_PASSWORD"]}))[0] == 204
    await asyncio.sleep(1.1)
    since_ms, since_ns = oracle.now_ms(), time.time_ns()
    http = RawClient(sidecar.base_url)
    otp_page = await _password_step(http, username, password)
    assert otp_page.status == 200 and 'name="otp"' in otp_page.text, otp_page.status
    otp_action = otp_page.form_action()
    assert otp_action
    code = totp.code(key, time.time() + 30)  # the next step: the enrolment code may not be reused
    secrets_seen.add(code)
    to_action = await http.send("POST", target_of(otp_action), form={"otp": code})
    assert to_action.status == 302 and "required-action" in to_action.location, to_action.status
    form_page = await http.send("GET", target_of(to_action.location))
    post_to = form_page.form_action()
    assert post_to
    new_password = f"New-{secrets.token_urlsafe(12)}!"
    secrets_seen.add(new_password)
    done = await http.send(
        "POST", target_of(post_to), form={"password-new": new_password, "password-confirm": new_password}
    )
    assert done.status == 302 and "code" in done.location_params(), done.status
    result, _, _ = await match_window(keycloak, sidecar, since_ms, since_ns)
    assert not result.unmatched and not result.phantom, result.render()
    types = [(e["type"], e["outcome"]) for e in events_since(sidecar, since_ns)]
    assert types == [
        ("mfa.otp.verified", "succeeded"),
        ("password.changed", "succeeded"),
        ("login.succeeded", "succeeded"),
    ], types
    login = next(e for e in events_since(sidecar, since_ns) if e["type"] == "login.succeeded")
    assert login["details"]["mfa"] == "otp" and login["details"]["step"] == "UPDATE_PASSWORD"
    mfa = next(e for e in events_since(sidecar, since_ns) if e["type"] == "mfa.otp.verified")
    assert mfa["actor"]["username"] == username and mfa["details"]["next"] == "required-action"


async def test_failed_logins_from_error_pages_are_recorded(keycloak: KeycloakServer, sidecar: SidecarProcess) -> None:
    """Keycloak's LOGIN_ERROR from its 400 error page (no cookie, bad redirect, unknown client) and from error redirects of /auth each have a `login.failed` record."""
    since_ms, since_ns = oracle.now_ms(), time.time_ns()
    http = RawClient(sidecar.base_url)
    app = REALM.app.client_id
    answers = [
        await http.send(
            "POST",
            f"/realms/{REALM.name}/login-actions/authenticate?client_id={app}",
            form={"username": REALM.alice.username, "password": "not-sent-to-any-session"},
        ),
        await http.send(
            "POST",
            f"/realms/{REALM.name}/login-actions/required-action?execution=UPDATE_PASSWORD&client_id={app}",
            form={"password-new": "x", "password-confirm": "x"},
        ),
        await http.send("GET", f"{OIDC}/auth?client_id={app}&redirect_uri=http://evil.example/cb&response_type=code"),
        await http.send("GET", f"{OIDC}/auth?client_id=no-such-client&redirect_uri={CALLBACK}&response_type=code"),
        await http.send("GET", f"{OIDC}/auth?client_id={app}&redirect_uri={CALLBACK}&response_type=token"),
    ]
    assert [a.status for a in answers] == [400, 400, 400, 400, 302]
    result, user_events, _ = await match_window(keycloak, sidecar, since_ms, since_ns)
    assert not result.unmatched and not result.phantom, result.render()
    assert sorted(str(e.get("error")) for e in user_events) == sorted(
        ["cookie_not_found", "cookie_not_found", "invalid_redirect_uri", "client_not_found", "not_allowed"]
    )
    failed = [e for e in events_since(sidecar, since_ns) if e["type"] == "login.failed"]
    assert [e["error"] for e in failed] == [
        "cookie_not_found",
        "cookie_not_found",
        "invalid_redirect_uri",
        "client_not_found",
        "unauthorized_client",
    ]


async def test_state_reader_login_names_its_service_account(keycloak: KeycloakServer, sidecar: SidecarProcess) -> None:
    """The state reader's own client-credentials login is a `token.issued` naming the service-account user id, like Keycloak's CLIENT_LOGIN."""
    carol = await Carol(sidecar).login()
    _, _, uid = await new_user(keycloak, "reader")
    _, groups, _ = await direct_admin(keycloak, "GET", "groups?search=ops&exact=true")
    assert (await carol.admin("PUT", f"users/{uid}/groups/{groups[0]['id']}"))[0] == 204  # makes the reader read
    _, sa, _ = await direct_admin(keycloak, "GET", f"users?username={REALM.robot_service_account}&exact=true")
    own = [r["event"] for r in sidecar.records() if r["event"].get("details", {}).get("via") == "sidecar-state-reader"]
    assert own, "the reader has not logged in"
    assert all(
        e["type"] == "token.issued"
        and e["actor"] == {"id": sa[0]["id"], "client": REALM.robot.client_id, "kind": "client"}
        for e in own
    ), own


# ---------------------------------------------------------------------------------------------- realm changes
async def test_security_relevant_realm_changes_are_named_with_before_and_after(
    keycloak: KeycloakServer, sidecar: SidecarProcess, secrets_seen: set[str]
) -> None:
    """Events settings, brute force, password and OTP policy, a flow execution's requirement, a required action, an identity provider and its mapper, a client scope and its mapper each get their own record with before/after read from Keycloak."""
    carol = await Carol(sidecar).login()
    _, realm_before, _ = await direct_admin(keycloak, "GET", "")
    _, events_before, _ = await direct_admin(keycloak, "GET", "events/config")
    _, app, _ = await direct_admin(keycloak, "GET", f"clients?clientId={REALM.app.client_id}")
    tag = secrets.token_hex(3)
    await asyncio.sleep(1.1)
    since_ms, since_ns = oracle.now_ms(), time.time_ns()
    ok = (200, 201, 204)
    # events: the expiry changed and back
    for expiry in (86400, events_before.get("eventsExpiration")):
        assert (await carol.admin("PUT", "events/config", {**events_before, "eventsExpiration": expiry}))[0] in ok
    # realm settings: brute force, password policy and OTP policy in one PUT, then back. Keycloak sets the
    # whole OTP policy from the fields sent once otpPolicyType is there (missing ones become 0): send them all.
    otp_fields = {
        k: v for k, v in realm_before.items() if k.startswith("otpPolicy") and k != "otpSupportedApplications"
    }
    restore = {
        "bruteForceProtected": realm_before["bruteForceProtected"],
        "failureFactor": realm_before["failureFactor"],
        "passwordPolicy": realm_before.get("passwordPolicy") or "",
        **otp_fields,
    }
    changed = {
        **restore,
        "bruteForceProtected": True,
        "failureFactor": 9,
        "passwordPolicy": "length(8)",
        "otpPolicyDigits": 8,
    }
    restored = False
    try:
        assert (await carol.admin("PUT", "", changed))[0] == 204
        assert (await carol.admin("PUT", "", restore))[0] == 204
        restored = True
    finally:  # never leave brute force on for the tests that follow (a direct call: only when carol's failed,
        if not restored:  # since it is a Keycloak event the ledger cannot have)
            await direct_admin(keycloak, "PUT", "", restore)
    # a copied browser flow: its OTP execution from CONDITIONAL to DISABLED
    flow = f"surface-{tag}"
    assert (await carol.admin("POST", "authentication/flows/browser/copy", {"newName": flow}))[0] == 201
    _, executions = await carol.admin("GET", f"authentication/flows/{flow}/executions")
    otp = next(e for e in executions if e.get("providerId") == "auth-otp-form")
    assert (await carol.admin("PUT", f"authentication/flows/{flow}/executions", {**otp, "requirement": "DISABLED"}))[
        0
    ] == 204
    # a required action enabled, then disabled again
    _, terms = await carol.admin("GET", "authentication/required-actions/TERMS_AND_CONDITIONS")
    for enabled in (not terms["enabled"], terms["enabled"]):
        assert (
            await carol.admin(
                "PUT", "authentication/required-actions/TERMS_AND_CONDITIONS", {**terms, "enabled": enabled}
            )
        )[0] == 204
    # an identity provider and a mapper, changed and deleted
    idp_secret = f"idp-secret-{secrets.token_urlsafe(8)}"
    secrets_seen.add(idp_secret)
    idp = {
        "alias": f"idp-{tag}",
        "providerId": "oidc",
        "enabled": True,
        "config": {
            "clientId": "upstream-client",
            "clientSecret": idp_secret,
            "authorizationUrl": "http://127.0.0.1:9/auth",
            "tokenUrl": "http://127.0.0.1:9/token",
            "clientAuthMethod": "client_secret_post",
        },
    }
    assert (await carol.admin("POST", "identity-provider/instances", idp))[0] == 201
    assert (
        await carol.admin(
            "PUT", f"identity-provider/instances/{idp['alias']}", {**idp, "enabled": False, "trustEmail": True}
        )
    )[0] == 204
    mapper: dict[str, Any] = {
        "name": "role-from-claim",
        "identityProviderAlias": idp["alias"],
        "identityProviderMapper": "oidc-role-idp-mapper",
        "config": {"claim": "groups", "claim.value": "admins", "role": "operator", "syncMode": "FORCE"},
    }
    status, _ = await carol.admin("POST", f"identity-provider/instances/{idp['alias']}/mappers", mapper)
    assert status == 201
    _, mappers = await carol.admin("GET", f"identity-provider/instances/{idp['alias']}/mappers")
    mid = mappers[0]["id"]
    assert (
        await carol.admin(
            "PUT",
            f"identity-provider/instances/{idp['alias']}/mappers/{mid}",
            {**mappers[0], "config": {**mapper["config"], "role": "auditor"}},
        )
    )[0] == 204
    assert (await carol.admin("DELETE", f"identity-provider/instances/{idp['alias']}/mappers/{mid}"))[0] == 204
    assert (await carol.admin("DELETE", f"identity-provider/instances/{idp['alias']}"))[0] == 204
    # a client scope with a role mapper, given to a client as optional, then removed
    status, _ = await carol.admin("POST", "client-scopes", {"name": f"scope-{tag}", "protocol": "openid-connect"})
    assert status == 201
    _, scopes = await carol.admin("GET", "client-scopes")
    sid = next(s["id"] for s in scopes if s["name"] == f"scope-{tag}")
    assert (
        await carol.admin(
            "POST",
            f"client-scopes/{sid}/protocol-mappers/models",
            {
                "name": "realm-roles",
                "protocol": "openid-connect",
                "protocolMapper": "oidc-usermodel-realm-role-mapper",
                "config": {"claim.name": "roles", "access.token.claim": "true", "multivalued": "true"},
            },
        )
    )[0] == 201
    assert (await carol.admin("PUT", f"clients/{app[0]['id']}/optional-client-scopes/{sid}"))[0] == 204
    assert (await carol.admin("DELETE", f"clients/{app[0]['id']}/optional-client-scopes/{sid}"))[0] == 204
    assert (await carol.admin("DELETE", f"client-scopes/{sid}"))[0] == 204
    result, _, admin_events = await match_window(keycloak, sidecar, since_ms, since_ns)
    print("admin events:", [(e["operationType"], e["resourceType"], e.get("resourcePath")) for e in admin_events])
    assert not result.unmatched and not result.phantom, result.render()
    records = [e for e in events_since(sidecar, since_ns) if e["details"].get("phase") == "outcome"]

    def one(etype: str, **want: Any) -> dict[str, Any]:
        found = [e for e in records if e["type"] == etype and all(e["details"].get(k) == v for k, v in want.items())]
        assert found, (etype, want, [e["type"] for e in records])
        return found[0]

    ev = one("realm.events.changed")
    assert ev["details"]["before"].get("eventsExpiration") != 86400
    assert ev["details"]["after"]["eventsExpiration"] == 86400
    bf = [e for e in records if e["type"] == "realm.brute_force.changed"]
    assert [
        (e["details"]["before"]["bruteForceProtected"], e["details"]["after"]["bruteForceProtected"]) for e in bf
    ] == [(False, True), (True, False)]
    pw = one("realm.password_policy.changed")
    assert pw["details"]["after"] == {"passwordPolicy": "length(8)"}
    otp_policy = one("realm.otp_policy.changed")
    assert (otp_policy["details"]["before"]["otpPolicyDigits"], otp_policy["details"]["after"]["otpPolicyDigits"]) == (
        6,
        8,
    )
    ex = one("auth.execution.changed", change="requirement")
    assert (ex["details"]["before"]["requirement"], ex["details"]["after"]["requirement"]) == (
        otp["requirement"],
        "DISABLED",
    )
    ra = [e for e in records if e["type"] == "required_action.changed"]
    assert [(e["details"]["before"]["enabled"], e["details"]["after"]["enabled"]) for e in ra] == [
        (terms["enabled"], not terms["enabled"]),
        (not terms["enabled"], terms["enabled"]),
    ]
    upd = one("identity_provider.updated")
    assert upd["details"]["before"]["enabled"] is True and upd["details"]["after"]["enabled"] is False
    assert "config.clientSecret" not in upd["details"]["after"]
    one("identity_provider.created")
    one("identity_provider.deleted")
    mapped = one("identity_provider.mapper.updated")
    assert (mapped["details"]["before"]["config"]["role"], mapped["details"]["after"]["config"]["role"]) == (
        "operator",
        "auditor",
    )
    for etype in (
        "identity_provider.mapper.created",
        "identity_provider.mapper.deleted",
        "client_scope.created",
        "client_scope.deleted",
        "protocol_mapper.created",
        "client_scope.assigned",
        "client_scope.unassigned",
    ):
        one(etype)
    # Keycloak's live state is back where it started
    _, realm_after, _ = await direct_admin(keycloak, "GET", "")
    assert all(realm_after.get(k) == realm_before.get(k) for k in ("bruteForceProtected", "otpPolicyDigits"))
