"""Recognising Keycloak exchanges: request and response in, identity events out. [pure]

The proxy shows capture a bounded copy of each interesting exchange; this module
says which exchanges are interesting (`route`) and what they mean (`on_*`).
Everything needed from outside — who the bearer of a token is, which user a
browser session belongs to — is resolved by the caller and passed in as an
`Attribution` or a `LoginContext`, so this module does no I/O and is tested on
exchanges recorded off a real Keycloak 26.7.3 (tests/capture/).

Records are built from an allowlist of fields (user ids, usernames, client ids,
role and group names, session ids, error codes). Request and response bodies
are never copied into a record, so passwords, codes, tokens, secrets and
cookies have no path into the ledger (sidecar.policy.redaction checks it by field).

Keycloak behaviours this relies on, as recorded (docs/capture.md has the table):
* every login page names itself: `<body data-page-id="login-<template>">`
  (`login-login`, `login-login-otp`, `login-login-config-totp`, ...);
* a field error is `id="input-error-<field>"`, an error alert is `pf-m-danger`.
  Every field also has an always-present `id="input-error-container-<field>"`,
  and `kc-feedback-text` also marks warnings ("You need to set up ..."), so
  neither means "error";
* which step a browser post is comes from its form fields (`password`, `otp`,
  `clientDataJSON`, ...), not from the page it answers with;
* a 302 whose Location carries `code=` ends the flow (Keycloak records LOGIN),
  also after an application-initiated action (`kc_action_status=success` or
  `cancelled`); a 302 to /login-actions/required-action means the credentials
  passed and an action is pending; a 200 re-rendering the form with an error
  is a failure;
* on the token endpoint, success is 200 with `access_token`, failure is a JSON
  `error` (never the status alone);
* admin REST mutations are POST/PUT/DELETE under /admin/realms/{realm}/; the
  admin console revokes roles through `POST ui-ext/role-mapping-delete/...`
  with a body `[{roleId, roleName, clientId?}]` (clientId: the client's UUID).
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sidecar.capture import changes
from sidecar.capture.paths import keycloak_path
from sidecar.core.events import EventType, IdentityEvent, Outcome, Party
from sidecar.core.exchange import RequestHead, RequestView, ResponseView
from sidecar.core.jackson import lenient_bool


class Kind(enum.Enum):
    LOGIN_STEP = "login-step"
    REQUIRED_ACTION = "required-action"
    TOKEN = "token"
    LOGOUT = "logout"
    REVOKE = "revoke"
    AUTH = "auth"
    ADMIN_WRITE = "admin-write"
    ADMIN_READ = "admin-read"
    WHOAMI = "whoami"
    ACCOUNT_WRITE = "account-write"


@dataclass(frozen=True, slots=True)
class Route:
    """A recognised exchange. `parts` are the decoded path segments after /admin/realms/{realm}/,
    /realms/{realm}/account/, /realms/{realm}/clients-registrations/ or login-actions/ (see `paths`).
    `api` says which REST surface an ADMIN_WRITE came through: "admin" or "dcr"
    (Dynamic Client Registration, routed like an admin write: intent before forwarding)."""

    kind: Kind
    realm: str
    parts: tuple[str, ...] = ()
    api: str = "admin"


_WRITE = frozenset({"POST", "PUT", "DELETE", "PATCH"})
_NOT_MUTATING_POSTS = frozenset({("partial-export",), ("testSMTPConnection",)})
# Browser form posts that can finish a login (Keycloak then records LOGIN).
_LOGIN_POSTS = frozenset({"authenticate", "registration"})


def route(head: RequestHead) -> Route | None:
    """Which kind of Keycloak exchange this is, or None for pass-through.

    Matching runs on the path as Keycloak's router sees it (`paths.keycloak_path`:
    normalised, matrix parameters and one trailing slash dropped, template values
    decoded), so every spelling Keycloak routes to a resource is routed here too.
    """
    return _route(head.raw_path or head.path, head.method)


# A pure function of (target, method), asked several times per captured request; bounded like keycloak_path.
@functools.lru_cache(maxsize=4096)
def _route(target: str, method: str) -> Route | None:
    kp = keycloak_path(target)
    seg = kp.segments
    if len(seg) >= 2 and seg[0] == "realms":
        realm, rest = kp.value(1), kp.values(2)
        if rest[:1] == ("login-actions",) and len(rest) == 2:
            if method == "POST" and rest[1] in _LOGIN_POSTS:
                return Route(Kind.LOGIN_STEP, realm, (rest[1],))
            if method == "POST" and rest[1] == "required-action":
                return Route(Kind.REQUIRED_ACTION, realm, (rest[1],))
            return None
        if rest[:2] == ("protocol", "openid-connect"):
            ep = rest[2:]
            if ep == ("token",) and method == "POST":
                return Route(Kind.TOKEN, realm)
            if ep in (("logout",), ("logout", "logout-confirm")):
                return Route(Kind.LOGOUT, realm)
            if ep == ("revoke",) and method == "POST":
                return Route(Kind.REVOKE, realm)
            if ep == ("auth",) and method in ("GET", "POST"):
                return Route(Kind.AUTH, realm)  # SSO-cookie logins, kc_action starts, error redirects
            return None
        if rest[:1] == ("account",) and method in _WRITE:
            return Route(Kind.ACCOUNT_WRITE, realm, rest[1:])
        if rest[:1] == ("clients-registrations",) and len(rest) >= 2 and method in _WRITE:
            return Route(Kind.ADMIN_WRITE, realm, rest[1:], api="dcr")
        return None
    if len(seg) >= 3 and seg[:2] == ("admin", "realms"):
        parts = kp.values(3)
        if method in _WRITE and parts not in _NOT_MUTATING_POSTS:
            return Route(Kind.ADMIN_WRITE, kp.value(2), parts)
        return None
    if len(seg) == 4 and seg[0] == "admin" and seg[2:] == ("console", "whoami") and method == "GET":
        return Route(Kind.WHOAMI, kp.value(1))
    return None


def kc_action_of(request: RequestView | RequestHead) -> str | None:
    """The application-initiated action an /auth request starts (`CONFIGURE_TOTP`,
    `delete_credential:<credential id>`, ...), for the caller to remember until the
    required-action post that finishes it (whose query names only the alias)."""
    value = request.query.get("kc_action")
    if value is None and isinstance(request, RequestView):
        value = request.form().get("kc_action")
    return value or None


@dataclass(frozen=True, slots=True)
class Attribution:
    """Who is behind a request, as resolved by the caller from verified tokens and observed sessions."""

    actor: Party | None = None
    session: str | None = None
    client: str | None = None
    verified: bool = False


def _form_client(req: RequestView) -> str | None:
    form = req.form()
    client = form.get("client_id") or req.query.get("client_id")
    return client or None


def _location_params(resp: ResponseView) -> dict[str, str]:
    loc = resp.headers.get("Location", "")
    if not loc:
        return {}
    parts = urlsplit(loc)
    query = parts.query or parts.fragment
    return {k: v[0] for k, v in parse_qs(query).items()}


# ---------------------------------------------------------------------------------------------- pages
_PAGE_ID = re.compile(r'data-page-id="([A-Za-z0-9_-]+)"')
_TEMPLATE = re.compile(r"<!-- template: ([A-Za-z0-9_.-]+)\.ftl -->")
# keycloak.v2: id="input-error-<field>"; base theme: id="input-error". Never the always-present container.
_FIELD_ERROR = re.compile(r'id="input-error(?:-(?!container-)([A-Za-z0-9_-]+))?"')
_ATTEMPTED_USERNAME = re.compile(r'id="kc-attempted-username"[^>]*\bvalue="([^"]*)"')
_CREDENTIAL_FIELDS = frozenset({"username", "password"})


def _html(resp: ResponseView) -> str:
    ctype = resp.headers.get("Content-Type", "")
    return resp.text() if resp.body and "html" in ctype.lower() else ""


def page_id(resp: ResponseView) -> str:
    """Which login page a response is: its `data-page-id` (e.g. `login-login-otp`), or ""."""
    text = _html(resp)
    if m := _PAGE_ID.search(text):
        return m.group(1)
    if m := _TEMPLATE.search(text):  # themes without the body attribute still name their template
        return "login-" + m.group(1)
    return ""


def page_errors(resp: ResponseView) -> frozenset[str]:
    """The fields a login page marks as wrong; `"alert"` for an error alert, `"field"` for an unnamed one."""
    text = _html(resp)
    found = {m.group(1) or "field" for m in _FIELD_ERROR.finditer(text)}
    if "pf-m-danger" in text:  # the alert of a message of type "error" (both themes)
        found.add("alert")
    return frozenset(found)


def _attempted_username(resp: ResponseView) -> str | None:
    m = _ATTEMPTED_USERNAME.search(_html(resp))
    return m.group(1) if m and m.group(1) else None


def _login_error(errors: frozenset[str]) -> str:
    """Keycloak's own error code where the page shows which fields were wrong."""
    return (
        "invalid_user_credentials"
        if errors & _CREDENTIAL_FIELDS or "otp" in errors or "field" in errors
        else "login_error"
    )


