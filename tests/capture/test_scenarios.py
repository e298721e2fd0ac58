"""Scenario tests: given an exchange recorded off Keycloak 26.7.3, expect these events.

Every file in tests/capture/exchanges/ (written by tests/capture/record_exchanges.py) is driven
through the real capture pipeline (sidecar.capture.pipeline: both phases, with its own session
memory), given only the facts the async layer would fetch: the bearer token's verified claims. The
later steps of a browser login are driven after the earlier steps of the same recorded login, so the
pipeline itself remembers what they need. `facts` in each file are the ids and names the recording
knew to be true.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from sidecar.capture import classify as c
from sidecar.capture.hooks import keyed_fingerprint
from sidecar.capture.pipeline import BearerFacts, CapturePipeline, Facts, HintFacts
from sidecar.capture.sessions import Principal, SessionDirectory
from sidecar.capture.tokens import Claims, unverified_claims
from sidecar.core.events import IdentityEvent
from tests.capture.recorded import DIR, Recorded, load, names

ABSENT = object()
FP_KEY = b"scenario-fingerprint-key-0123456"


@dataclass(frozen=True)
class F:
    """A value taken from the exchange's facts."""

    key: str


Expected = dict[str, Any]

# The exchanges of the same recorded login that the pipeline sees first, so it remembers what the later
# step needs (the username of the password step, the kc_action of the /auth request).
PRECEDED_BY: dict[str, tuple[str, ...]] = {
    "login_otp_wrong": ("login_password_then_otp",),
    "login_otp_ok": ("login_password_then_otp",),
    "required_action_totp_wrong": ("login_password_required_action",),
    "required_action_totp_ok": ("login_password_required_action",),
    "required_action_delete_credential": ("auth_kc_action_delete_credential",),
    "required_action_delete_credential_cancel": ("auth_kc_action_delete_credential",),
    "required_action_aia_configure_totp": ("auth_kc_action_configure_totp",),
}
# Logins whose first step was not recorded: the attempt the pipeline already remembers (cookie, username).
REMEMBERED: dict[str, tuple[str, str]] = {
    name: ("COOKIE-AUTH_SESSION_ID-6", "gina")
    for name in (
        "required_action_totp_then_next",
        "required_action_update_password_mismatch",
        "required_action_update_password",
    )
}


def new_pipeline() -> CapturePipeline:
    return CapturePipeline(SessionDirectory(b"s" * 32), keyed_fingerprint(FP_KEY))


def bearer_facts(r: Recorded) -> BearerFacts | None:
    """The recorded bearer token as the async layer would resolve it: Keycloak accepted it, so it verified.

    (The recordings keep the claims but not the signatures; the signature check itself is tested in
    tests/capture/test_tokens.py.)
    """
    claims = Claims.of(r.bearer_claims(), verified=True)
    return BearerFacts(True, claims) if claims is not None else None


def drive(pipe: CapturePipeline, r: Recorded) -> list[IdentityEvent]:
    """One recorded exchange through the real pipeline, both phases, with the facts the hooks would fetch."""
    bearer = bearer_facts(r)
    needs = pipe.needs_before(r.request)
    pending = pipe.begin(r.request, Facts(bearer=bearer if needs.bearer else None))
    if pending is None:
        return []
    after = pipe.needs_after(pending, r.request)
    # A recorded ID or access token is a genuine Keycloak token (its signature was cut from the recording):
    # it verified. A refresh token is HMAC-signed and never verifies against the published keys.
    hint = None
    if after.hint:
        raw = unverified_claims(after.hint) or {}
        hint = HintFacts(after.hint, Claims.of(raw, verified=True) if raw.get("typ") in ("ID", "Bearer") else None)
    return pipe.finish(pending, r.request, r.response, Facts(bearer=bearer if after.bearer else None, hint=hint))


