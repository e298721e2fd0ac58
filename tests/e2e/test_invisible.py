"""The sidecar is invisible on the real Keycloak: the same requests, direct and through it, get the same answers.

Each request is sent to Keycloak's own port and to the sidecar, one after the other, and the two
answers are compared: status and reason, header lines in order (names case-insensitively), body
bytes. What legitimately differs per request is normalised first, with the reason next to each rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from sidecar.harness.keycloak import KeycloakServer
from sidecar.harness.realm import REALM
from tests import oracle
from tests.fixtures_keycloak import ADMIN_PASSWORD, ADMIN_USERNAME
from tests.fixtures_sidecar import SidecarProcess

pytestmark = [pytest.mark.keycloak]

# Headers each side stamps for itself: none. Keycloak sends neither Date nor Server, and the proxy
# suppresses the ones aiohttp would add (sidecar/proxy/forward.py, _MirrorStreamResponse).
STAMPED: frozenset[str] = frozenset()
# Values Keycloak mints afresh for every request, so two direct requests differ in them too:
PER_REQUEST = (
    # the login-actions code bound to this rendering of the form (rotates on every page)
    (re.compile(rb"session_code=[A-Za-z0-9_-]+"), b"session_code=*"),
    # the browser-tab id of the new authentication session
    (re.compile(rb"tab_id=[A-Za-z0-9_-]+"), b"tab_id=*"),
    # the hash of the new authentication session, for the multi-tab checker script
    (re.compile(rb'checkAuthSession\(\s*"[^"]*"'), b'checkAuthSession("*"'),
)
# Cookies whose values are per-request (session ids, encrypted restart state, session hash).
PER_REQUEST_COOKIES = frozenset({"AUTH_SESSION_ID", "KC_RESTART", "KC_AUTH_SESSION_HASH"})


@dataclass(frozen=True)
class Answer:
    status: int
    reason: str | None
    headers: list[tuple[str, str]]
    body: bytes


async def _fetch(http: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> Answer:
    async with http.request(method, url, allow_redirects=False, **kw) as resp:
        body = await resp.read()
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in resp.raw_headers]
        return Answer(resp.status, resp.reason, headers, body)


def _cookie(value: str) -> str:
    """A Set-Cookie line with the value of a per-request cookie replaced (name and attributes kept)."""
    name, _, rest = value.partition("=")
    if name in PER_REQUEST_COOKIES:
        _, _, attrs = rest.partition(";")
        return f"{name}=*;{attrs}"
    return value


def _normal(answer: Answer) -> tuple[int, str | None, list[tuple[str, str]], bytes]:
    headers = []
    for name, value in answer.headers:
        low = name.lower()  # HTTP header names are case-insensitive; aiohttp writes Content-Length
        if low in STAMPED:
            continue
        headers.append((low, _cookie(value) if low == "set-cookie" else value))
    body = answer.body
    for pattern, repl in PER_REQUEST:
        body = pattern.sub(repl, body)
    return answer.status, answer.reason, headers, body


async def _both(
    keycloak: KeycloakServer, sidecar: SidecarProcess, method: str, path: str, **kw: Any
) -> tuple[Answer, Answer]:
    # No cookie jar and no decompression: what each side sent is what is compared.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False) as http:
        direct = await _fetch(http, method, keycloak.base_url + path, **kw)
        proxied = await _fetch(http, method, sidecar.base_url + path, **kw)
    return direct, proxied


def _assert_same(direct: Answer, proxied: Answer) -> None:
    d, p = _normal(direct), _normal(proxied)
    assert d[:2] == p[:2], f"status: direct {d[:2]}, proxied {p[:2]}"
    assert d[2] == p[2], f"headers differ:\n direct  {d[2]}\n proxied {p[2]}"
    assert d[3] == p[3], f"body differs ({len(d[3])} vs {len(p[3])} bytes)"


LOGIN_PAGE = f"/realms/{REALM.name}/protocol/openid-connect/auth?" + urlencode(
    {
        "client_id": REALM.app.client_id,
        "redirect_uri": "http://127.0.0.1/cb",
        "response_type": "code",
        "scope": "openid",
        "state": "invisible-1",
        "nonce": "n-1",
    }
)


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("GET", f"/realms/{REALM.name}/.well-known/openid-configuration", {}),
        ("GET", f"/realms/{REALM.name}/.well-known/openid-configuration", {"Accept-Encoding": "gzip"}),
        ("HEAD", f"/realms/{REALM.name}/.well-known/openid-configuration", {}),
        ("GET", f"/realms/{REALM.name}/protocol/openid-connect/certs", {}),
        ("GET", f"/realms/{REALM.name}/no-such-endpoint", {}),
        ("GET", "/admin/realms/no-such-realm/users", {}),
    ],
)
async def test_public_reads_are_identical(
    keycloak: KeycloakServer, sidecar: SidecarProcess, method: str, path: str, headers: dict[str, str]
) -> None:
    """Discovery (plain, gzip, HEAD), JWKS, a 404 and an unauthenticated admin call answer identically through the sidecar."""
    direct, proxied = await _both(keycloak, sidecar, method, path, headers=headers)
    assert direct.status in (200, 401, 404)
    _assert_same(direct, proxied)


async def test_login_page_is_identical_with_all_its_cookies(keycloak: KeycloakServer, sidecar: SidecarProcess) -> None:
    """The login page is the same page, and its three Set-Cookie lines arrive in order with the same attributes."""
    direct, proxied = await _both(keycloak, sidecar, "GET", LOGIN_PAGE)
    assert direct.status == 200
    names = [v.partition("=")[0] for k, v in proxied.headers if k.lower() == "set-cookie"]
    assert names == ["AUTH_SESSION_ID", "KC_AUTH_SESSION_HASH", "KC_RESTART"], names
    assert f'action="{sidecar.base_url}/realms/'.encode() in proxied.body
    _assert_same(direct, proxied)


async def test_failed_password_grant_is_identical(keycloak: KeycloakServer, sidecar: SidecarProcess) -> None:
    """A wrong-password grant gets the same 400 invalid_grant body and headers through the sidecar."""
    form = {
        "grant_type": "password",
        "client_id": REALM.app.client_id,
        "client_secret": REALM.app.secret or "",
        "username": REALM.dave.username,
        "password": "not-" + REALM.dave.password,
    }
    direct, proxied = await _both(
        keycloak, sidecar, "POST", f"/realms/{REALM.name}/protocol/openid-connect/token", data=form
    )
    assert direct.status == 400 and b"invalid_grant" in direct.body
    _assert_same(direct, proxied)


async def test_admin_read_with_a_token_is_identical(
    keycloak: KeycloakServer, sidecar: SidecarProcess, secrets_seen: set[str]
) -> None:
    """An admin REST read with a bearer token returns the same users, bytes and headers through the sidecar."""
    token = await oracle.admin_token(keycloak.base_url, ADMIN_USERNAME, ADMIN_PASSWORD)
    secrets_seen.add(token)
    path = f"/admin/realms/{REALM.name}/users?briefRepresentation=true&max=50&search=a"
    direct, proxied = await _both(keycloak, sidecar, "GET", path, headers={"Authorization": f"Bearer {token}"})
    assert direct.status == 200 and b'"username":"alice"' in direct.body
    _assert_same(direct, proxied)