# Keycloak's English messages on its error page (`login-error`) -> the error code its LOGIN_ERROR carries.
_ERROR_PAGE_CODES: tuple[tuple[str, str], ...] = (
    ("cookie not found", "cookie_not_found"),
    ("Invalid parameter: redirect_uri", "invalid_redirect_uri"),
    ("Client not found", "client_not_found"),
    ("Client disabled", "client_disabled"),
    ("Invalid Request", "invalid_request"),
    ("Invalid parameter", "invalid_request"),
    ("expired", "expired_code"),
)


def error_page(rt: Route, req: RequestView, resp: ResponseView, ctx: LoginContext) -> IdentityEvent | None:
    """A login flow answered with Keycloak's error page (HTTP 4xx, `login-error`), which Keycloak records
    as LOGIN_ERROR (or CUSTOM_REQUIRED_ACTION_ERROR): the login failed, before any user is known."""
    if resp.status < 400 or page_id(resp) != "login-error":
        return None
    text = _html(resp)
    code = next((c for needle, c in _ERROR_PAGE_CODES if needle in text), "login_error")
    actor = Party(id=ctx.user_id, username=ctx.username, kind="user") if ctx.user_id or ctx.username else None
    return IdentityEvent(
        EventType.LOGIN_FAILED,
        Outcome.FAILED,
        realm=rt.realm,
        client=_form_client(req),
        actor=actor,
        source_ip=req.client_ip,
        request_id=req.request_id,
        error=code,
        details={
            "method": "browser",
            "step": rt.parts[0] if rt.parts else "auth",
            "via": "error-page",
            "status": resp.status,
        },
    )