def classify(name: str, pipe: CapturePipeline | None = None) -> list[IdentityEvent]:
    """Run the capture pipeline on one recorded exchange, after the exchanges that precede it."""
    pipe = pipe or new_pipeline()
    if name in REMEMBERED:
        cookie, username = REMEMBERED[name]
        pipe.sessions.attempts.put(pipe.sessions.attempt_key(cookie), Principal(None, username, REALM))
    for earlier in PRECEDED_BY.get(name, ()):
        drive(pipe, load(earlier))
    return drive(pipe, load(name))


def _get(obj: dict[str, Any], path: str) -> Any:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return ABSENT
        cur = cur[part]
    return cur


def _resolve(value: Any, facts: dict[str, Any]) -> Any:
    if isinstance(value, F):
        return facts[value.key]
    if isinstance(value, list):
        return [_resolve(v, facts) for v in value]
    return value


def E(type_: str, outcome: str, **fields: Any) -> Expected:
    """One expected event: its type, outcome and dotted-path fields (`actor__id` -> actor.id)."""
    return {"type": type_, "outcome": outcome, **{k.replace("__", "."): v for k, v in fields.items()}}


REALM = "ledger-test"
USER = "user"
EXPECT: dict[str, list[Expected]] = {
    # ------------------------------------------------------------------ browser logins
    "auth_login_page": [],
    "login_password_wrong": [
        E(
            "login.failed",
            "failed",
            actor__username=F("username"),
            actor__id=ABSENT,
            error="invalid_user_credentials",
            client=F("client"),
            details__step="password",
        )
    ],
    "login_password_ok": [
        E(
            "login.succeeded",
            "succeeded",
            actor__id=F("user_id"),
            actor__username=F("username"),
            session=F("session"),
            client=F("client"),
            details__method="browser",
        )
    ],
    "auth_sso_cookie": [
        E(
            "login.succeeded",
            "succeeded",
            actor__id=F("user_id"),
            session=F("session"),
            client=F("client"),
            details__method="sso-cookie",
        )
    ],
    "login_password_required_action": [],
    "login_password_then_otp": [],
    "login_otp_wrong": [
        E(
            "mfa.otp.failed",
            "failed",
            actor__username=F("username"),
            error="invalid_user_credentials",
            details__step="otp",
        )
    ],
    "login_otp_ok": [
        E("mfa.otp.verified", "succeeded", actor__id=F("user_id"), actor__username=F("username"), session=F("session")),
        E(
            "login.succeeded",
            "succeeded",
            actor__id=F("user_id"),
            actor__username=F("username"),
            session=F("session"),
            details__step="otp",
        ),
    ],
    "login_registration_invalid": [
        E(
            "user.created",
            "failed",
            target__username=F("username"),
            details__via="registration",
            details__fields=["password-confirm"],
        )
    ],
    "login_registration": [
        E(
            "user.created",
            "succeeded",
            target__id=F("user_id"),
            target__username=F("username"),
            details__via="registration",
        ),
        E("login.succeeded", "succeeded", actor__id=F("user_id"), session=F("session"), details__step="registration"),
    ],
    # ------------------------------------------------------------------ required / application-initiated actions
    "required_action_page": [],
    "required_action_totp_wrong": [
        E(
            "credential.enrolled",
            "failed",
            actor__username=F("username"),
            error="invalid_otp",
            details__credential_type="otp",
        )
    ],
    "required_action_totp_ok": [
        E(
            "credential.enrolled",
            "succeeded",
            actor__id=F("user_id"),
            target__id=F("user_id"),
            session=F("session"),
            details__credential_type="otp",
        ),
        E(
            "login.succeeded",
            "succeeded",
            actor__id=F("user_id"),
            actor__username=F("username"),
            session=F("session"),
            details__step="CONFIGURE_TOTP",
        ),
    ],
    "required_action_totp_then_next": [
        E("credential.enrolled", "succeeded", actor__username=F("username"), details__credential_type="otp")
    ],
    "required_action_update_password_mismatch": [
        E("password.changed", "failed", actor__username=F("username"), error="invalid_input")
    ],
    "required_action_update_password": [
        E("password.changed", "succeeded", actor__id=F("user_id"), session=F("session")),
        E("login.succeeded", "succeeded", actor__id=F("user_id"), details__step="UPDATE_PASSWORD"),
    ],
    "auth_kc_action_configure_totp": [],
    "required_action_aia_configure_totp": [
        E("credential.enrolled", "succeeded", actor__id=F("user_id"), details__kc_action="CONFIGURE_TOTP"),
        E("login.succeeded", "succeeded", actor__id=F("user_id"), details__kc_action_status="success"),
    ],
    "auth_kc_action_delete_credential": [],
    "required_action_delete_credential_cancel": [
        E("login.succeeded", "succeeded", actor__id=F("user_id"), details__kc_action_status="cancelled")
    ],
    "required_action_delete_credential": [
        E(
            "credential.removed",
            "succeeded",
            actor__id=F("user_id"),
            target__id=F("user_id"),
            details__credential_id=F("credential_id"),
        ),
        E("login.succeeded", "succeeded", actor__id=F("user_id"), details__kc_action_status="success"),
    ],
    # ------------------------------------------------------------------ logout
    "logout_id_token_hint": [
        E("logout.completed", "succeeded", actor__id=F("user_id"), session=F("session"), client=F("client"))
    ],
    "logout_confirm_page": [],
    # Only the presented identity cookie names the user, and the pipeline never saw Keycloak open that session.
    "logout_confirm_post": [
        E(
            "logout.completed",
            "succeeded",
            actor__kind="unverified",
            actor__id=ABSENT,
            details__unverified__sub=F("user_id"),
            details__unverified__sid=F("session"),
        )
    ],
    "logout_refresh_token": [E("logout.completed", "succeeded", actor__id=F("user_id"), client=F("client"))],
    # A refresh token the pipeline never saw issued, answered 200 (as Keycloak answers any token, RFC 7009).
    "revoke_refresh_token": [
        E(
            "token.revoked",
            "unknown",
            actor__kind="unverified",
            actor__id=ABSENT,
            details__unverified__sub=F("user_id"),
            client=F("client"),
            details__token_type_hint="refresh_token",
        )
    ],
    # ------------------------------------------------------------------ token endpoint
    "token_password_admin_cli": [
        E(
            "login.succeeded",
            "succeeded",
            realm="master",
            actor__username=F("username"),
            actor__id=ABSENT,
            client="admin-cli",
            details__grant="password",
        )
    ],
    "token_password_ok": [
        E(
            "login.succeeded",
            "succeeded",
            actor__id=F("user_id"),
            actor__username="dave",
            client=F("client"),
            details__grant="password",
        )
    ],
    "token_password_wrong": [
        E(
            "login.failed",
            "failed",
            actor__username="dave",
            error="invalid_grant",
            details__error_description="Invalid user credentials",
        )
    ],
    "token_client_credentials": [
        E(
            "token.issued",
            "succeeded",
            actor__kind="client",
            actor__client=F("client"),
            client=F("client"),
            details__grant="client_credentials",
        )
    ],
    "token_client_credentials_wrong": [E("token.failed", "failed", client=F("client"), error="unauthorized_client")],
    "token_refresh": [
        E("token.refreshed", "succeeded", actor__id=F("user_id"), actor__username=F("username"), client=F("client"))
    ],
    "token_refresh_invalid": [E("token.failed", "failed", error="invalid_grant", details__grant="refresh_token")],
    "token_authorization_code": [
        E(
            "token.issued",
            "succeeded",
            actor__id=F("user_id"),
            actor__username=F("username"),
            session=F("session"),
            client=F("client"),
            details__grant="authorization_code",
        )
    ],
    "token_authorization_code_pkce": [
        E("token.issued", "succeeded", actor__id=F("user_id"), session=F("session"), client=F("client"))
    ],
    "token_authorization_code_reused": [E("token.failed", "failed", error="invalid_grant", client=F("client"))],
    "token_admin_console_code": [
        E(
            "token.issued",
            "succeeded",
            realm="master",
            actor__id=F("user_id"),
            actor__username=F("username"),
            session=F("session"),
            client="security-admin-console",
        )
    ],
    "whoami_console": [],
    "whoami_admin_cli": [],
    # ------------------------------------------------------------------ account REST
    "account_credential_delete": [
        E(
            "credential.removed",
            "succeeded",
            actor__id=F("user_id"),
            details__credential_id=F("credential_id"),
            details__via="account",
        )
    ],
    "account_profile_update": [
        E(
            "user.updated",
            "succeeded",
            actor__id=F("user_id"),
            details__via="account",
            details__fields=["email", "firstName", "lastName", "username"],
        )
    ],
    # ------------------------------------------------------------------ admin REST (outcome records)
    "admin_role_grant_user_realm": [
        E("role.granted", "succeeded", target__id=F("user_id"), target__kind=USER, details__roles=["operator"])
    ],
    "admin_role_revoke_user_realm": [
        E("role.revoked", "succeeded", target__id=F("user_id"), details__roles=["operator"], details__all_roles=ABSENT)
    ],
    "admin_role_grant_unknown_role": [E("role.granted", "failed", error="Role not found", details__status=404)],
    "admin_role_grant_forbidden": [E("role.granted", "failed", error="HTTP 403 Forbidden", details__status=403)],
    "admin_role_grant_user_client": [
        E(
            "role.granted",
            "succeeded",
            target__id=F("user_id"),
            details__roles=["app-admin"],
            details__client_uuid=F("client_uuid"),
        )
    ],
    "admin_role_revoke_user_client": [
        E(
            "role.revoked",
            "succeeded",
            target__id=F("user_id"),
            details__roles=["app-admin"],
            details__client_uuid=F("client_uuid"),
        )
    ],
    "admin_role_grant_group_realm": [
        E("role.granted", "succeeded", target__id=F("group_id"), target__kind="group", details__roles=["operator"])
    ],
    "admin_role_revoke_group_realm": [
        E("role.revoked", "succeeded", target__id=F("group_id"), details__roles=["operator"])
    ],
    "admin_ui_ext_revoke_user_realm_role": [
        E(
            "role.revoked",
            "succeeded",
            target__id=F("user_id"),
            details__roles=["viewer"],
            details__role_ids=[F("role_id")],
            details__client_uuid=ABSENT,
        )
    ],
    "admin_ui_ext_revoke_user_client_role": [
        E(
            "role.revoked",
            "succeeded",
            target__id=F("user_id"),
            details__roles=["app-user"],
            details__client_uuid=F("client_uuid"),
        )
    ],
    "admin_ui_ext_revoke_group_realm_role": [
        E("role.revoked", "succeeded", target__id=F("group_id"), target__kind="group", details__roles=["viewer"])
    ],
    "admin_ui_ext_remove_composite": [
        E(
            "role.composite.changed",
            "succeeded",
            target__id=F("role_id"),
            details__change="removed",
            details__roles=["viewer"],
        )
    ],
    "admin_composite_add": [
        E(
            "role.composite.changed",
            "succeeded",
            target__id=F("role_name"),
            details__change="added",
            details__roles=["viewer"],
        )
    ],
    "admin_composite_remove": [
        E(
            "role.composite.changed",
            "succeeded",
            target__id=F("role_name"),
            details__change="removed",
            details__roles=["viewer"],
        )
    ],
    "admin_composite_add_by_id": [
        E("role.composite.changed", "succeeded", target__id=F("role_id"), details__change="added")
    ],
    "admin_group_join": [E("group.joined", "succeeded", target__id=F("user_id"), details__group_id=F("group_id"))],
    "admin_group_leave": [E("group.left", "succeeded", target__id=F("user_id"), details__group_id=F("group_id"))],
    "admin_user_create": [
        E(
            "user.created",
            "succeeded",
            target__username=F("username"),
            details__created_id=F("user_id"),
            details__fields=[
                "credentials",
                "email",
                "emailVerified",
                "enabled",
                "firstName",
                "lastName",
                "requiredActions",
                "username",
            ],
        )
    ],
    "admin_user_create_plain": [
        E("user.created", "succeeded", target__username=F("username"), details__created_id=F("user_id"))
    ],
    "admin_user_create_conflict": [
        E("user.created", "failed", error="User exists with same username", details__status=409)
    ],
    "admin_user_update": [
        E("user.updated", "succeeded", target__id=F("user_id"), details__fields=["firstName", "lastName"])
    ],
    "admin_user_disable": [E("user.disabled", "succeeded", target__id=F("user_id"))],
    "admin_user_enable": [E("user.enabled", "succeeded", target__id=F("user_id"))],
    "admin_user_delete": [E("user.deleted", "succeeded", target__id=F("user_id"))],
    "admin_reset_password": [E("password.reset", "succeeded", target__id=F("user_id"), details__temporary=True)],
    "admin_credential_delete": [
        E("credential.removed", "succeeded", target__id=F("user_id"), details__credential_id=F("credential_id"))
    ],
    "admin_client_create": [
        E("client.created", "succeeded", target__client=F("client"), details__created_id=F("client_uuid"))
    ],
    "admin_client_secret_rotate": [
        E("client.secret.rotated", "succeeded", target__id=F("client_uuid"), target__kind="client")
    ],
    "admin_client_delete": [E("client.deleted", "succeeded", target__id=F("client_uuid"))],
    "admin_impersonation": [E("user.impersonated", "succeeded", target__id=F("user_id"))],
    "admin_session_delete": [E("session.revoked", "succeeded", target__id=F("session"), target__kind="session")],
    "admin_user_logout": [E("session.revoked", "succeeded", target__id=F("user_id"), target__kind=USER)],
    "admin_logout_all": [E("session.revoked", "succeeded", target__kind="realm", target__name=REALM)],
}


