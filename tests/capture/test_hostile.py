"""Hostile exchanges through the real capture hooks into a real ledger: it stays healthy and verifiable.

Each exchange goes through `LedgerHooks` (plan, before_forward, after_response) exactly as the proxy
drives it, with a real `Ledger` writer in a temporary directory, a `TokenVerifier` over a realm JWKS
generated here, and no state reader. The issue-8 reproductions come first (a float `sub` on /revoke, a
failed refresh grant, a logout id_token_hint, an integer beyond 2^53, a non-ASCII key, a 700 KB claim),
then a hypothesis property over arbitrary claims, forms and bodies.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from joserfc import jwt
from joserfc.jwk import RSAKey
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

from sidecar.audit.verifier import verify_directory
from sidecar.capture.hooks import LedgerHooks
from sidecar.capture.sessions import SessionDirectory
from sidecar.capture.tokens import TokenVerifier
from sidecar.core import framing
from sidecar.core.canonical import parse
from sidecar.core.events import MAX_DETAILS_BYTES, EventType, IdentityEvent, Outcome, Party
from sidecar.core.exchange import Pushback, RequestHead, RequestView, ResponseView
from sidecar.ledger.keystore import KeyStore
from sidecar.ledger.writer import Ledger
from sidecar.policy.schema import load_policy

REALM = "r"
ISS = f"http://sso.test/realms/{REALM}"
KEY = RSAKey.generate_key(2048, parameters={"kid": "k1", "alg": "RS256", "use": "sig"})


def unsigned(claims: object) -> str:
    """A JWT with these claims and no valid signature (what an attacker can send without any key)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(b'{"alg":"RS256","kid":"k1"}')
    return f"{head}.{b64(json.dumps(claims).encode())}.c2ln"  # json: big ints, lone surrogates, any keys


def signed(**claims: Any) -> str:
    now = int(time.time())
    return jwt.encode(
        {"alg": "RS256", "kid": "k1"}, {"iss": ISS, "iat": now, "exp": now + 300, **claims}, KEY, algorithms=["RS256"]
    )


def request(
    method: str,
    path: str,
    *,
    form: dict[str, str] | None = None,
    body: bytes = b"",
    ctype: str | None = None,
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
) -> RequestView:
    hdrs = CIMultiDict(headers or {})
    if form is not None:
        body, ctype = urlencode(form).encode(), "application/x-www-form-urlencoded"
    if ctype:
        hdrs["Content-Type"] = ctype
    head = RequestHead(
        method,
        path,
        path,
        MultiDictProxy(MultiDict(query or {})),
        CIMultiDictProxy(hdrs),
        "192.0.2.7",
        "http",
        "sso.test",
        "req-hostile",
    )
    return RequestView(head, body, False)


def response(status: int, body: object = None, headers: dict[str, str] | None = None) -> ResponseView:
    hdrs = CIMultiDict(headers or {})
    raw = b""
    if body is not None:
        raw = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    return ResponseView(status, CIMultiDictProxy(hdrs), raw, False)


class Rig:
    """The real hooks over a real ledger in a temporary directory."""

    def __init__(self, hooks: LedgerHooks, ledger: Ledger, data: Path) -> None:
        self.hooks, self.ledger, self.data = hooks, ledger, data

    async def exchange(self, req: RequestView, resp: ResponseView) -> None:
        if not self.hooks.plan(req.head).request_body:
            return
        token = await self.hooks.before_forward(req)
        assert not isinstance(token, Pushback), token
        assert await self.hooks.after_response(req, resp, token) is None

    def records(self) -> list[dict[str, Any]]:
        out = []
        for seg in sorted((self.data / "segments").glob("*.seg")):
            for frame in framing.iter_frames(seg.read_bytes()):
                if isinstance(frame, framing.Frame) and frame.kind == framing.RECORD:
                    out.append(parse(frame.body)["event"])
        return out

    def healthy_and_verifiable(self) -> None:
        assert self.ledger.broken is None


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    KeyStore(tmp_path).init("hostile.test/ledger")
    ledger = await Ledger.open(tmp_path)

    async def jwks(realm: str) -> dict[str, Any] | None:
        return {"keys": [KEY.as_dict(private=False)]} if realm == REALM else None

    async def whoami(realm: str, token: str, username: str | None, sid: str | None, client: str | None) -> None:
        return None

    hooks = LedgerHooks(
        ledger.append, load_policy(), TokenVerifier(jwks), SessionDirectory(b"s" * 32), whoami, b"f" * 32
    )
    yield Rig(hooks, ledger, tmp_path)
    await ledger.close()
    assert ledger.broken is None
    report = verify_directory(tmp_path, KeyStore(tmp_path).trust(), workers=1)
    assert report.ok, report.to_json()