# ---------------------------------------------------------------------------------------------- logins
@dataclass(frozen=True, slots=True)
class LoginContext:
    """What the caller knows of the browser login in progress (from AUTH_SESSION_ID / identity cookie).

    `kc_action` is the application-initiated action the /auth request of this
    attempt named (`kc_action_of`), if the caller kept it.
    """

    username: str | None = None
    user_id: str | None = None
    session: str | None = None
    kc_action: str | None = None


def _step(form: Mapping[str, str], rt: Route) -> str:
    """Which login step a browser form post is, from the fields it carries."""
    if rt.parts[:1] == ("registration",):
        return "registration"
    if "otp" in form or "totp" in form:
        return "otp"
    if "password" in form:
        return "password"
    if "clientDataJSON" in form:
        return "webauthn"
    if "recoveryCodeInput" in form:
        return "recovery-code"
    if "authenticationExecution" in form:
        return "select-authenticator"
    if "username" in form:
        return "username"
    return "other"


_USER_FIELDS = (
    "username",
    "email",
    "firstName",
    "lastName",
    "enabled",
    "emailVerified",
    "requiredActions",
    "groups",
    "attributes",
    "federationLink",
    "credentials",
)


def on_login_step(
    rt: Route, req: RequestView, resp: ResponseView, ctx: LoginContext, identity: dict[str, Any] | None
) -> tuple[list[IdentityEvent], str | None]:
    """A browser form post to /login-actions/authenticate (or /registration).

    Returns the events and, when this step passed but the login is not over
    (another form or a required action follows), the username to remember for
    this login attempt. `identity` is the decoded KEYCLOAK_IDENTITY cookie the
    response sets, if any.
    """
    form = req.form()
    step = _step(form, rt)
    username = form.get("username") or ctx.username or _attempted_username(resp)
    client = _form_client(req)
    base = IdentityEvent(
        EventType.LOGIN_SUCCEEDED,
        Outcome.SUCCEEDED,
        realm=rt.realm,
        client=client,
        source_ip=req.client_ip,
        request_id=req.request_id,
        details={"method": "browser", "step": step},
    )
    params = _location_params(resp)
    location = resp.headers.get("Location", "")
    if resp.status in (302, 303) and ("code" in params or "error" in params or identity):
        user_id = (identity or {}).get("sub") or ctx.user_id
        session = (identity or {}).get("sid") or params.get("session_state") or ctx.session
        actor = Party(id=user_id, username=username, kind="user")
        if "error" in params and "code" not in params:
            return [
                replace(base, type=EventType.LOGIN_FAILED, outcome=Outcome.FAILED, actor=actor, error=params["error"])
            ], None
        events = []
        if step == "otp":
            events.append(replace(base, type=EventType.MFA_OTP_VERIFIED, actor=actor, session=session))
        if step == "registration":
            fields = sorted(k for k in form if k in _USER_FIELDS)
            events.append(
                replace(
                    base,
                    type=EventType.USER_CREATED,
                    actor=actor,
                    target=actor,
                    session=session,
                    details={"via": "registration", "fields": fields},
                )
            )
        events.append(replace(base, actor=actor, session=session))
        return events, None
    if resp.status in (302, 303) and "/login-actions/required-action" in location:
        # Credentials passed; a required action must finish before the login does. An OTP step that
        # passed here is recorded now: the login.succeeded that follows names the action's step.
        if step == "otp":
            return [
                replace(
                    base,
                    type=EventType.MFA_OTP_VERIFIED,
                    actor=Party(id=ctx.user_id, username=username, kind="user"),
                    session=ctx.session,
                    details={**base.details, "next": "required-action"},
                )
            ], username
        return [], username
    if (failed := error_page(rt, req, resp, ctx)) is not None:
        return [failed], None
    if resp.status != 200:
        return [], username
    errors = page_errors(resp)
    actor = Party(id=ctx.user_id, username=username, kind="user")
    if step == "otp":
        if errors:
            # Keycloak records LOGIN_ERROR / invalid_user_credentials for a wrong code
            return [
                replace(
                    base,
                    type=EventType.MFA_OTP_FAILED,
                    outcome=Outcome.FAILED,
                    actor=actor,
                    error="invalid_user_credentials",
                )
            ], username
        return [], username  # the form again without an error (e.g. another device chosen)
    if step == "registration":
        if errors:
            return [
                replace(
                    base,
                    type=EventType.USER_CREATED,
                    outcome=Outcome.FAILED,
                    actor=Party(username=username, kind="user"),
                    target=Party(username=username, kind="user"),
                    error="invalid_registration",
                    details={"via": "registration", "fields": sorted(errors - {"alert"})},
                )
            ], None
        return [], username
    if errors:
        return [
            replace(
                base,
                type=EventType.LOGIN_FAILED,
                outcome=Outcome.FAILED,
                actor=Party(username=username, kind="user"),
                error=_login_error(errors),
            )
        ], None
    return [], username  # this step passed, the next form follows (OTP, password, select-authenticator, ...)