def test_every_recorded_exchange_has_an_expectation() -> None:
    """The playbook covers exactly the recorded exchanges, so a new recording cannot go unchecked."""
    assert set(EXPECT) == set(names())


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_recorded_exchange_gives_expected_events(name: str) -> None:
    """Each recorded Keycloak exchange is classified into exactly the expected events, fields and outcomes."""
    r = load(name)
    got = [e.to_json() for e in classify(name)]
    want = EXPECT[name]
    assert [(e["type"], e["outcome"]) for e in got] == [(w["type"], w["outcome"]) for w in want], got
    for event, expected in zip(got, want, strict=True):
        for path, value in expected.items():
            if value is ABSENT:
                assert _get(event, path) is ABSENT, (path, event)
            else:
                assert _get(event, path) == _resolve(value, r.facts), (path, event)
        assert event["realm"] == expected.get("realm", REALM)


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_records_hold_no_placeholder_for_a_secret(name: str) -> None:
    """No event built from a recorded exchange carries a value that stood for a secret in the exchange."""
    text = orjson.dumps([e.to_json() for e in classify(name)]).decode()
    # placeholders look like PASSWORD-1, COOKIE-AUTH_SESSION_ID-2, CLAIM-STATE_CHECKER-3 (tests/capture/redact.py)
    assert not re.search(r"\b[A-Z][A-Z_]*(?:-[A-Z_]+)*-\d+\b", text), text
    assert "REDACTED" not in text