REVOKE = f"/realms/{REALM}/protocol/openid-connect/revoke"
TOKEN = f"/realms/{REALM}/protocol/openid-connect/token"
LOGOUT = f"/realms/{REALM}/protocol/openid-connect/logout"


# ---------------------------------------------------------------------------- issue 8, item 1 reproduced
@pytest.mark.parametrize(
    "claims",
    [
        {"sub": 1.5},
        {"sub": 2**60, "sid": 2**70},
        {"sub": "u", "sid": {"ü": 1}, "azp": ["x"]},
        {"sub": "x" * 700_000},
        {"ä": "non-ascii key", "sub": "\ud800"},
    ],
    ids=["float-sub", "int-beyond-2^53", "odd-shapes", "700KB-claim", "non-ascii-key"],
)
async def test_revoke_with_hostile_claims_leaves_the_ledger_healthy(rig: Rig, claims: dict[str, Any]) -> None:
    """An unsigned token with float, huge-int, non-ASCII-keyed or 700 KB claims on /revoke gives a bounded record."""
    await rig.exchange(request("POST", REVOKE, form={"client_id": "webshop", "token": unsigned(claims)}), response(200))
    rec = rig.records()[-1]
    assert rec["type"] == "token.revoked" and rec["outcome"] == "unknown"
    assert rec["actor"] == {"kind": "unverified"}
    assert len(orjson.dumps(rec)) < MAX_DETAILS_BYTES + 4096
    rig.healthy_and_verifiable()


async def test_failed_refresh_and_logout_hint_with_hostile_claims(rig: Rig) -> None:
    """A failed refresh grant and a logout id_token_hint carrying hostile claims are recorded, never break the writer."""
    bad = unsigned({"sub": 1.5, "sid": 2**64, "preferred_username": "v" * 40_000, "ö": True})
    await rig.exchange(
        request("POST", TOKEN, form={"grant_type": "refresh_token", "client_id": "app", "refresh_token": bad}),
        response(400, {"error": "invalid_grant", "error_description": "Invalid refresh token"}),
    )
    await rig.exchange(request("GET", LOGOUT, query={"id_token_hint": bad}), response(400, {"error": "invalid"}))
    refresh, logout = rig.records()[-2:]
    assert refresh["type"] == "token.failed" and refresh["actor"] == {"kind": "unverified"}
    assert refresh["details"]["unverified"]["preferred_username"] == "v" * 255
    assert logout["type"] == "logout.completed" and logout["outcome"] == "failed"
    assert logout["actor"] == {"kind": "unverified"}
    rig.healthy_and_verifiable()


async def test_forged_revoke_is_not_a_success_by_the_named_user(rig: Rig) -> None:
    """A forged token naming a user on /revoke (Keycloak answers 200 to any token) is never that user's success."""
    await rig.exchange(
        request(
            "POST",
            REVOKE,
            form={
                "client_id": "app",
                "token": unsigned({"iss": ISS, "sub": "victim-id", "sid": "victim-sid", "typ": "Refresh"}),
            },
        ),
        response(200),
    )
    rec = rig.records()[-1]
    assert rec["outcome"] == "unknown" and rec["actor"] == {"kind": "unverified"}
    assert rec["details"]["unverified"]["sub"] == "victim-id" and "session" not in rec