# alias -> (credential type or None, event type, the page the action renders)
_ACTIONS: dict[str, tuple[str | None, EventType, str]] = {
    "CONFIGURE_TOTP": ("otp", EventType.CREDENTIAL_ENROLLED, "login-login-config-totp"),
    "UPDATE_PASSWORD": ("password", EventType.PASSWORD_CHANGED, "login-login-update-password"),
    "webauthn-register": ("webauthn", EventType.CREDENTIAL_ENROLLED, "login-webauthn-register"),
    "webauthn-register-passwordless": (
        "webauthn-passwordless",
        EventType.CREDENTIAL_ENROLLED,
        "login-webauthn-register",
    ),
    "CONFIGURE_RECOVERY_AUTHN_CODES": (
        "recovery-authn-codes",
        EventType.CREDENTIAL_ENROLLED,
        "login-login-recovery-authn-code-config",
    ),
    "delete_credential": (None, EventType.CREDENTIAL_REMOVED, "login-delete-credential"),
    "UPDATE_PROFILE": (None, EventType.USER_UPDATED, "login-login-update-profile"),
    "UPDATE_EMAIL": (None, EventType.USER_UPDATED, "login-update-email"),
}
_PROFILE_FIELDS = ("username", "email", "firstName", "lastName")


def on_required_action(
    rt: Route, req: RequestView, resp: ResponseView, ctx: LoginContext, identity: dict[str, Any] | None
) -> list[IdentityEvent]:
    """A required-action form post (CONFIGURE_TOTP, UPDATE_PASSWORD, webauthn-register, delete_credential, ...).

    Succeeded: a 302 with `code` (the login, or the application-initiated action,
    is over: Keycloak records LOGIN too), a 302 with `kc_action_status=success`,
    a 302 to the next required action, or a 200 with the next action's page.
    Failed: the action's own page again with an error. Declined (`cancel-aia`):
    no change, but the code redirect is still a LOGIN for Keycloak.
    """
    action = req.query.get("execution", "")
    form = req.form()
    user_id = (identity or {}).get("sub") or ctx.user_id
    session = (identity or {}).get("sid") or ctx.session
    actor = Party(id=user_id, username=ctx.username, kind="user")
    params = _location_params(resp)
    status = params.get("kc_action_status")
    redirect = resp.status in (302, 303)
    to_next_action = redirect and "/login-actions/required-action" in resp.headers.get("Location", "")
    known = _ACTIONS.get(action)
    own_page = known[2] if known else None
    page = page_id(resp) if resp.status == 200 else ""
    errors = page_errors(resp) if resp.status == 200 else frozenset()
    cancelled = "cancel-aia" in form or status == "cancelled"
    if redirect and ("code" in params or status or to_next_action):
        ok = status not in ("error", "cancelled")
    elif resp.status == 200 and page and page != own_page and not errors:
        ok = True  # served in place: the next required action's page
    elif resp.status == 200 and page == own_page and errors:
        ok = False
    elif (failed := error_page(rt, req, resp, ctx)) is not None:
        return [failed]
    else:
        return []  # re-rendered without an error (e.g. QR / manual mode switch)
    common: dict[str, Any] = {
        "realm": rt.realm,
        "client": _form_client(req),
        "source_ip": req.client_ip,
        "request_id": req.request_id,
        "session": session,
        "actor": actor,
        "target": actor,
    }
    details: dict[str, Any] = {"action": action}
    kc_action = ctx.kc_action or ""
    if kc_action:
        details["kc_action"] = kc_action.split(":", 1)[0]
    events: list[IdentityEvent] = []
    if known is not None and not cancelled:
        ctype, etype, _ = known
        if ctype is not None:
            details["credential_type"] = ctype
        if action == "delete_credential" and kc_action.startswith("delete_credential:"):
            details["credential_id"] = kc_action.split(":", 1)[1]
        if etype is EventType.USER_UPDATED:
            details["fields"] = sorted(k for k in form if k in _PROFILE_FIELDS)
            details["via"] = "required-action"
        if ok:
            events.append(IdentityEvent(etype, Outcome.SUCCEEDED, details=details, **common))
        else:
            error = params.get("error") or ("invalid_otp" if ctype == "otp" else "invalid_input")
            events.append(IdentityEvent(etype, Outcome.FAILED, error=error, details=details, **common))
    if redirect and "code" in params:
        login_details = {"method": "browser", "step": action}
        if status:
            login_details["kc_action_status"] = status
        events.append(
            IdentityEvent(
                EventType.LOGIN_SUCCEEDED, Outcome.SUCCEEDED, details=login_details, **{**common, "target": None}
            )
        )
    return events