def test_exchange_files_hold_no_secrets() -> None:
    """The committed recordings contain none of the realm's passwords or secrets, and no signed JWT."""
    from sidecar.harness.realm import REALM as TEST_REALM
    from tests.fixtures_keycloak import ADMIN_PASSWORD

    secrets = {ADMIN_PASSWORD, TEST_REALM.app.secret or "", TEST_REALM.robot.secret or ""}
    secrets.update(u.password for u in TEST_REALM.users)
    for path in DIR.glob("*.json"):
        text = path.read_text()
        for secret in secrets:
            assert secret not in text, (path.name, secret[:4])
        for m in re.finditer(r"eyJ[\w-]+\.eyJ[\w-]*\.([\w-]*)", text):
            assert m.group(1) == "REDACTED", (path.name, "a JWT with a real signature")


# ---------------------------------------------------------------------------- targeted behaviours
def test_always_present_error_containers_are_not_errors() -> None:
    """Every keycloak.v2 field has an empty `input-error-container-*`; a clean login page shows no error."""
    page = load("auth_login_page").response
    assert 'id="input-error-container-username"' in page.text()
    assert c.page_errors(page) == frozenset()
    assert c.page_id(page) == "login-login"


def test_warning_feedback_is_not_an_error() -> None:
    """The CONFIGURE_TOTP page carries a warning in `kc-feedback-text`; that is not an error."""
    page = load("required_action_page").response
    assert "kc-feedback-text" in page.text()
    assert c.page_errors(page) == frozenset()
    assert c.page_id(page) == "login-login-config-totp"