async def test_refresh_token_seen_issued_vouches_for_its_revocation(rig: Rig) -> None:
    """A refresh token Keycloak issued through the sidecar is attributed to its user when it is revoked later."""
    refresh = unsigned({"iss": ISS, "sub": "u-7", "sid": "s-7", "typ": "Refresh"})
    access = signed(sub="u-7", sid="s-7", azp="app", preferred_username="gus")
    await rig.exchange(
        request(
            "POST", TOKEN, form={"grant_type": "password", "client_id": "app", "username": "gus", "password": "pw"}
        ),
        response(200, {"access_token": access, "refresh_token": refresh, "session_state": "s-7"}),
    )
    await rig.exchange(request("POST", REVOKE, form={"client_id": "app", "token": refresh}), response(200))
    rec = rig.records()[-1]
    assert rec["outcome"] == "succeeded" and rec["actor"]["id"] == "u-7" and rec["actor"]["username"] == "gus"
    # A forgery naming the same (known, not secret) sid and sub is still nobody's success.
    forged = unsigned({"iss": ISS, "sub": "u-7", "sid": "s-7", "typ": "Refresh", "jti": "other"})
    await rig.exchange(request("POST", REVOKE, form={"client_id": "app", "token": forged}), response(200))
    rec = rig.records()[-1]
    assert rec["outcome"] == "unknown" and rec["actor"] == {"kind": "unverified"}


async def test_unverified_admin_change_accepted_by_keycloak_raises_an_alarm(rig: Rig) -> None:
    """An admin change Keycloak accepted with a bearer token the sidecar could not verify is an alarm record."""
    token = unsigned({"iss": ISS, "sub": "admin-id", "preferred_username": "admin"})
    req = request(
        "POST",
        f"/admin/realms/{REALM}/users/u-1/role-mappings/realm",
        headers={"Authorization": f"Bearer {token}"},
        body=b'[{"id":"r1","name":"viewer"}]',
        ctype="application/json",
    )
    await rig.exchange(req, response(204))
    intent, outcome, alarm = rig.records()[-3:]
    for rec in (intent, outcome):
        assert rec["actor"] == {"kind": "unverified"} and rec["details"]["unverified"]["sub"] == "admin-id"
    assert outcome["type"] == "role.granted" and outcome["outcome"] == "succeeded"
    assert alarm["type"] == "alarm.raised" and alarm["details"]["reason"] == "unverified_token_accepted"
    assert alarm["details"]["event"] == "role.granted"


async def test_verified_admin_is_the_actor_and_no_alarm(rig: Rig) -> None:
    """A validly signed admin token names the actor (verified) and raises no alarm."""
    req = request(
        "POST",
        f"/admin/realms/{REALM}/users/u-1/role-mappings/realm",
        headers={"Authorization": f"Bearer {signed(sub='admin-id', preferred_username='admin', azp='admin-cli')}"},
        body=b'[{"id":"r1","name":"viewer"}]',
        ctype="application/json",
    )
    await rig.exchange(req, response(204))
    recs = rig.records()
    assert recs[-1]["type"] == "role.granted" and recs[-1]["actor"]["id"] == "admin-id"
    assert recs[-1]["details"]["actor_verified"] is True
    assert not any(r["type"] == "alarm.raised" for r in recs)


async def test_cookie_values_cannot_redact_attribution(rig: Rig) -> None:
    """Cookies whose values equal the actor, target, realm and role leave every identity field of the record intact."""
    token = signed(sub="admin-id", preferred_username="admin", azp="admin-cli")
    req = request(
        "POST",
        f"/admin/realms/{REALM}/users/target-id/role-mappings/realm",
        headers={
            "Authorization": f"Bearer {token}",
            "Cookie": f"a=admin-id; b=target-id; c={REALM}; d=viewer; e=192.0.2.7; f=role.granted; g=succeeded",
        },
        body=b'[{"id":"r1","name":"viewer"}]',
        ctype="application/json",
    )
    await rig.exchange(req, response(204))
    rec = rig.records()[-1]
    assert rec["actor"]["id"] == "admin-id" and rec["target"]["id"] == "target-id" and rec["realm"] == REALM
    assert rec["details"]["roles"] == ["viewer"] and rec["ip"] == "192.0.2.7"
    assert rec["type"] == "role.granted" and rec["outcome"] == "succeeded"
    assert "[redacted]" not in orjson.dumps(rec).decode()