# ---------------------------------------------------------------------------------------------- tokens
def on_token(
    rt: Route,
    req: RequestView,
    resp: ResponseView,
    client_auth: str | None,
    issued: dict[str, Any] | None,
    presented: dict[str, Any] | None,
) -> list[IdentityEvent]:
    """A token-endpoint call. `issued` are the verified claims of the returned access or ID token;
    `presented` the (unverified, for correlation) claims of a presented refresh token."""
    form = req.form()
    grant = form.get("grant_type", "")
    body = resp.json()
    data = body if isinstance(body, dict) else {}
    client = client_auth or form.get("client_id") or (issued or {}).get("azp")
    ok = resp.status == 200 and "access_token" in data
    error = None if ok else str(data.get("error") or f"http_{resp.status}")
    claims = issued or {}
    session = data.get("session_state") or claims.get("sid") or (presented or {}).get("sid")
    session = session if isinstance(session, str) else None
    details: dict[str, Any] = {"grant": grant or "none"}
    if not ok and isinstance(data.get("error_description"), str):
        details["error_description"] = data["error_description"][:200]
    common: dict[str, Any] = {
        "realm": rt.realm,
        "client": client,
        "source_ip": req.client_ip,
        "request_id": req.request_id,
        "session": session,
        "error": error,
    }
    outcome = Outcome.SUCCEEDED if ok else Outcome.FAILED
    if grant == "password":
        actor = Party(
            id=claims.get("sub"), username=form.get("username") or claims.get("preferred_username"), kind="user"
        )
        etype = EventType.LOGIN_SUCCEEDED if ok else EventType.LOGIN_FAILED
        return [IdentityEvent(etype, outcome, actor=actor, details=details, **common)]
    if grant == "client_credentials":
        actor = Party(id=claims.get("sub"), client=client, kind="client")
        etype = EventType.TOKEN_ISSUED if ok else EventType.TOKEN_FAILED
        return [IdentityEvent(etype, outcome, actor=actor, details=details, **common)]
    subject = claims or presented or {}
    actor = Party(id=subject.get("sub"), username=subject.get("preferred_username"), kind="user")
    if grant == "refresh_token":
        etype = EventType.TOKEN_REFRESHED if ok else EventType.TOKEN_FAILED
    elif grant == "urn:ietf:params:oauth:grant-type:token-exchange":
        etype = EventType.TOKEN_EXCHANGED if ok else EventType.TOKEN_FAILED
    else:
        etype = EventType.TOKEN_ISSUED if ok else EventType.TOKEN_FAILED
    return [IdentityEvent(etype, outcome, actor=actor, details=details, **common)]


def on_logout(rt: Route, req: RequestView, resp: ResponseView, attribution: Attribution) -> list[IdentityEvent]:
    """RP-initiated logout (GET/POST /logout, the confirm form, or POST with a refresh token).

    `GET /logout` without `id_token_hint` on a live session only shows the
    confirmation page (`login-logout-confirm`): nothing has ended yet.
    """
    if resp.status == 200 and page_id(resp) == "login-logout-confirm":
        return []  # nothing ended yet: the user must confirm
    ok = resp.status in (200, 204, 302, 303) and not (resp.status == 200 and page_errors(resp))
    data = resp.json()
    error = None
    if not ok:
        error = str(data["error"]) if isinstance(data, dict) and data.get("error") else f"http_{resp.status}"
    if not attribution.actor and not attribution.session and not ok:
        return []
    return [
        IdentityEvent(
            EventType.LOGOUT_COMPLETED,
            Outcome.SUCCEEDED if ok else Outcome.FAILED,
            realm=rt.realm,
            actor=attribution.actor,
            client=attribution.client or _form_client(req),
            session=attribution.session,
            source_ip=req.client_ip,
            request_id=req.request_id,
            error=error,
        )
    ]


def on_revoke(rt: Route, req: RequestView, resp: ResponseView, attribution: Attribution) -> list[IdentityEvent]:
    """RFC 7009 revocation: 200 (also for unknown tokens) is success."""
    ok = resp.status == 200
    return [
        IdentityEvent(
            EventType.TOKEN_REVOKED,
            Outcome.SUCCEEDED if ok else Outcome.FAILED,
            realm=rt.realm,
            actor=attribution.actor,
            client=attribution.client,
            session=attribution.session,
            source_ip=req.client_ip,
            request_id=req.request_id,
            error=None if ok else f"http_{resp.status}",
            details={"token_type_hint": req.form().get("token_type_hint", "")},
        )
    ]


