"""Sample identity activity against Keycloak through the sidecar, for the demo and the tests.

Plain HTTP clients (aiohttp), no browser: a browser-style form login (fetch the
login page, post the form to the action URL the page names), direct grants,
client credentials, and admin REST calls with an `admin-cli` token, as kcadm
makes them. Each client keeps its own cookie jar, like a browser would.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp

_FORM_ACTION = re.compile(r'<form[^>]*id="kc-form-login"[^>]*action="([^"]+)"', re.S)
_ANY_ACTION = re.compile(r'<form[^>]*action="([^"]+)"', re.S)


@dataclass(frozen=True)
class LoginResult:
    ok: bool
    status: int
    code: str | None
    error_shown: bool


async def browser_login(
    base: str, realm: str, client_id: str, username: str, password: str, redirect_uri: str
) -> LoginResult:
    """Walk the login page the way a browser does (without JavaScript); returns whether a code came back."""
    # Keycloak marks its cookies Secure on loopback (a secure context for browsers); a browser sends
    # them to http://127.0.0.1, so this client must treat the sidecar's origin as secure too.
    jar = aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=[base])
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        query = urlencode(
            {
                "client_id": client_id,
                "redirect_uri": redirect_uri,
                "response_type": "code",
                "scope": "openid",
                "state": "demo-state",
                "nonce": "demo-nonce",
            }
        )
        async with http.get(f"{base}/realms/{realm}/protocol/openid-connect/auth?{query}") as resp:
            page = await resp.text()
            if resp.status != 200:
                raise RuntimeError(f"login page answered {resp.status}")
        m = _FORM_ACTION.search(page) or _ANY_ACTION.search(page)
        if m is None:
            raise RuntimeError("no login form on the login page")
        action = html.unescape(m.group(1))
        if not action.startswith(base):
            raise RuntimeError(f"login form posts to {action}, not through the sidecar at {base}")
        async with http.post(
            action, data={"username": username, "password": password, "credentialId": ""}, allow_redirects=False
        ) as resp:
            body = await resp.text()
            location = resp.headers.get("Location", "")
            code = parse_qs(urlsplit(location).query).get("code", [None])[0] if location else None
            error = resp.status == 200 and ("input-error" in body or "kc-feedback" in body)
            return LoginResult(code is not None, resp.status, code, error)


async def token(base: str, realm: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/realms/{realm}/protocol/openid-connect/token", data=form) as resp:
            return resp.status, await resp.json(content_type=None)


async def direct_grant(
    base: str, realm: str, client_id: str, secret: str | None, username: str, password: str
) -> tuple[int, dict[str, Any]]:
    form = {
        "grant_type": "password",
        "client_id": client_id,
        "username": username,
        "password": password,
        "scope": "openid",
    }
    if secret:
        form["client_secret"] = secret
    return await token(base, realm, form)


async def client_credentials(base: str, realm: str, client_id: str, secret: str) -> tuple[int, dict[str, Any]]:
    return await token(
        base, realm, {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    )


class Admin:
    """Admin REST calls with an admin-cli password-grant token (lightweight in Keycloak 26, like kcadm's)."""

    def __init__(self, base: str, username: str, password: str, realm: str = "master") -> None:
        self.base = base
        self.username = username
        self.password = password
        self.realm = realm
        self._token: str | None = None
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Admin:
        self._http = aiohttp.ClientSession()
        status, data = await token(
            self.base,
            self.realm,
            {"grant_type": "password", "client_id": "admin-cli", "username": self.username, "password": self.password},
        )
        if status != 200:
            raise RuntimeError(f"admin login failed: {data.get('error')}")
        self._token = data["access_token"]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.close()

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        assert self._http is not None
        async with self._http.request(
            method, f"{self.base}/admin/realms/{path}", json=body, headers={"Authorization": f"Bearer {self._token}"}
        ) as resp:
            text = await resp.text()
            try:
                data = await resp.json(content_type=None) if text else None
            except ValueError:
                data = text
            return resp.status, data

    async def user_id(self, realm: str, username: str) -> str:
        status, users = await self.call("GET", f"{realm}/users?exact=true&username={username}")
        if status != 200 or not users:
            raise RuntimeError(f"user {username} not found in {realm}")
        return str(users[0]["id"])

    async def role(self, realm: str, name: str) -> dict[str, Any]:
        status, role = await self.call("GET", f"{realm}/roles/{name}")
        if status != 200:
            raise RuntimeError(f"role {name} not found in {realm}")
        return {"id": role["id"], "name": role["name"]}

    async def grant_realm_role(self, realm: str, user_id: str, role: dict[str, Any]) -> int:
        return (await self.call("POST", f"{realm}/users/{user_id}/role-mappings/realm", [role]))[0]

    async def revoke_realm_role(self, realm: str, user_id: str, role: dict[str, Any]) -> int:
        return (await self.call("DELETE", f"{realm}/users/{user_id}/role-mappings/realm", [role]))[0]