@pytest.mark.parametrize(
    ("name", "page", "errors"),
    [
        ("login_password_wrong", "login-login", {"username"}),
        ("login_password_then_otp", "login-login-otp", set()),
        ("login_otp_wrong", "login-login-otp", {"otp"}),
        ("required_action_totp_wrong", "login-login-config-totp", {"otp-code"}),
        ("required_action_totp_then_next", "login-login-update-password", set()),
        ("required_action_update_password_mismatch", "login-login-update-password", {"password-confirm"}),
        ("login_registration_invalid", "login-register", {"password-confirm"}),
        ("logout_confirm_page", "login-logout-confirm", set()),
        ("logout_confirm_post", "login-info", set()),
    ],
)
def test_page_ids_and_field_errors(name: str, page: str, errors: set[str]) -> None:
    """Login pages are told apart by data-page-id, and errors by the fields Keycloak marks."""
    resp = load(name).response
    assert c.page_id(resp) == page
    assert c.page_errors(resp) == errors


def test_otp_failure_names_the_user_from_the_page_without_context() -> None:
    """A wrong OTP is attributed by the attempted username the OTP page shows, even with no remembered attempt."""
    r = load("login_otp_wrong")
    rt = c.route(r.request.head)
    assert rt is not None
    events, remember = c.on_login_step(rt, r.request, r.response, c.LoginContext(), None)
    assert [e.type.value for e in events] == ["mfa.otp.failed"]
    assert events[0].actor is not None and events[0].actor.username == r.facts["username"]
    assert remember == r.facts["username"]