def on_sso_auth(
    rt: Route, req: RequestView, resp: ResponseView, identity: dict[str, Any] | None, ctx: LoginContext
) -> list[IdentityEvent]:
    """GET /auth answered at once with a code: a login by SSO cookie, without credentials.

    With `kc_action` the answer is a 302 to the required action instead, and the
    login is recorded when that action finishes (`on_required_action`).
    """
    params = _location_params(resp)
    client = req.query.get("client_id") or req.form().get("client_id")
    if resp.status in (302, 303) and "error" in params and "code" not in params:
        # an error redirect to the client (login_required, unauthorized_client, ...): the login failed
        return [
            IdentityEvent(
                EventType.LOGIN_FAILED,
                Outcome.FAILED,
                realm=rt.realm,
                client=client,
                actor=Party(id=ctx.user_id, username=ctx.username, kind="user")
                if ctx.user_id or ctx.username
                else None,
                source_ip=req.client_ip,
                request_id=req.request_id,
                error=params["error"][:100],
                details={"method": "browser", "step": "auth", "via": "error-redirect"},
            )
        ]
    if (failed := error_page(rt, req, resp, ctx)) is not None:
        return [failed]
    if resp.status not in (302, 303) or "code" not in params:
        return []
    user_id = (identity or {}).get("sub") or ctx.user_id
    return [
        IdentityEvent(
            EventType.LOGIN_SUCCEEDED,
            Outcome.SUCCEEDED,
            realm=rt.realm,
            actor=Party(id=user_id, username=ctx.username, kind="user"),
            client=client,
            session=(identity or {}).get("sid") or params.get("session_state") or ctx.session,
            source_ip=req.client_ip,
            request_id=req.request_id,
            details={"method": "sso-cookie"},
        )
    ]


def on_account(rt: Route, req: RequestView, resp: ResponseView, attribution: Attribution) -> list[IdentityEvent]:
    """Account REST writes by the user themself (credential delete, profile update, sessions, consents)."""
    ok = 200 <= resp.status < 300
    parts = rt.parts
    details: dict[str, Any]
    if parts[:1] == ("credentials",) and req.method == "DELETE" and len(parts) == 2:
        etype, details = EventType.CREDENTIAL_REMOVED, {"credential_id": parts[1], "via": "account"}
    elif parts[:1] == ("sessions",) and req.method == "DELETE":
        etype, details = EventType.SESSION_REVOKED, {"via": "account", "path": "/".join(parts)}
    elif not parts and req.method == "POST":
        body = req.json()
        fields = sorted(k for k in body if k in _USER_FIELDS) if isinstance(body, dict) else []
        etype, details = EventType.USER_UPDATED, {"via": "account", "fields": fields}
    else:
        etype, details = (
            EventType.ADMIN_CHANGE,
            {"via": "account", "method": req.method, "path": "account/" + "/".join(parts)},
        )
    return [
        IdentityEvent(
            etype,
            Outcome.SUCCEEDED if ok else Outcome.FAILED,
            realm=rt.realm,
            actor=attribution.actor,
            target=attribution.actor,
            client=attribution.client,
            session=attribution.session,
            source_ip=req.client_ip,
            request_id=req.request_id,
            error=None if ok else f"http_{resp.status}",
            details=details,
        )
    ]


# ---------------------------------------------------------------------------------------------- admin
@dataclass(frozen=True, slots=True)
class AdminAction:
    """What a mutating admin request intends, known before it is forwarded."""

    type: EventType
    target: Party | None
    details: dict[str, Any] = field(default_factory=dict)
    reads: tuple[str, ...] = ()  # admin GET paths (relative to the realm) to read before and after (changes.py)


def _role_items(body: object) -> list[dict[str, Any]]:
    return [item for item in body if isinstance(item, dict)] if isinstance(body, list) else []


def _roles(body: object) -> list[str]:
    """Role names of a RoleRepresentation array (`name`) or a ui-ext delete body (`roleName`)."""
    out = []
    for item in _role_items(body):
        name = item.get("name") or item.get("roleName") or item.get("id") or item.get("roleId")
        if isinstance(name, str):
            out.append(name)
    return out


def _role_ids(body: object) -> list[str]:
    out = []
    for item in _role_items(body):
        rid = item.get("id") or item.get("roleId")
        if isinstance(rid, str):
            out.append(rid)
    return out


def _role_clients(body: object) -> list[str]:
    """Client UUIDs named by a ui-ext delete body (`clientId` is the client's UUID, absent for realm roles)."""
    out: list[str] = []
    for item in _role_items(body):
        if "roleName" in item or "roleId" in item:  # ui-ext/role-mapping-delete body
            cid = item.get("clientId")
        else:  # a RoleRepresentation
            cid = item.get("containerId") if item.get("clientRole") else None
        if isinstance(cid, str) and cid not in out:
            out.append(cid)
    return out


_CLIENT_FIELDS = (
    "clientId",
    "publicClient",
    "serviceAccountsEnabled",
    "directAccessGrantsEnabled",
    "standardFlowEnabled",
    "enabled",
    "protocol",
)