async def test_password_in_username_field_is_only_a_fingerprint(rig: Rig) -> None:
    """A failed password grant whose login name cannot be confirmed as a user's keeps only a keyed fingerprint."""
    typed = "Secret-Typed-Into-Username-9!"
    await rig.exchange(
        request(
            "POST",
            TOKEN,
            form={"grant_type": "password", "client_id": "app", "username": typed, "password": "x", "extra": typed},
        ),
        response(401, {"error": "invalid_grant", "error_description": "Invalid user credentials"}),
    )
    rec = rig.records()[-1]
    assert rec["type"] == "login.failed" and typed not in orjson.dumps(rec).decode()
    assert len(rec["details"]["username_fp"]) == 32 and rec["details"]["username_status"] == "unchecked"
    assert rec["client"] == "app"


@pytest.mark.parametrize(
    ("body", "ctype", "note"),
    [
        (b"\xef\xbb\xbf" + b'[{"id":"r1","name":"viewer"}]', "application/json", "bom"),
        ('[{"id":"r1","name":"viewer"}]'.encode("utf-16-le"), "application/json", "utf-16-le"),
        ('[{"id":"r1","name":"viewer"}]'.encode("utf-32"), "application/json", "bom,utf-32-be"),
        (b'[{"id":"r1","name":"viewer"}] trailing', "application/json", "trailing-content"),
        (b'[{"id":"r1","name":"viewer","description":"\\ud800"}]', "application/json", "lone-surrogate"),
        (b'[{"id":"r1","name":"viewer"}]', None, "no-content-type"),
    ],
)
async def test_bodies_are_read_as_keycloak_reads_them(rig: Rig, body: bytes, ctype: str | None, note: str) -> None:
    """Role grants with a BOM, UTF-16/32, trailing bytes, a lone surrogate or no Content-Type name the role, flagged."""
    token = signed(sub="admin-id", azp="admin-cli")
    await rig.exchange(
        request(
            "POST",
            f"/admin/realms/{REALM}/users/u-1/role-mappings/realm",
            body=body,
            ctype=ctype,
            headers={"Authorization": f"Bearer {token}"},
        ),
        response(204),
    )
    rec = rig.records()[-1]
    assert rec["details"]["roles"] == ["viewer"] and rec["details"]["body_read"].startswith(note.split(",")[0])
    assert "all_roles" not in rec["details"]


@pytest.mark.parametrize("value", [b'"false"', b"0", b'" FALSE "', b"false"])
async def test_lenient_false_disables_the_user(rig: Rig, value: bytes) -> None:
    """{"enabled": "false" | 0 | " FALSE " | false}, all of which Keycloak applies as false, are user.disabled."""
    token = signed(sub="admin-id", azp="admin-cli")
    await rig.exchange(
        request(
            "PUT",
            f"/admin/realms/{REALM}/users/u-1",
            body=b'{"enabled":' + value + b"}",
            ctype="application/json",
            headers={"Authorization": f"Bearer {token}"},
        ),
        response(204),
    )
    assert rig.records()[-1]["type"] == "user.disabled"


async def test_delete_with_an_empty_list_is_not_all_roles(rig: Rig) -> None:
    """DELETE role-mappings with `[]` removes nothing in Keycloak; only a DELETE without a body is all_roles."""
    token = signed(sub="admin-id", azp="admin-cli")
    path = f"/admin/realms/{REALM}/users/u-1/role-mappings/realm"
    await rig.exchange(
        request("DELETE", path, body=b"[]", ctype="application/json", headers={"Authorization": f"Bearer {token}"}),
        response(204),
    )
    await rig.exchange(request("DELETE", path, headers={"Authorization": f"Bearer {token}"}), response(204))
    empty_list, no_body = rig.records()[-3], rig.records()[-1]
    assert "all_roles" not in empty_list["details"] and empty_list["details"]["roles"] == []
    assert no_body["details"]["all_roles"] is True