def test_password_step_passing_to_otp_is_remembered_not_recorded() -> None:
    """The password step that leads to the OTP form records nothing yet; the pipeline remembers the username."""
    for name, remembered in (
        ("login_password_then_otp", "erin"),
        ("login_password_required_action", "erin"),
        ("login_password_wrong", None),
    ):
        pipe = new_pipeline()
        r = load(name)
        events = drive(pipe, r)
        cookie = re.search(r"AUTH_SESSION_ID=([^;]+)", r.request.headers["Cookie"])
        assert cookie is not None
        known = pipe.sessions.attempts.get(pipe.sessions.attempt_key(cookie.group(1)))
        assert (known.username if known else None) == remembered, name
        assert remembered is None or events == [], name


def test_ui_ext_role_mapping_delete_body_shape() -> None:
    """The console's unassign posts [{roleId, roleName, clientId?}] with clientId the client's UUID."""
    realm_body = load("admin_ui_ext_revoke_user_realm_role").request.json()
    client = load("admin_ui_ext_revoke_user_client_role")
    assert isinstance(realm_body, list) and set(realm_body[0]) == {"roleId", "roleName"}
    body = client.request.json()
    assert isinstance(body, list) and set(body[0]) == {"roleId", "roleName", "clientId"}
    assert body[0]["clientId"] == client.facts["client_uuid"]