_RULES: tuple[tuple[str, str, EventType], ...] = (
    ("POST", "users", EventType.USER_CREATED),
    ("PUT", "users/{user}", EventType.USER_UPDATED),
    ("DELETE", "users/{user}", EventType.USER_DELETED),
    ("PUT", "users/{user}/reset-password", EventType.PASSWORD_RESET),
    ("DELETE", "users/{user}/credentials/{credential}", EventType.CREDENTIAL_REMOVED),
    ("PUT", "users/{user}/remove-totp", EventType.CREDENTIAL_REMOVED),
    ("POST", "users/{user}/role-mappings/realm", EventType.ROLE_GRANTED),
    ("DELETE", "users/{user}/role-mappings/realm", EventType.ROLE_REVOKED),
    ("POST", "users/{user}/role-mappings/clients/{client}", EventType.ROLE_GRANTED),
    ("DELETE", "users/{user}/role-mappings/clients/{client}", EventType.ROLE_REVOKED),
    ("POST", "groups/{group}/role-mappings/realm", EventType.ROLE_GRANTED),
    ("DELETE", "groups/{group}/role-mappings/realm", EventType.ROLE_REVOKED),
    ("POST", "groups/{group}/role-mappings/clients/{client}", EventType.ROLE_GRANTED),
    ("DELETE", "groups/{group}/role-mappings/clients/{client}", EventType.ROLE_REVOKED),
    ("POST", "ui-ext/role-mapping-delete/users/{user}", EventType.ROLE_REVOKED),
    ("POST", "ui-ext/role-mapping-delete/groups/{group}", EventType.ROLE_REVOKED),
    ("POST", "ui-ext/role-mapping-delete/roles/{role}", EventType.ROLE_COMPOSITE_CHANGED),
    ("PUT", "users/{user}/groups/{group}", EventType.GROUP_JOINED),
    ("DELETE", "users/{user}/groups/{group}", EventType.GROUP_LEFT),
    ("POST", "roles/{role}/composites", EventType.ROLE_COMPOSITE_CHANGED),
    ("DELETE", "roles/{role}/composites", EventType.ROLE_COMPOSITE_CHANGED),
    ("POST", "roles-by-id/{role}/composites", EventType.ROLE_COMPOSITE_CHANGED),
    ("DELETE", "roles-by-id/{role}/composites", EventType.ROLE_COMPOSITE_CHANGED),
    ("POST", "clients/{client}/roles/{role}/composites", EventType.ROLE_COMPOSITE_CHANGED),
    ("DELETE", "clients/{client}/roles/{role}/composites", EventType.ROLE_COMPOSITE_CHANGED),
    ("POST", "clients", EventType.CLIENT_CREATED),
    ("DELETE", "clients/{client}", EventType.CLIENT_DELETED),
    ("POST", "clients/{client}/client-secret", EventType.CLIENT_SECRET_ROTATED),
    ("POST", "users/{user}/impersonation", EventType.USER_IMPERSONATED),
    ("POST", "users/{user}/logout", EventType.SESSION_REVOKED),
    ("DELETE", "sessions/{session}", EventType.SESSION_REVOKED),
    ("POST", "logout-all", EventType.SESSION_REVOKED),
    ("POST", "organizations/{org}/members", EventType.ORGANIZATION_JOINED),
    ("DELETE", "organizations/{org}/members/{user}", EventType.ORGANIZATION_LEFT),
)


def admin_action(rt: Route, req: RequestView) -> AdminAction:
    """The intent of a mutating admin request, from the request alone."""
    body = req.json()
    path = "/".join(rt.parts)
    if rt.api == "dcr":
        dcr = changes.dcr_write(req.method, rt.parts, body)
        return AdminAction(dcr.type, dcr.target, dcr.details)
    for method, pattern, etype in _RULES:
        if method != req.method or (vars_ := changes.match(rt.parts, pattern)) is None:
            continue
        details: dict[str, Any] = {"method": req.method, "path": path}
        target: Party | None = None
        if "user" in vars_:
            target = Party(id=vars_["user"], kind="user")
        elif "group" in vars_:
            target = Party(id=vars_["group"], kind="group")
        elif "role" in vars_:
            target = Party(id=vars_["role"], kind="role")
        elif "session" in vars_:
            target = Party(id=vars_["session"], kind="session")
        elif "client" in vars_:
            target = Party(id=vars_["client"], kind="client")
        if "client" in vars_ and target is not None and target.kind != "client":
            details["client_uuid"] = vars_["client"]
        if "credential" in vars_:
            details["credential_id"] = vars_["credential"]
        if "group" in vars_ and target is not None and target.kind == "user":
            details["group_id"] = vars_["group"]
        if "org" in vars_:
            details["organization_id"] = vars_["org"]
            if isinstance(body, str):
                target = Party(id=body, kind="user")
        if etype in (EventType.ROLE_GRANTED, EventType.ROLE_REVOKED, EventType.ROLE_COMPOSITE_CHANGED):
            details["roles"] = _roles(body)
            if ids := _role_ids(body):
                details["role_ids"] = ids
            if "client_uuid" not in details and (clients := _role_clients(body)):
                if len(clients) == 1:
                    details["client_uuid"] = clients[0]
                else:
                    details["client_uuids"] = clients
            if etype is EventType.ROLE_COMPOSITE_CHANGED:
                details["change"] = "removed" if req.method == "DELETE" or "role-mapping-delete" in path else "added"
            if req.method == "DELETE" and not req.body and not req.body_truncated:
                details["all_roles"] = True  # Keycloak: a DELETE without a body removes every mapping
        if etype is EventType.USER_CREATED and isinstance(body, dict):
            details["fields"] = sorted(k for k in body if k in _USER_FIELDS)
            target = Party(username=str(body.get("username", "")) or None, kind="user")
        if etype is EventType.USER_UPDATED and isinstance(body, dict):
            details["fields"] = sorted(k for k in body if k in _USER_FIELDS)
            enabled = lenient_bool(body.get("enabled"))  # Jackson: "false", " FALSE ", 0 are false too
            if enabled is False:
                etype = EventType.USER_DISABLED
            elif enabled is True and set(body) <= {"enabled", "id", "username"}:
                etype = EventType.USER_ENABLED
            if isinstance(body.get("username"), str) and target is not None:
                target = replace(target, username=body["username"])
        if etype is EventType.PASSWORD_RESET and isinstance(body, dict):
            details["temporary"] = lenient_bool(body.get("temporary")) is True
        if etype is EventType.CLIENT_CREATED and isinstance(body, dict):
            details["fields"] = sorted(k for k in body if k in _CLIENT_FIELDS)
            target = Party(client=str(body.get("clientId", "")) or None, kind="client")
        if rt.parts == ("logout-all",):
            target = Party(kind="realm", name=rt.realm)
        return AdminAction(etype, target, details)
    if (named := changes.config_write(req.method, rt.parts, body)) is not None:
        return AdminAction(named.type, named.target, named.details, named.reads)
    details = {"method": req.method, "path": path}
    if rt.parts[:2] == ("ui-ext", "role-mapping-delete"):
        details["roles"] = _roles(body)  # client / client-scope scope mappings, removed by the console
    return AdminAction(EventType.ADMIN_CHANGE, None, details)