# ---------------------------------------------------------------------------- the typed boundary itself
def test_event_boundary_bounds_every_field() -> None:
    """An event built from hostile values holds only bounded, canonically encodable values, and says what it cut."""
    from sidecar.core.canonical import canonical_bytes

    event = IdentityEvent(
        EventType.LOGIN_FAILED,
        Outcome.FAILED,
        realm="r" * 1000,
        actor=Party(id=1.5, username="\ud800x"),  # type: ignore[arg-type]  # hostile on purpose
        details={"n": 2**64, "f": 0.1, "ü": 1, "deep": [[[[[[[[1]]]]]]]], "big": ["x" * 2000] * 300},
    )
    data = event.to_json()
    canonical_bytes(data)
    assert data["realm"] == "r" * 255 and data["actor"] == {"id": "1.5", "username": "\ufffdx"}
    assert data["details"]["n"] == str(2**64) and data["details"]["f"] == "0.1"
    assert "ü" not in data["details"] and len(orjson.dumps(data)) < MAX_DETAILS_BYTES + 2048
    assert {"realm", "details.?"} <= set(data["details"]["bounded"])


# ---------------------------------------------------------------------------- property
_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.text(min_size=300, max_size=3000),
)
_json = st.recursive(
    _scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=5)),
    max_leaves=20,
)
_claims = st.dictionaries(
    st.sampled_from(["sub", "sid", "azp", "preferred_username", "iss", "typ", "ä", "x"]), _json, max_size=6
)
_form = st.dictionaries(
    st.sampled_from(
        [
            "grant_type",
            "username",
            "password",
            "client_id",
            "token",
            "refresh_token",
            "id_token_hint",
            "token_type_hint",
            "kc_action",
            "otp",
            "x",
        ]
    ),
    st.text(max_size=60),
    max_size=6,
)
_body = st.one_of(st.binary(max_size=200), _json.map(lambda v: json.dumps(v).encode()))
_paths = st.sampled_from(
    [
        REVOKE,
        TOKEN,
        LOGOUT,
        f"/realms/{REALM}/login-actions/authenticate",
        f"/realms/{REALM}/login-actions/required-action",
        f"/realms/{REALM}/account/",
        f"/admin/realms/{REALM}/users/u-1/role-mappings/realm",
        f"/admin/realms/{REALM}/users/u-1",
        f"/admin/realms/{REALM}/users",
        f"/admin/realms/{REALM}/groups/g/role-mappings/realm",
        f"/admin/realms/{REALM}/organizations/o/members",
        f"/admin/{REALM}/console/whoami",
    ]
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(
    path=_paths,
    method=st.sampled_from(["POST", "PUT", "DELETE", "GET"]),
    claims=_claims,
    form=_form,
    body=_body,
    as_form=st.booleans(),
    status=st.sampled_from([200, 204, 302, 400, 401]),
    resp_body=_json,
    cookie_claims=_claims,
)
def test_any_exchange_leaves_the_ledger_healthy_and_verifiable(
    tmp_path_factory: pytest.TempPathFactory,
    path: str,
    method: str,
    claims: dict[str, Any],
    form: dict[str, str],
    body: bytes,
    as_form: bool,
    status: int,
    resp_body: object,
    cookie_claims: dict[str, Any],
) -> None:
    """Arbitrary claims, forms and bodies through the real hooks never break the writer, and the ledger verifies."""
    data = tmp_path_factory.mktemp("prop")

    async def run() -> None:
        KeyStore(data).init("hostile.test/prop")
        ledger = await Ledger.open(data)

        async def jwks(realm: str) -> dict[str, Any] | None:
            return {"keys": [KEY.as_dict(private=False)]}

        async def whoami(
            realm: str, token: str, username: str | None, sid: str | None, client: str | None
        ) -> dict[str, Any] | None:
            return {"userId": resp_body, "displayName": claims.get("x")}  # hostile whoami answers too

        hooks = LedgerHooks(
            ledger.append, load_policy(), TokenVerifier(jwks), SessionDirectory(b"s" * 32), whoami, b"f" * 32
        )
        headers = {
            "Authorization": f"Bearer {unsigned(claims)}",
            "Cookie": f"KEYCLOAK_IDENTITY={unsigned(cookie_claims)}; AUTH_SESSION_ID=a1",
        }
        req_form = {**form, "token": form.get("token") or unsigned(claims)}
        req = (
            request(method, path, form=req_form, headers=headers)
            if as_form
            else request(
                method,
                path,
                body=body,
                ctype="application/json",
                headers=headers,
                query={k: v for k, v in form.items() if k in ("id_token_hint", "kc_action", "client_id")},
            )
        )
        set_cookie = {"Set-Cookie": f"KEYCLOAK_IDENTITY={unsigned(cookie_claims)}; Path=/"}
        resp = response(status, resp_body, set_cookie)
        rig = Rig(hooks, ledger, data)
        await rig.exchange(req, resp)
        assert ledger.broken is None
        await ledger.close()
        assert ledger.broken is None

    asyncio.run(run())
    report = verify_directory(data, KeyStore(data).trust(), workers=1)
    assert report.ok, report.to_json()


async def test_logout_keycloak_accepted_with_an_unverifiable_hint_is_an_alarm(rig: Rig) -> None:
    """Keycloak ending a session for an id_token_hint the sidecar could not verify vouches for it, and raises an alarm."""
    hint = unsigned({"iss": ISS, "sub": "u-9", "sid": "s-9", "typ": "ID"})
    await rig.exchange(
        request("GET", LOGOUT, query={"id_token_hint": hint}),
        response(302, headers={"Location": "http://app.test/bye"}),
    )
    logout, alarm = rig.records()[-2:]
    assert logout["type"] == "logout.completed" and logout["actor"]["id"] == "u-9"
    assert alarm["type"] == "alarm.raised" and alarm["details"]["event"] == "logout.completed"


async def test_logout_with_a_verified_hint_names_its_user_without_alarm(rig: Rig) -> None:
    """A genuine (signature-verified) id_token_hint names the user who logged out, even when Keycloak refuses."""
    hint = signed(sub="u-10", sid="s-10", typ="ID", preferred_username="ida")
    await rig.exchange(request("GET", LOGOUT, query={"id_token_hint": hint}), response(400, {"error": "x"}))
    rec = rig.records()[-1]
    assert rec["actor"]["id"] == "u-10" and rec["outcome"] == "failed" and rec["details"]["attributed_by"] != "none"
    assert not any(r["type"] == "alarm.raised" for r in rig.records())


@pytest.mark.parametrize("active", [True, False])
async def test_revoke_of_a_refresh_token_issued_elsewhere_asks_keycloak(tmp_path: Path, active: bool) -> None:
    """A revoked refresh token the sidecar never saw issued (another cluster node's) is attributed only when
    Keycloak's introspection, asked with the request's own client credentials before the revocation, says whose it is."""
    KeyStore(tmp_path).init("hostile.test/cluster")
    ledger = await Ledger.open(tmp_path)
    asked: list[tuple[str, dict[str, str], dict[str, str]]] = []
    rt = unsigned({"typ": "Refresh", "sub": "u-claimed", "sid": "s-1", "azp": "webshop"})

    async def jwks(realm: str) -> dict[str, Any] | None:
        return None

    async def whoami(realm: str, token: str, username: str | None, sid: str | None, client: str | None) -> None:
        return None

    async def introspect(realm: str, token: str, headers: dict[str, str], client: dict[str, str]) -> dict[str, Any]:
        asked.append((realm, headers, client))
        if not active or token != rt:
            return {"active": False}
        return {"active": True, "sub": "u-alice", "username": "alice", "client_id": "webshop", "typ": "Refresh"}

    hooks = LedgerHooks(
        ledger.append,
        load_policy(),
        TokenVerifier(jwks),
        SessionDirectory(b"s" * 32),
        whoami,
        b"f" * 32,
        introspect=introspect,
    )
    rig = Rig(hooks, ledger, tmp_path)
    form = {"client_id": "webshop", "client_secret": "shh", "token": rt, "token_type_hint": "refresh_token"}
    await rig.exchange(request("POST", REVOKE, form=form), response(200))
    await ledger.close()
    assert asked == [(REALM, {}, {"client_id": "webshop", "client_secret": "shh"})]
    rec = rig.records()[-1]
    assert rec["type"] == "token.revoked"
    if active:
        assert rec["outcome"] == "succeeded" and rec["actor"]["id"] == "u-alice", rec
        assert rec["actor"].get("username") == "alice"
    else:
        assert rec["outcome"] == "unknown" and rec["actor"] == {"kind": "unverified"}, rec
