"""Records real Keycloak exchanges for the capture scenario tests (tests/capture/test_scenarios.py).

    .venv/bin/python -m tests.capture.record_exchanges [--out tests/capture/exchanges]
    .venv/bin/python -m tests.capture.record_exchanges --keycloak http://127.0.0.1:K --port P   # reuse a server

Starts Keycloak (sidecar.harness.keycloak, 26.7.3, realm ledger-test) and, on the port Keycloak names as
its frontend URL, the sidecar's own ReverseProxy with hooks that keep every exchange exactly as the
capture layer sees it (RequestView / ResponseView: bounded request body, decoded response body). A
plain aiohttp client with a cookie jar then walks the flows a browser, kcadm or an OIDC client would:
browser logins (wrong and right password, OTP, required and application-initiated actions, SSO),
logouts, every token grant, revocation, and the admin REST mutations the ledger records, including the
admin console's own calls (whoami, ui-ext/role-mapping-delete) made with a console token.

Each named exchange is written as DIR/<name>.json with every secret replaced (tests/capture/redact.py)
and with `facts`: the ids and names the test expects in the events (user ids, role names, ...). The
run fails, writing nothing, if any raw secret it used or saw is still in the output.

Users created here (erin, frank, gina) are new on a fresh server; with --keycloak, leftovers from an
earlier run are deleted first.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import html
import re
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import orjson
from aiohttp import web

from sidecar.core.exchange import CapturePlan, Pushback, RequestHead, RequestView, ResponseView
from sidecar.harness.keycloak import KeycloakServer, ensure_distribution, free_port
from sidecar.harness.realm import REALM
from sidecar.proxy.forward import ProxyLimits, ReverseProxy
from tests.capture import totp
from tests.capture.redact import Redactor
from tests.fixtures_keycloak import ADMIN_PASSWORD, ADMIN_USERNAME

OUT = Path(__file__).resolve().parent / "exchanges"
R = REALM.name
CALLBACK = "http://127.0.0.1/callback"
_FORM = re.compile(r'<form\b[^>]*\baction="([^"]+)"', re.S)
_HIDDEN = re.compile(r'<input\b[^>]*\bname="([^"]+)"[^>]*\bvalue="([^"]*)"', re.S)


class _Keep:
    """CaptureHooks that capture every exchange whole and keep it, changing nothing."""

    def __init__(self) -> None:
        self.seen: list[tuple[RequestView, ResponseView]] = []

    def plan(self, head: RequestHead) -> CapturePlan:
        return CapturePlan(True, True)

    async def before_forward(self, request: RequestView) -> Pushback | object:
        return None

    async def after_response(self, request: RequestView, response: ResponseView, token: object) -> Pushback | None:
        self.seen.append((request, response))
        return None

    async def abandoned(self, request: RequestView, token: object, reason: str) -> None:
        return None


@dataclass
class Answer:
    status: int
    headers: Any
    text: str

    @property
    def location(self) -> str:
        return str(self.headers.get("Location", ""))

    def loc_params(self) -> dict[str, str]:
        parts = urlsplit(self.location)
        return {k: v[0] for k, v in parse_qs(parts.query or parts.fragment).items()}

    def json(self) -> Any:
        return orjson.loads(self.text) if self.text else None

    def form(self, form_id: str | None = None) -> tuple[str, dict[str, str]]:
        """The action URL and hidden fields of the (first, or `form_id`) form on this page."""
        text = self.text
        if form_id is not None:
            start = text.index(f'id="{form_id}"')
            text = text[text.rindex("<form", 0, start) :]
        m = _FORM.search(text)
        assert m, f"no form on the page (status {self.status})"
        end = text.find("</form>", m.start())
        fields = {k: html.unescape(v) for k, v in _HIDDEN.findall(text[m.start() : end])}
        return html.unescape(m.group(1)), fields


class Recorder:
    def __init__(self, base: str, hooks: _Keep, out: Path) -> None:
        self.base = base
        self.hooks = hooks
        self.out = out
        self.red = Redactor()
        self.docs: dict[str, dict[str, Any]] = {}
        self._mark = 0
        for user in REALM.users:
            self.red.secret("password", user.password)
        for client in (REALM.app, REALM.robot):
            self.red.secret("client_secret", client.secret or "")
        self.red.secret("password", ADMIN_PASSWORD)

    def mark(self) -> None:
        self._mark = len(self.hooks.seen)

    def save(self, name: str, description: str, facts: dict[str, Any] | None = None, index: int = -1) -> None:
        """Keep the exchange made since mark() (the last one by default) under `name`."""
        new = self.hooks.seen[self._mark :]
        assert new, f"{name}: no exchange since mark()"
        req, resp = new[index]
        self.docs[name] = self._doc(name, description, req, resp, facts or {})

    def _body(self, content_type: str | None, body: bytes, is_html_ok: bool = True) -> dict[str, Any] | None:
        if not body:
            return None
        ctype = (content_type or "").split(";")[0].strip().lower()
        text = body.decode("utf-8", "replace")
        if ctype == "application/x-www-form-urlencoded":
            from urllib.parse import parse_qsl

            return {"form": self.red.pairs(parse_qsl(text, keep_blank_values=True))}
        if ctype == "application/json" or ctype.endswith("+json"):
            try:
                return {"json": self.red.json(orjson.loads(body))}
            except orjson.JSONDecodeError:
                return {"text": self.red.replace_known(text)}
        if ctype == "text/html" and is_html_ok:
            return {"text": self.red.html(text)}
        return {"text": self.red.replace_known(text)}

    def _doc(
        self, name: str, description: str, req: RequestView, resp: ResponseView, facts: dict[str, Any]
    ) -> dict[str, Any]:
        red = self.red
        return {
            "name": name,
            "description": description,
            "keycloak": "26.7.3",
            "request": {
                "method": req.method,
                "path": req.path,
                "query": red.pairs(list(req.query.items())),
                "headers": red.headers([(k, v) for k, v in req.headers.items() if k.lower() != "host"]),
                "client_ip": req.client_ip,
                "body": self._body(req.headers.get("Content-Type"), req.body),
            },
            "response": {
                "status": resp.status,
                "headers": red.headers([(k, v) for k, v in resp.headers.items()]),
                "body": self._body(resp.headers.get("Content-Type"), resp.body),
                "body_truncated": resp.body_truncated,
            },
            "facts": facts,
        }

    def write(self, extra_secrets: set[str]) -> None:
        self.red.secrets.update(s for s in extra_secrets if s)
        texts = {}
        for name, doc in sorted(self.docs.items()):
            texts[name] = orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"
        leaks = {name: self.red.check(text) for name, text in texts.items()}
        leaks = {k: v for k, v in leaks.items() if v}
        if leaks:
            raise SystemExit(f"refusing to write: raw secrets left in {leaks}")
        self.out.mkdir(parents=True, exist_ok=True)
        for old in self.out.glob("*.json"):
            old.unlink()
        for name, text in texts.items():
            (self.out / f"{name}.json").write_text(text)
        print(f"wrote {len(texts)} exchanges to {self.out}")


class Browser:
    """One user agent: its own cookie jar, no automatic redirects (each hop is one exchange)."""

    def __init__(self, base: str) -> None:
        self.base = base
        jar = aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=[base])
        self.http = aiohttp.ClientSession(cookie_jar=jar)

    async def close(self) -> None:
        await self.http.close()

    async def go(self, method: str, url: str, **kw: Any) -> Answer:
        if url.startswith("/"):
            url = self.base + url
        async with self.http.request(method, url, allow_redirects=False, **kw) as resp:
            return Answer(resp.status, resp.headers, await resp.text())

    def cookie(self, name: str) -> str | None:
        for c in self.http.cookie_jar:
            if c.key == name:
                return c.value
        return None


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def auth_url(client_id: str, realm: str = R, redirect: str = CALLBACK, **extra: str) -> str:
    q = {
        "client_id": client_id,
        "redirect_uri": redirect,
        "response_type": "code",
        "scope": "openid",
        "state": "st-" + secrets.token_hex(4),
        "nonce": "n-" + secrets.token_hex(4),
        **extra,
    }
    return f"/realms/{realm}/protocol/openid-connect/auth?{urlencode(q)}"


class Flows:
    """The recorded walk. Each step asserts what Keycloak answered, so a behaviour change stops the run."""

    def __init__(self, rec: Recorder) -> None:
        self.rec = rec
        self.base = rec.base
        self.seen: set[str] = set()  # raw secrets received (tokens, codes, totp secrets)
        self.admin_token = ""
        self.ids: dict[str, str] = {}

    # ---------------------------------------------------------------- helpers
    def keep(self, *values: str | None) -> None:
        self.seen.update(v for v in values if v)

    async def token(
        self, form: dict[str, str], realm: str = R, auth: tuple[str, str] | None = None, b: Browser | None = None
    ) -> Answer:
        own = b is None
        b = b or Browser(self.base)
        try:
            headers = {}
            if auth:
                headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            ans = await b.go("POST", f"/realms/{realm}/protocol/openid-connect/token", data=form, headers=headers)
            data = ans.json() if ans.text.startswith("{") else {}
            self.keep(*(data.get(k) for k in ("access_token", "refresh_token", "id_token")))
            return ans
        finally:
            if own:
                await b.close()

    async def admin(
        self, method: str, path: str, body: Any = None, token: str | None = None, prefix: str = "/admin/realms/"
    ) -> Answer:
        b = Browser(self.base)
        try:
            kw: dict[str, Any] = {"headers": {"Authorization": f"Bearer {token or self.admin_token}"}}
            if body is not None:
                kw["json"] = body
            return await b.go(method, prefix + path, **kw)
        finally:
            await b.close()

    async def user_id(self, username: str) -> str:
        ans = await self.admin("GET", f"{R}/users?{urlencode({'username': username, 'exact': 'true'})}")
        users = ans.json()
        assert ans.status == 200 and len(users) == 1, (username, ans.status, ans.text[:200])
        return str(users[0]["id"])

    async def login_page(self, b: Browser, url: str) -> Answer:
        ans = await b.go("GET", url)
        assert ans.status == 200, (ans.status, ans.location)
        return ans

    async def post_form(self, b: Browser, page: Answer, fields: dict[str, str], form_id: str | None = None) -> Answer:
        action, hidden = page.form(form_id)
        if action.startswith("/"):  # the logout confirmation page uses a relative action
            action = self.base + action
        assert action.startswith(self.base), f"form posts to {action}, past the proxy"
        self.keep(hidden.get("totpSecret"))
        return await b.go("POST", action, data={**hidden, **fields})

    async def follow(self, b: Browser, ans: Answer) -> Answer:
        """Follow one redirect that stays at Keycloak."""
        assert ans.status in (302, 303), ans.status
        return await b.go("GET", ans.location)

    async def code_to_tokens(
        self, ans: Answer, client: str, secret: str | None, verifier: str | None = None
    ) -> dict[str, Any]:
        params = ans.loc_params()
        assert "code" in params, (ans.status, ans.location)
        self.keep(params["code"])
        form = {
            "grant_type": "authorization_code",
            "code": params["code"],
            "redirect_uri": CALLBACK,
            "client_id": client,
        }
        if verifier:
            form["code_verifier"] = verifier
        tok = await self.token(form, auth=(client, secret) if secret else None)
        assert tok.status == 200, tok.text
        data: dict[str, Any] = tok.json()
        return data

    # ---------------------------------------------------------------- flows
    async def run(self) -> None:
        await self.setup()
        await self.password_browser_login()
        await self.logout_confirm()
        await self.otp_enrolment_and_login()
        await self.registration_and_actions()
        await self.pkce_and_token_grants()
        await self.console_token_and_ui_ext()
        await self.admin_mutations()

    async def setup(self) -> None:
        rec = self.rec
        rec.mark()
        ans = await self.token(
            {
                "grant_type": "password",
                "client_id": "admin-cli",
                "username": ADMIN_USERNAME,
                "password": ADMIN_PASSWORD,
            },
            realm="master",
        )
        assert ans.status == 200, ans.text
        self.admin_token = ans.json()["access_token"]
        rec.save(
            "token_password_admin_cli",
            "kcadm-style admin-cli password grant in master; access and refresh tokens are lightweight "
            "(no sub) in 26.7.3",
            {"username": ADMIN_USERNAME, "client": "admin-cli", "realm": "master"},
        )
        admins = (await self.admin("GET", f"master/users?username={ADMIN_USERNAME}&exact=true")).json()
        self.ids["admin"] = admins[0]["id"]
        for name in ("erin", "frank", "gina"):  # leftovers of an earlier run on a reused server
            users = (await self.admin("GET", f"{R}/users?username={name}&exact=true")).json()
            for u in users:
                await self.admin("DELETE", f"{R}/users/{u['id']}")
        for name in ("alice", "bob", "carol", "dave"):
            self.ids[name] = await self.user_id(name)
        clients = (await self.admin("GET", f"{R}/clients?clientId={REALM.app.client_id}")).json()
        self.ids["ledger-app"] = clients[0]["id"]
        groups = (await self.admin("GET", f"{R}/groups")).json()
        for g in groups:
            self.ids["group:" + g["name"]] = g["id"]
        for role in REALM.realm_roles:
            self.ids["role:" + role] = (await self.admin("GET", f"{R}/roles/{role}")).json()["id"]
        for role in REALM.app_client_roles:
            data = (await self.admin("GET", f"{R}/clients/{self.ids['ledger-app']}/roles/{role}")).json()
            self.ids["client-role:" + role] = data["id"]

    async def password_browser_login(self) -> None:
        rec, b = self.rec, Browser(self.base)
        try:
            rec.mark()
            page = await self.login_page(b, auth_url(REALM.app.client_id))
            rec.save(
                "auth_login_page",
                "GET /auth without an SSO cookie: 200 login page (nothing happened yet)",
                {"client": REALM.app.client_id},
            )
            rec.mark()
            bad = await self.post_form(b, page, {"username": "alice", "password": "wrong-" + REALM.alice.password})
            assert bad.status == 200
            rec.save(
                "login_password_wrong",
                "browser password step with a wrong password: the login page again with an error",
                {"username": "alice", "client": REALM.app.client_id},
            )
            rec.mark()
            ok = await self.post_form(b, bad, {"username": "alice", "password": REALM.alice.password})
            assert ok.status == 302 and "code" in ok.loc_params(), (ok.status, ok.text[:300])
            rec.save(
                "login_password_ok",
                "browser password step with the right password: 302 to the client with code, identity cookie set",
                {
                    "username": "alice",
                    "user_id": self.ids["alice"],
                    "client": REALM.app.client_id,
                    "session": ok.loc_params()["session_state"],
                },
            )
            rec.mark()
            tokens = await self.code_to_tokens(ok, REALM.app.client_id, REALM.app.secret)
            rec.save(
                "token_authorization_code",
                "confidential client code exchange (client_secret_basic)",
                {
                    "username": "alice",
                    "user_id": self.ids["alice"],
                    "client": REALM.app.client_id,
                    "session": ok.loc_params()["session_state"],
                },
            )
            self.keep(b.cookie("KEYCLOAK_IDENTITY"), b.cookie("AUTH_SESSION_ID"), b.cookie("KEYCLOAK_SESSION"))
            rec.mark()
            sso = await b.go("GET", auth_url(REALM.app.client_id))
            assert sso.status == 302 and "code" in sso.loc_params(), sso.status
            self.keep(sso.loc_params()["code"])
            rec.save(
                "auth_sso_cookie",
                "GET /auth with a live KEYCLOAK_IDENTITY cookie: 302 with code at once (a login without credentials)",
                {
                    "user_id": self.ids["alice"],
                    "client": REALM.app.client_id,
                    "session": sso.loc_params()["session_state"],
                },
            )
            rec.mark()
            q = urlencode({"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": CALLBACK, "state": "bye"})
            out = await b.go("GET", f"/realms/{R}/protocol/openid-connect/logout?{q}")
            assert out.status == 302, out.status
            rec.save(
                "logout_id_token_hint",
                "RP-initiated logout with id_token_hint and a registered post_logout_redirect_uri: 302, session ended",
                {
                    "user_id": self.ids["alice"],
                    "username": "alice",
                    "client": REALM.app.client_id,
                    "session": ok.loc_params()["session_state"],
                },
            )
        finally:
            await b.close()

    async def logout_confirm(self) -> None:
        rec, b = self.rec, Browser(self.base)
        try:
            page = await self.login_page(b, auth_url(REALM.app.client_id))
            ok = await self.post_form(b, page, {"username": "bob", "password": REALM.bob.password})
            assert ok.status == 302
            self.keep(ok.loc_params().get("code"), b.cookie("KEYCLOAK_IDENTITY"), b.cookie("AUTH_SESSION_ID"))
            rec.mark()
            confirm = await b.go("GET", f"/realms/{R}/protocol/openid-connect/logout")
            assert confirm.status == 200, confirm.status
            rec.save(
                "logout_confirm_page",
                "GET /logout without id_token_hint on a live session: the confirmation page; nothing ended yet",
                {"user_id": self.ids["bob"]},
            )
            rec.mark()
            done = await self.post_form(b, confirm, {"confirmLogout": "Logout"})
            rec.save(
                "logout_confirm_post",
                "POST /logout/logout-confirm (the user confirmed): session ended",
                {"user_id": self.ids["bob"], "session": ok.loc_params()["session_state"], "status": done.status},
            )
        finally:
            await b.close()

    async def otp_enrolment_and_login(self) -> None:
        rec = self.rec
        rec.mark()
        created = await self.admin(
            "POST",
            f"{R}/users",
            {
                "username": "erin",
                "enabled": True,
                "email": "erin@example.test",
                "emailVerified": True,
                "firstName": "Erin",
                "lastName": "Eagle",
                "requiredActions": ["CONFIGURE_TOTP"],
                "credentials": [{"type": "password", "value": "Erin-pw-3141!", "temporary": False}],
            },
        )
        assert created.status == 201, created.text
        self.rec.red.secret("password", "Erin-pw-3141!")
        self.ids["erin"] = created.location.rsplit("/", 1)[-1]
        rec.save(
            "admin_user_create",
            "POST users with a password credential and a pending CONFIGURE_TOTP",
            {"actor_id": self.ids["admin"], "username": "erin", "user_id": self.ids["erin"]},
        )

        b = Browser(self.base)
        try:
            page = await self.login_page(b, auth_url(REALM.app.client_id))
            rec.mark()
            ra = await self.post_form(b, page, {"username": "erin", "password": "Erin-pw-3141!"})
            assert ra.status == 302 and "/login-actions/required-action" in ra.location, (ra.status, ra.location)
            rec.save(
                "login_password_required_action",
                "password step passed, a required action is pending: 302 "
                "to /login-actions/required-action?execution=CONFIGURE_TOTP",
                {"username": "erin"},
            )
            self.keep(b.cookie("AUTH_SESSION_ID"))
            rec.mark()
            cfg = await self.follow(b, ra)
            assert cfg.status == 200 and "totpSecret" in cfg.text
            rec.save("required_action_page", "GET the CONFIGURE_TOTP page (not routed: nothing to record)", {})
            _, hidden = cfg.form("kc-totp-settings-form")
            key = totp.secret_from_hidden_field(hidden["totpSecret"])
            self.keep(hidden["totpSecret"])
            rec.mark()
            bad = await self.post_form(
                b, cfg, {"totp": _other(totp.code(key)), "userLabel": "erin-phone"}, "kc-totp-settings-form"
            )
            assert bad.status == 200, bad.status
            rec.save(
                "required_action_totp_wrong",
                "CONFIGURE_TOTP with a wrong code: the page again with an error",
                {"username": "erin", "user_id": self.ids["erin"]},
            )
            enrol_at = time.time()
            code = totp.code(key, enrol_at)
            rec.mark()
            done = await self.post_form(b, bad, {"totp": code, "userLabel": "erin-phone"}, "kc-totp-settings-form")
            self.keep(code)
            assert done.status == 302 and "code" in done.loc_params(), (done.status, done.location, done.text[:500])
            rec.save(
                "required_action_totp_ok",
                "CONFIGURE_TOTP with the right code finishes the login: 302 with code",
                {"username": "erin", "user_id": self.ids["erin"], "session": done.loc_params()["session_state"]},
            )
            self.keep(done.loc_params()["code"], b.cookie("KEYCLOAK_IDENTITY"))
        finally:
            await b.close()

        # A later login: password, then OTP (wrong, then right)
        b = Browser(self.base)
        try:
            page = await self.login_page(b, auth_url(REALM.app.client_id))
            rec.mark()
            otp_page = await self.post_form(b, page, {"username": "erin", "password": "Erin-pw-3141!"})
            assert otp_page.status == 200 and 'name="otp"' in otp_page.text, otp_page.status
            rec.save(
                "login_password_then_otp", "password step passed, the OTP form follows (200)", {"username": "erin"}
            )
            self.keep(b.cookie("AUTH_SESSION_ID"))
            rec.mark()
            wrong = await self.post_form(b, otp_page, {"otp": _other(totp.code(key))})
            assert wrong.status == 200, wrong.status
            rec.save(
                "login_otp_wrong",
                "OTP step with a wrong code: the OTP form again with an error",
                {"username": "erin", "user_id": self.ids["erin"]},
            )
            # codes are single-use: take the next period's code (inside the look-around window of 1)
            code = totp.code(key, max(time.time(), enrol_at + 30))
            rec.mark()
            ok = await self.post_form(b, wrong, {"otp": code})
            self.keep(code)
            assert ok.status == 302 and "code" in ok.loc_params(), (ok.status, ok.text[:500])
            rec.save(
                "login_otp_ok",
                "OTP step with the right code: 302 with code, identity cookie set",
                {"username": "erin", "user_id": self.ids["erin"], "session": ok.loc_params()["session_state"]},
            )
            self.keep(ok.loc_params()["code"], b.cookie("KEYCLOAK_IDENTITY"))
            await self.aia(b, key)
        finally:
            await b.close()

    async def aia(self, b: Browser, key: bytes) -> None:
        """Application-initiated actions on erin's live session: enrol a second OTP, cancel, delete one."""
        rec = self.rec
        rec.mark()
        start = await b.go("GET", auth_url(REALM.app.client_id, kc_action="CONFIGURE_TOTP"))
        rec.save(
            "auth_kc_action_configure_totp",
            "GET /auth with kc_action=CONFIGURE_TOTP on a live session",
            {"status": start.status},
        )
        page = start if start.status == 200 else await self.follow(b, start)
        assert page.status == 200 and "totpSecret" in page.text, (page.status, page.text[:300])
        _, hidden = page.form("kc-totp-settings-form")
        key2 = totp.secret_from_hidden_field(hidden["totpSecret"])
        self.keep(hidden["totpSecret"])
        code = totp.code(key2)
        rec.mark()
        done = await self.post_form(b, page, {"totp": code, "userLabel": "erin-tablet"}, "kc-totp-settings-form")
        self.keep(code)
        assert done.status == 302 and done.loc_params().get("kc_action_status") == "success", done.location
        rec.save(
            "required_action_aia_configure_totp",
            "application-initiated CONFIGURE_TOTP: 302 with kc_action_status=success (and a code)",
            {"user_id": self.ids["erin"], "username": "erin"},
        )
        self.keep(done.loc_params().get("code"))

        creds = (await self.admin("GET", f"{R}/users/{self.ids['erin']}/credentials")).json()
        otp_ids = [c["id"] for c in creds if c["type"] == "otp"]
        assert len(otp_ids) == 2, creds
        self.ids["erin-otp-1"], self.ids["erin-otp-2"] = otp_ids

        rec.mark()
        start = await b.go("GET", auth_url(REALM.app.client_id, kc_action=f"delete_credential:{otp_ids[0]}"))
        page = start if start.status == 200 else await self.follow(b, start)
        assert page.status == 200, page.status
        rec.mark()
        cancelled = await self.post_form(b, page, {"cancel-aia": ""})
        rec.save(
            "required_action_delete_credential_cancel",
            "application-initiated delete_credential, declined: 302 with kc_action_status=cancelled",
            {"user_id": self.ids["erin"]},
        )
        assert cancelled.loc_params().get("kc_action_status") == "cancelled", cancelled.location
        self.keep(cancelled.loc_params().get("code"))

        rec.mark()
        start = await b.go("GET", auth_url(REALM.app.client_id, kc_action=f"delete_credential:{otp_ids[0]}"))
        rec.save(
            "auth_kc_action_delete_credential",
            "GET /auth with kc_action=delete_credential:<id>",
            {"credential_id": otp_ids[0], "status": start.status},
        )
        page = start if start.status == 200 else await self.follow(b, start)
        rec.mark()
        accepted = await self.post_form(b, page, {"accept": ""})
        assert accepted.loc_params().get("kc_action_status") == "success", accepted.location
        rec.save(
            "required_action_delete_credential",
            "application-initiated delete_credential, accepted: 302 with kc_action_status=success",
            {"user_id": self.ids["erin"], "username": "erin", "credential_id": otp_ids[0]},
        )
        self.keep(accepted.loc_params().get("code"))

    async def registration_and_actions(self) -> None:
        """Self-registration, then two required actions in one login, then the account REST API."""
        rec = self.rec
        assert (await self.admin("PUT", R, {"registrationAllowed": True})).status == 204
        b = Browser(self.base)
        try:
            page = await self.login_page(b, auth_url(REALM.app.client_id, prompt="create"))
            assert 'data-page-id="login-register"' in page.text, page.text[:300]
            fields = {"username": "gina", "email": "gina@example.test", "firstName": "Gina", "lastName": "Gray"}
            rec.mark()
            bad = await self.post_form(
                b, page, {**fields, "password": "Gina-pw-1618!", "password-confirm": "Gina-pw-0000!"}
            )
            assert bad.status == 200, bad.status
            rec.save(
                "login_registration_invalid",
                "self-registration with mismatching passwords: the form again with an error",
                {"username": "gina"},
            )
            rec.red.secret("password", "Gina-pw-0000!")
            rec.mark()
            ok = await self.post_form(
                b, bad, {**fields, "password": "Gina-pw-1618!", "password-confirm": "Gina-pw-1618!"}
            )
            rec.red.secret("password", "Gina-pw-1618!")
            assert ok.status == 302 and "code" in ok.loc_params(), (ok.status, ok.text[:300])
            rec.save(
                "login_registration",
                "self-registration: the user is created and logged in (302 with code)",
                {"username": "gina", "session": ok.loc_params()["session_state"]},
            )
            self.ids["gina"] = await self.user_id("gina")
            rec.docs["login_registration"]["facts"]["user_id"] = self.ids["gina"]
            self.keep(ok.loc_params()["code"], b.cookie("KEYCLOAK_IDENTITY"), b.cookie("AUTH_SESSION_ID"))
        finally:
            await b.close()
        assert (await self.admin("PUT", R, {"registrationAllowed": False})).status == 204
        gina = self.ids["gina"]
        assert (
            await self.admin("PUT", f"{R}/users/{gina}", {"requiredActions": ["CONFIGURE_TOTP", "UPDATE_PASSWORD"]})
        ).status == 204
        b = Browser(self.base)
        try:
            page = await self.login_page(b, auth_url(REALM.app.client_id))
            ra = await self.post_form(b, page, {"username": "gina", "password": "Gina-pw-1618!"})
            assert ra.status == 302, ra.status
            self.keep(b.cookie("AUTH_SESSION_ID"))
            cfg = await self.follow(b, ra)
            _, hidden = cfg.form("kc-totp-settings-form")
            key = totp.secret_from_hidden_field(hidden["totpSecret"])
            self.keep(hidden["totpSecret"])
            code = totp.code(key)
            rec.mark()
            nxt = await self.post_form(b, cfg, {"totp": code, "userLabel": "gina-phone"}, "kc-totp-settings-form")
            self.keep(code)
            rec.save(
                "required_action_totp_then_next",
                "CONFIGURE_TOTP done while UPDATE_PASSWORD is still pending",
                {"username": "gina", "user_id": gina, "status": nxt.status},
            )
            if nxt.status in (302, 303):
                nxt = await self.follow(b, nxt)
            assert 'name="password-new"' in nxt.text, nxt.text[:300]
            rec.mark()
            mismatch = await self.post_form(
                b, nxt, {"password-new": "Gina-pw-2718!", "password-confirm": "Gina-pw-3141!"}
            )
            rec.red.secret("password", "Gina-pw-3141!")
            assert mismatch.status == 200
            rec.save(
                "required_action_update_password_mismatch",
                "UPDATE_PASSWORD with mismatching passwords",
                {"username": "gina", "user_id": gina},
            )
            rec.mark()
            done = await self.post_form(
                b, mismatch, {"password-new": "Gina-pw-2718!", "password-confirm": "Gina-pw-2718!"}
            )
            rec.red.secret("password", "Gina-pw-2718!")
            assert done.status == 302 and "code" in done.loc_params(), (done.status, done.text[:300])
            rec.save(
                "required_action_update_password",
                "UPDATE_PASSWORD, the last pending action: 302 with code",
                {"username": "gina", "user_id": gina, "session": done.loc_params()["session_state"]},
            )
            self.keep(done.loc_params()["code"], b.cookie("KEYCLOAK_IDENTITY"))
        finally:
            await b.close()
        # account REST with a token of gina's (ledger-app direct grant: password + OTP)
        tok = await self.token(
            {
                "grant_type": "password",
                "client_id": REALM.app.client_id,
                "client_secret": REALM.app.secret or "",
                "username": "gina",
                "password": "Gina-pw-2718!",
                "otp": totp.code(key, time.time() + 30),
            }
        )
        assert tok.status == 200, tok.text
        bearer = {"Authorization": f"Bearer {tok.json()['access_token']}", "Accept": "application/json"}
        b = Browser(self.base)
        try:
            creds = (await self.admin("GET", f"{R}/users/{gina}/credentials")).json()
            otp_id = next(c["id"] for c in creds if c["type"] == "otp")
            rec.mark()
            gone = await b.go("DELETE", f"/realms/{R}/account/credentials/{otp_id}", headers=bearer)
            rec.save(
                "account_credential_delete",
                "the deprecated account REST credential delete",
                {"user_id": gina, "credential_id": otp_id, "status": gone.status},
            )
            rec.mark()
            upd = await b.go(
                "POST",
                f"/realms/{R}/account/",
                headers=bearer,
                json={"username": "gina", "email": "gina@example.test", "firstName": "Georgina", "lastName": "Gray"},
            )
            rec.save("account_profile_update", "account REST profile update", {"user_id": gina, "status": upd.status})
        finally:
            await b.close()

    async def pkce_and_token_grants(self) -> None:
        rec, b = self.rec, Browser(self.base)
        try:
            verifier, challenge = _pkce()
            self.keep(verifier)
            page = await self.login_page(
                b, auth_url(REALM.spa.client_id, code_challenge=challenge, code_challenge_method="S256")
            )
            ok = await self.post_form(b, page, {"username": "alice", "password": REALM.alice.password})
            assert ok.status == 302
            self.keep(b.cookie("KEYCLOAK_IDENTITY"), b.cookie("AUTH_SESSION_ID"))
            rec.mark()
            await self.code_to_tokens(ok, REALM.spa.client_id, None, verifier)
            rec.save(
                "token_authorization_code_pkce",
                "public client code exchange with code_verifier (PKCE S256)",
                {
                    "user_id": self.ids["alice"],
                    "username": "alice",
                    "client": REALM.spa.client_id,
                    "session": ok.loc_params()["session_state"],
                },
            )
            rec.mark()
            again = await self.token(
                {
                    "grant_type": "authorization_code",
                    "code": ok.loc_params()["code"],
                    "redirect_uri": CALLBACK,
                    "client_id": REALM.spa.client_id,
                    "code_verifier": verifier,
                }
            )
            assert again.status == 400, again.status
            rec.save(
                "token_authorization_code_reused",
                "the same code a second time: 400 invalid_grant",
                {"client": REALM.spa.client_id},
            )
        finally:
            await b.close()

        rec.mark()
        good = await self.token(
            {
                "grant_type": "password",
                "client_id": REALM.app.client_id,
                "client_secret": REALM.app.secret or "",
                "username": "dave",
                "password": REALM.dave.password,
                "scope": "openid",
            }
        )
        assert good.status == 200
        rec.save(
            "token_password_ok",
            "direct grant (client_secret_post) with the right password",
            {"username": "dave", "user_id": self.ids["dave"], "client": REALM.app.client_id},
        )
        tokens = good.json()
        rec.mark()
        bad = await self.token(
            {
                "grant_type": "password",
                "client_id": REALM.app.client_id,
                "client_secret": REALM.app.secret or "",
                "username": "dave",
                "password": "wrong-" + REALM.dave.password,
            }
        )
        assert bad.status == 400
        rec.save(
            "token_password_wrong",
            "direct grant with a wrong password: 400 invalid_grant",
            {"username": "dave", "client": REALM.app.client_id},
        )
        rec.mark()
        robot = await self.token(
            {"grant_type": "client_credentials"}, auth=(REALM.robot.client_id, REALM.robot.secret or "")
        )
        assert robot.status == 200
        rec.save(
            "token_client_credentials",
            "service-account grant with client_secret_basic",
            {"client": REALM.robot.client_id, "username": REALM.robot_service_account},
        )
        rec.mark()
        robot_bad = await self.token(
            {"grant_type": "client_credentials"}, auth=(REALM.robot.client_id, "wrong-robot-secret-0000")
        )
        self.rec.red.secret("client_secret", "wrong-robot-secret-0000")
        rec.save(
            "token_client_credentials_wrong",
            "service-account grant with a wrong secret: 401",
            {"client": REALM.robot.client_id, "status": robot_bad.status},
        )
        rec.mark()
        refreshed = await self.token(
            {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": REALM.app.client_id},
            auth=(REALM.app.client_id, REALM.app.secret or ""),
        )
        assert refreshed.status == 200, refreshed.text
        rec.save(
            "token_refresh",
            "refresh grant (confidential client)",
            {"user_id": self.ids["dave"], "username": "dave", "client": REALM.app.client_id},
        )
        rec.mark()
        stale = await self.token(
            {
                "grant_type": "refresh_token",
                "refresh_token": "not-a-refresh-token-1234",
                "client_id": REALM.app.client_id,
            },
            auth=(REALM.app.client_id, REALM.app.secret or ""),
        )
        self.rec.red.secret("refresh_token", "not-a-refresh-token-1234")
        rec.save(
            "token_refresh_invalid",
            "refresh grant with a broken token: 400 invalid_grant",
            {"client": REALM.app.client_id, "status": stale.status},
        )
        fresh = refreshed.json()
        b = Browser(self.base)
        try:
            rec.mark()
            rv = await b.go(
                "POST",
                f"/realms/{R}/protocol/openid-connect/revoke",
                data={"token": fresh["refresh_token"], "token_type_hint": "refresh_token"},
                headers={
                    "Authorization": "Basic "
                    + base64.b64encode(f"{REALM.app.client_id}:{REALM.app.secret}".encode()).decode()
                },
            )
            assert rv.status == 200, rv.status
            rec.save(
                "revoke_refresh_token",
                "RFC 7009 revocation of a refresh token: 200, session ended",
                {"user_id": self.ids["dave"], "client": REALM.app.client_id},
            )
        finally:
            await b.close()
        # POST /logout with a refresh token (back-channel style)
        good2 = await self.token(
            {
                "grant_type": "password",
                "client_id": REALM.app.client_id,
                "client_secret": REALM.app.secret or "",
                "username": "bob",
                "password": REALM.bob.password,
            }
        )
        b = Browser(self.base)
        try:
            rec.mark()
            lo = await b.go(
                "POST",
                f"/realms/{R}/protocol/openid-connect/logout",
                data={
                    "client_id": REALM.app.client_id,
                    "client_secret": REALM.app.secret or "",
                    "refresh_token": good2.json()["refresh_token"],
                },
            )
            assert lo.status == 204, lo.status
            rec.save(
                "logout_refresh_token",
                "POST /logout with a refresh token: 204, session ended",
                {"user_id": self.ids["bob"], "client": REALM.app.client_id},
            )
        finally:
            await b.close()

    async def console_token_and_ui_ext(self) -> None:
        """The admin console's own login (security-admin-console, PKCE) and the calls it makes."""
        rec, b = self.rec, Browser(self.base)
        try:
            verifier, challenge = _pkce()
            self.keep(verifier)
            redirect = f"{self.base}/admin/master/console/"
            page = await self.login_page(
                b,
                auth_url(
                    "security-admin-console",
                    realm="master",
                    redirect=redirect,
                    code_challenge=challenge,
                    code_challenge_method="S256",
                ),
            )
            ok = await self.post_form(b, page, {"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD})
            assert ok.status == 302, ok.status
            code = ok.loc_params()["code"]
            self.keep(code, b.cookie("KEYCLOAK_IDENTITY"), b.cookie("AUTH_SESSION_ID"))
            rec.mark()
            tok = await self.token(
                {
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": redirect,
                    "client_id": "security-admin-console",
                    "code_verifier": verifier,
                },
                realm="master",
                b=b,
            )
            assert tok.status == 200, tok.text
            rec.save(
                "token_admin_console_code",
                "the admin console's code exchange: lightweight access token, id_token with sub and preferred_username",
                {
                    "user_id": self.ids["admin"],
                    "username": ADMIN_USERNAME,
                    "client": "security-admin-console",
                    "session": ok.loc_params()["session_state"],
                },
            )
            console = tok.json()["access_token"]
        finally:
            await b.close()
        rec.mark()
        who = await self.admin("GET", f"master/console/whoami?currentRealm={R}", token=console, prefix="/admin/")
        assert who.status == 200, who.status
        rec.save(
            "whoami_console",
            "the console's whoami with its own token: userId and displayName",
            {"user_id": self.ids["admin"], "username": ADMIN_USERNAME},
        )
        rec.mark()
        who2 = await self.admin("GET", f"master/console/whoami?currentRealm={R}", prefix="/admin/")
        rec.save("whoami_admin_cli", "whoami with an admin-cli token: 403 in 26.7.3", {"status": who2.status})

        alice, ops = self.ids["alice"], self.ids["group:ops"]
        viewer = {"id": self.ids["role:viewer"], "name": "viewer"}
        await self.admin("POST", f"{R}/users/{alice}/role-mappings/realm", [viewer], token=console)
        rec.mark()
        rv = await self.admin(
            "POST",
            f"{R}/ui-ext/role-mapping-delete/users/{alice}",
            [{"roleId": viewer["id"], "roleName": "viewer"}],
            token=console,
        )
        assert rv.status == 204, (rv.status, rv.text)
        rec.save(
            "admin_ui_ext_revoke_user_realm_role",
            "the console's unassign of a realm role: POST ui-ext/role-mapping-delete/users/{id} [{roleId, roleName}]",
            {"actor_id": self.ids["admin"], "user_id": alice, "role": "viewer", "role_id": viewer["id"]},
        )
        app_user = {"id": self.ids["client-role:app-user"], "name": "app-user"}
        await self.admin(
            "POST", f"{R}/users/{alice}/role-mappings/clients/{self.ids['ledger-app']}", [app_user], token=console
        )
        rec.mark()
        rv = await self.admin(
            "POST",
            f"{R}/ui-ext/role-mapping-delete/users/{alice}",
            [{"roleId": app_user["id"], "roleName": "app-user", "clientId": self.ids["ledger-app"]}],
            token=console,
        )
        assert rv.status == 204, (rv.status, rv.text)
        rec.save(
            "admin_ui_ext_revoke_user_client_role",
            "the console's unassign of a client role: [{roleId, roleName, clientId: <client uuid>}]",
            {
                "actor_id": self.ids["admin"],
                "user_id": alice,
                "role": "app-user",
                "client_uuid": self.ids["ledger-app"],
            },
        )
        await self.admin("POST", f"{R}/groups/{ops}/role-mappings/realm", [viewer], token=console)
        rec.mark()
        rv = await self.admin(
            "POST",
            f"{R}/ui-ext/role-mapping-delete/groups/{ops}",
            [{"roleId": viewer["id"], "roleName": "viewer"}],
            token=console,
        )
        assert rv.status == 204, (rv.status, rv.text)
        rec.save(
            "admin_ui_ext_revoke_group_realm_role",
            "the console's unassign of a group's realm role",
            {"actor_id": self.ids["admin"], "group_id": ops, "role": "viewer"},
        )
        operator = {"id": self.ids["role:operator"], "name": "operator"}
        await self.admin("POST", f"{R}/roles/operator/composites", [viewer], token=console)
        rec.mark()
        rv = await self.admin(
            "POST",
            f"{R}/ui-ext/role-mapping-delete/roles/{operator['id']}",
            [{"roleId": viewer["id"], "roleName": "viewer"}],
            token=console,
        )
        assert rv.status == 204, (rv.status, rv.text)
        rec.save(
            "admin_ui_ext_remove_composite",
            "the console's removal of an associated role (composite)",
            {"actor_id": self.ids["admin"], "role_id": operator["id"], "role": "viewer"},
        )

    async def admin_mutations(self) -> None:
        rec, ids = self.rec, self.ids
        admin_facts = {"actor_id": ids["admin"], "actor_username": ADMIN_USERNAME}
        alice, bob, ops = ids["alice"], ids["bob"], ids["group:ops"]
        operator = {"id": ids["role:operator"], "name": "operator"}
        viewer = {"id": ids["role:viewer"], "name": "viewer"}
        app_admin = {"id": ids["client-role:app-admin"], "name": "app-admin"}

        async def step(
            name: str,
            description: str,
            method: str,
            path: str,
            body: Any = None,
            expect: int | None = None,
            **facts: Any,
        ) -> Answer:
            rec.mark()
            ans = await self.admin(method, f"{R}/{path}", body)
            if expect is not None:
                assert ans.status == expect, (name, ans.status, ans.text[:300])
            rec.save(name, description, {**admin_facts, **facts, "status": ans.status})
            return ans

        await step(
            "admin_role_grant_user_realm",
            "POST users/{id}/role-mappings/realm [operator]",
            "POST",
            f"users/{alice}/role-mappings/realm",
            [operator],
            204,
            user_id=alice,
            role="operator",
        )
        await step(
            "admin_role_revoke_user_realm",
            "DELETE users/{id}/role-mappings/realm [operator]",
            "DELETE",
            f"users/{alice}/role-mappings/realm",
            [operator],
            204,
            user_id=alice,
            role="operator",
        )
        await step(
            "admin_role_grant_unknown_role",
            "a grant of a role that does not exist: 404 errorMessage",
            "POST",
            f"users/{alice}/role-mappings/realm",
            [{"id": "0" * 8 + "-0000-0000-0000-" + "0" * 12, "name": "no-such-role"}],
            user_id=alice,
            role="no-such-role",
        )
        await step(
            "admin_role_grant_user_client",
            "POST users/{id}/role-mappings/clients/{client uuid}",
            "POST",
            f"users/{alice}/role-mappings/clients/{ids['ledger-app']}",
            [app_admin],
            204,
            user_id=alice,
            role="app-admin",
            client_uuid=ids["ledger-app"],
        )
        await step(
            "admin_role_revoke_user_client",
            "DELETE users/{id}/role-mappings/clients/{client uuid}",
            "DELETE",
            f"users/{alice}/role-mappings/clients/{ids['ledger-app']}",
            [app_admin],
            204,
            user_id=alice,
            role="app-admin",
            client_uuid=ids["ledger-app"],
        )
        await step(
            "admin_role_grant_group_realm",
            "POST groups/{id}/role-mappings/realm",
            "POST",
            f"groups/{ops}/role-mappings/realm",
            [operator],
            204,
            group_id=ops,
            role="operator",
        )
        await step(
            "admin_role_revoke_group_realm",
            "DELETE groups/{id}/role-mappings/realm",
            "DELETE",
            f"groups/{ops}/role-mappings/realm",
            [operator],
            204,
            group_id=ops,
            role="operator",
        )
        await step(
            "admin_group_join",
            "PUT users/{id}/groups/{group id} (no body)",
            "PUT",
            f"users/{bob}/groups/{ops}",
            None,
            204,
            user_id=bob,
            group_id=ops,
        )
        await step(
            "admin_group_leave",
            "DELETE users/{id}/groups/{group id}",
            "DELETE",
            f"users/{bob}/groups/{ops}",
            None,
            204,
            user_id=bob,
            group_id=ops,
        )
        await step(
            "admin_composite_add",
            "POST roles/{name}/composites [viewer]",
            "POST",
            "roles/operator/composites",
            [viewer],
            204,
            role_name="operator",
            role="viewer",
        )
        await step(
            "admin_composite_remove",
            "DELETE roles/{name}/composites [viewer]",
            "DELETE",
            "roles/operator/composites",
            [viewer],
            204,
            role_name="operator",
            role="viewer",
        )
        await step(
            "admin_composite_add_by_id",
            "POST roles-by-id/{id}/composites [viewer]",
            "POST",
            f"roles-by-id/{operator['id']}/composites",
            [viewer],
            204,
            role_id=operator["id"],
            role="viewer",
        )
        await self.admin("DELETE", f"{R}/roles-by-id/{operator['id']}/composites", [viewer])

        created = await step(
            "admin_user_create_plain",
            "POST users without credentials",
            "POST",
            "users",
            {"username": "frank", "enabled": True, "email": "frank@example.test", "firstName": "Frank"},
            201,
            username="frank",
        )
        frank = created.location.rsplit("/", 1)[-1]
        ids["frank"] = frank
        rec.docs["admin_user_create_plain"]["facts"]["user_id"] = frank
        await step(
            "admin_user_create_conflict",
            "POST users with an existing username: 409 errorMessage",
            "POST",
            "users",
            {"username": "frank", "enabled": True},
            409,
            username="frank",
        )
        await step(
            "admin_user_update",
            "PUT users/{id} (profile fields)",
            "PUT",
            f"users/{frank}",
            {"firstName": "Franklin", "lastName": "Ford"},
            204,
            user_id=frank,
        )
        await step(
            "admin_user_disable",
            "PUT users/{id} {enabled: false}",
            "PUT",
            f"users/{frank}",
            {"enabled": False},
            204,
            user_id=frank,
        )
        await step(
            "admin_user_enable",
            "PUT users/{id} {enabled: true}",
            "PUT",
            f"users/{frank}",
            {"enabled": True},
            204,
            user_id=frank,
        )
        await step(
            "admin_reset_password",
            "PUT users/{id}/reset-password {type, value, temporary}",
            "PUT",
            f"users/{frank}/reset-password",
            {"type": "password", "value": "Frank-pw-2718!", "temporary": True},
            204,
            user_id=frank,
        )
        self.rec.red.secret("password", "Frank-pw-2718!")
        await step(
            "admin_credential_delete",
            "DELETE users/{id}/credentials/{credential id} (erin's OTP)",
            "DELETE",
            f"users/{ids['erin']}/credentials/{ids['erin-otp-2']}",
            None,
            204,
            user_id=ids["erin"],
            credential_id=ids["erin-otp-2"],
        )

        created = await step(
            "admin_client_create",
            "POST clients with a secret",
            "POST",
            "clients",
            {
                "clientId": "rec-client",
                "enabled": True,
                "publicClient": False,
                "secret": "rec-client-secret-5150",
                "serviceAccountsEnabled": True,
                "redirectUris": ["http://127.0.0.1/*"],
            },
            201,
            client="rec-client",
        )
        self.rec.red.secret("client_secret", "rec-client-secret-5150")
        client_uuid = created.location.rsplit("/", 1)[-1]
        rec.docs["admin_client_create"]["facts"]["client_uuid"] = client_uuid
        rot = await step(
            "admin_client_secret_rotate",
            "POST clients/{id}/client-secret: the new secret comes back",
            "POST",
            f"clients/{client_uuid}/client-secret",
            None,
            200,
            client_uuid=client_uuid,
        )
        self.keep(rot.json()["value"])
        await step(
            "admin_client_delete",
            "DELETE clients/{id}",
            "DELETE",
            f"clients/{client_uuid}",
            None,
            204,
            client_uuid=client_uuid,
        )

        imp = await step(
            "admin_impersonation",
            "POST users/{id}/impersonation: identity cookie for the target",
            "POST",
            f"users/{bob}/impersonation",
            None,
            200,
            user_id=bob,
        )
        for value in imp.headers.getall("Set-Cookie", []):
            self.keep(value.split(";", 1)[0].partition("=")[2])
        session = await self.token(
            {
                "grant_type": "password",
                "client_id": REALM.app.client_id,
                "client_secret": REALM.app.secret or "",
                "username": "carol",
                "password": REALM.carol.password,
            }
        )
        sid = session.json()["session_state"]
        await step(
            "admin_session_delete", "DELETE sessions/{session id}", "DELETE", f"sessions/{sid}", None, 204, session=sid
        )
        await step(
            "admin_user_logout",
            "POST users/{id}/logout (all sessions of the user)",
            "POST",
            f"users/{bob}/logout",
            None,
            204,
            user_id=bob,
        )
        await step("admin_user_delete", "DELETE users/{id}", "DELETE", f"users/{frank}", None, 204, user_id=frank)
        await step(
            "admin_logout_all", "POST logout-all (push not-before for the realm)", "POST", "logout-all", None, 200
        )

        alice_tok = await self.token(
            {
                "grant_type": "password",
                "client_id": REALM.app.client_id,
                "client_secret": REALM.app.secret or "",
                "username": "alice",
                "password": REALM.alice.password,
            }
        )
        rec.mark()
        forbidden = await self.admin(
            "POST", f"{R}/users/{bob}/role-mappings/realm", [operator], token=alice_tok.json()["access_token"]
        )
        rec.save(
            "admin_role_grant_forbidden",
            "a role grant with a token that lacks manage-users: 403",
            {"user_id": bob, "role": "operator", "actor_id": alice, "status": forbidden.status},
        )
        # a clean slate for the next run
        for name in ("erin", "gina"):
            await self.admin("DELETE", f"{R}/users/{ids[name]}")


def _other(code: str) -> str:
    """A six-digit code that is not `code`."""
    return f"{(int(code) + 500_000) % 1_000_000:06d}"


async def record(keycloak_url: str, port: int, out: Path) -> None:
    hooks = _Keep()
    proxy = ReverseProxy(keycloak_url, hooks, ProxyLimits())
    app = web.Application()
    app.cleanup_ctx.append(proxy.lifespan)
    proxy.add_routes(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    base = f"http://127.0.0.1:{port}"
    rec = Recorder(base, hooks, out)
    flows = Flows(rec)
    try:
        await flows.run()
    finally:
        await runner.cleanup()
    for _req, resp in hooks.seen:  # every secret that passed, saved or not, must be absent from the output
        for value in resp.headers.getall("Set-Cookie", []):
            flows.keep(value.split(";", 1)[0].partition("=")[2])
        data = resp.json()
        if isinstance(data, dict):
            flows.keep(*(str(data[k]) for k in ("access_token", "refresh_token", "id_token") if k in data))
    rec.write(flows.seen)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--keycloak", help="reuse a running Keycloak whose --hostname is http://127.0.0.1:PORT")
    ap.add_argument("--port", type=int, help="the port of that --hostname (with --keycloak)")
    args = ap.parse_args(argv)
    if args.keycloak:
        if not args.port:
            ap.error("--keycloak needs --port")
        asyncio.run(record(args.keycloak, args.port, args.out))
        return 0
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="kc-record-") as tmp:
        server = KeycloakServer(
            ensure_distribution(),
            Path(tmp),
            http_port=free_port(),
            management_port=free_port(),
            public_url=f"http://127.0.0.1:{port}",
            admin_username=ADMIN_USERNAME,
            admin_password=ADMIN_PASSWORD,
            realm_files=[REALM.file],
        )
        with server:
            asyncio.run(record(server.base_url, port, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