def test_kc_action_is_read_from_the_auth_request() -> None:
    """The credential an application-initiated delete_credential removes is named only on the /auth request."""
    r = load("auth_kc_action_delete_credential")
    assert c.kc_action_of(r.request) == f"delete_credential:{r.facts['credential_id']}"
    assert c.kc_action_of(r.request.head) == c.kc_action_of(r.request)
    assert load("required_action_delete_credential").request.query["execution"] == "delete_credential"


def test_lightweight_admin_tokens_carry_no_subject() -> None:
    """admin-cli and console access tokens and the admin-cli refresh token have no `sub` in 26.7.3 (only `sid`)."""
    cli = load("token_password_admin_cli")
    console = load("token_admin_console_code")
    for claims in (
        cli.response_claims("access_token"),
        cli.response_claims("refresh_token"),
        console.response_claims("access_token"),
    ):
        assert claims is not None and "sub" not in claims and claims.get("sid")
    id_token = console.response_claims("id_token")
    assert id_token is not None and id_token["sub"] == console.facts["user_id"]


def test_whoami_answers_only_console_tokens() -> None:
    """whoami maps a console token to the admin's user id and refuses admin-cli tokens with 403."""
    ok = load("whoami_console")
    data = ok.response.json()
    assert isinstance(data, dict) and data["userId"] == ok.facts["user_id"]
    assert load("whoami_admin_cli").response.status == 403


def test_logout_attribution_is_in_the_exchange() -> None:
    """Each logout exchange carries what attributes it: an id_token_hint, a refresh token or the identity cookie."""
    for name in ("logout_id_token_hint", "logout_confirm_post", "logout_refresh_token", "revoke_refresh_token"):
        r = load(name)
        events = [e.to_json() for e in classify(name)]
        assert len(events) == 1, name
        named = _get(events[0], "actor.id")
        assert named == r.facts["user_id"] or _get(events[0], "details.unverified.sub") == r.facts["user_id"], name


def test_route_covers_the_recorded_surfaces() -> None:
    """Every recorded exchange of an interesting kind is routed, and page GETs and reads pass through."""
    kinds: dict[str, c.Kind | None] = {}
    for name in names():
        rt = c.route(load(name).request.head)
        kinds[name] = rt.kind if rt else None
    assert kinds["required_action_page"] is None
    assert all(kinds[n] is c.Kind.ADMIN_WRITE for n in names() if n.startswith("admin_"))
    assert all(kinds[n] is c.Kind.TOKEN for n in names() if n.startswith("token_"))
    assert kinds["login_registration"] is c.Kind.LOGIN_STEP
    assert kinds["account_credential_delete"] is c.Kind.ACCOUNT_WRITE
    assert kinds["whoami_console"] is c.Kind.WHOAMI


def test_multi_set_cookie_and_identity_claims_are_kept() -> None:
    """A finishing login step sets several cookies; the identity cookie keeps sub and sid for correlation."""
    r = load("login_password_ok")
    cookies = [v.split("=", 1)[0] for k, v in r.response.headers.items() if k.lower() == "set-cookie"]
    assert {"KEYCLOAK_IDENTITY", "KEYCLOAK_SESSION", "KC_RESTART"} <= set(cookies)
    ident = r.identity()
    assert ident is not None and ident["sub"] == r.facts["user_id"] and ident["sid"] == r.facts["session"]