def admin_outcome(action: AdminAction, resp: ResponseView) -> tuple[Outcome, str | None, dict[str, Any]]:
    """Did Keycloak do it? 2xx is success; the error text comes from Keycloak's JSON body."""
    extra: dict[str, Any] = {"status": resp.status}
    if 200 <= resp.status < 300:
        loc = resp.headers.get("Location", "")
        if resp.status == 201 and loc:
            extra["created_id"] = loc.rstrip("/").rsplit("/", 1)[-1]
        return Outcome.SUCCEEDED, None, extra
    body = resp.json()
    error = None
    if isinstance(body, dict):
        error = body.get("errorMessage") or body.get("error") or body.get("error_description")
    return Outcome.FAILED, str(error)[:200] if error else f"http_{resp.status}", extra


def outcome_events(
    rt: Route,
    action: AdminAction,
    req: RequestView,
    resp: ResponseView,
    base: IdentityEvent,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    access_before: Mapping[str, Any] | None = None,
    access_after: Mapping[str, Any] | None = None,
) -> list[IdentityEvent]:
    """The outcome records of an admin (or DCR) write, refined from Keycloak's answer and the state reads.

    `base` is the request's own outcome record. `before` / `after` are the
    resources of `action.reads` (path -> JSON, None where a read failed);
    `access_*` the target's roles and groups. Adds: the DCR client Keycloak
    created; one record per object a partialImport reports; named realm
    categories with their before and after values; `unchanged` for a
    membership change that changed nothing.
    """
    ok = base.outcome is Outcome.SUCCEEDED
    data = resp.json() if ok else None
    if rt.api == "dcr" and ok and isinstance(data, dict):
        client = data.get("clientId") or data.get("client_id")
        uuid = data.get("id")
        target = replace(
            base.target or Party(kind="client"),
            client=str(client) if isinstance(client, str) else (base.target.client if base.target else None),
            id=str(uuid) if isinstance(uuid, str) else None,
        )
        return [replace(base, target=target)]
    if rt.parts == ("partialImport",) and req.method == "POST":
        if not ok or not isinstance(data, dict):
            return [base]
        counts = {k: data[k] for k in ("added", "overwritten", "skipped") if isinstance(data.get(k), int)}
        summary = replace(base, details={**base.details, **counts})
        return [summary, *changes.import_events(base, req.json(), data)]
    if action.reads and before is not None and after is not None:
        keep = changes.keep_of(action.type, "/".join(rt.parts), req.method)
        return changes.state_events(base, action.type, keep, before, after)
    if (
        ok
        and action.type in (EventType.GROUP_JOINED, EventType.GROUP_LEFT)
        and access_before is not None
        and access_after is not None
    ):
        group = base.details.get("group")
        groups_before = access_before.get("groups")
        if isinstance(group, str) and isinstance(groups_before, list):
            already = (group in groups_before) == (action.type is EventType.GROUP_JOINED)
            if already and access_before.get("groups") == access_after.get("groups"):
                # Keycloak answers 204 and records no admin event: the membership was already as asked.
                return [replace(base, outcome=Outcome.UNCHANGED)]
    return [base]
