"""Recognising Keycloak exchanges: request and response in, identity events out. [pure]

The proxy shows capture a bounded copy of each interesting exchange; this module
says which exchanges are interesting (`route`) and what they mean (`on_*`).
Everything needed from outside — who the bearer of a token is, which user a
browser session belongs to — is resolved by the caller and passed in as an
`Attribution`, so this module does no I/O and is tested on recorded exchanges.

Records are built from an allowlist of fields (user ids, usernames, client ids,
role and group names, session ids, error codes). Request and response bodies
are never copied into a record, so passwords, codes, tokens, secrets and
cookies have no path into the ledger; `scrub` is a second line of defence.

Keycloak behaviours this relies on (docs/capture.md has the full table):
* a browser login step posts to /login-actions/authenticate; a 302 whose
  Location carries `code=` ends the flow; a 200 re-rendering the same form
  with an error is a failure; the OTP form after a password post means the
  password step passed;
* on the token endpoint, success is 200 with `access_token`, failure is a JSON
  `error` (never the status alone);
* admin REST mutations are POST/PUT/DELETE under /admin/realms/{realm}/; the
  admin console revokes roles through `ui-ext/role-mapping-delete`.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sidecar.core.events import EventType, IdentityEvent, Outcome, Party
from sidecar.core.exchange import RequestHead, RequestView, ResponseView


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
    kind: Kind
    realm: str
    parts: tuple[str, ...] = ()  # path segments after /admin/realms/{realm}/ or /realms/{realm}/account/


_REALM = re.compile(r"^/realms/([^/]+)/(.*)$")
_ADMIN = re.compile(r"^/admin/realms/([^/]+)(?:/(.*))?$")
_WHOAMI = re.compile(r"^/admin/([^/]+)/console/whoami$")
_WRITE = frozenset({"POST", "PUT", "DELETE", "PATCH"})
_NOT_MUTATING_POSTS = frozenset({("partial-export",), ("testSMTPConnection",)})


def route(head: RequestHead) -> Route | None:
    """Which kind of Keycloak exchange this is, or None for pass-through."""
    path, method = head.path, head.method
    if m := _REALM.match(path):
        realm, rest = m.group(1), m.group(2)
        if rest.startswith("login-actions/"):
            action = rest[len("login-actions/"):]
            if method == "POST" and action == "authenticate":
                return Route(Kind.LOGIN_STEP, realm)
            if method == "POST" and action == "required-action":
                return Route(Kind.REQUIRED_ACTION, realm)
            return None
        if rest.startswith("protocol/openid-connect/"):
            ep = rest[len("protocol/openid-connect/"):]
            if ep == "token" and method == "POST":
                return Route(Kind.TOKEN, realm)
            if ep in ("logout", "logout/logout-confirm"):
                return Route(Kind.LOGOUT, realm)
            if ep == "revoke" and method == "POST":
                return Route(Kind.REVOKE, realm)
            if ep == "auth" and method == "GET":
                return Route(Kind.AUTH, realm)  # SSO-cookie logins and kc_action starts
            return None
        if rest.startswith("account") and method in _WRITE:
            return Route(Kind.ACCOUNT_WRITE, realm, tuple(p for p in rest.split("/")[1:] if p))
        return None
    if m := _ADMIN.match(path):
        parts = tuple(p for p in (m.group(2) or "").split("/") if p)
        if method in _WRITE and parts not in _NOT_MUTATING_POSTS:
            return Route(Kind.ADMIN_WRITE, m.group(1), parts)
        return None
    if (m := _WHOAMI.match(path)) and method == "GET":
        return Route(Kind.WHOAMI, m.group(1))
    return None


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
    query = urlsplit(loc).query or urlsplit(loc).fragment
    return {k: v[0] for k, v in parse_qs(query).items()}


def _page_has_error(resp: ResponseView) -> bool:
    text = resp.text()
    return ('id="input-error' in text or "kc-feedback-text" in text or 'class="alert-error' in text
            or "pf-m-danger" in text or "alert-error" in text)


def _page_id(resp: ResponseView) -> str:
    text = resp.text()
    m = re.search(r'data-page-id="([a-z0-9-]+)"', text)
    if m:
        return m.group(1)
    if 'name="otp"' in text or 'id="otp"' in text:
        return "login-login-otp"
    if 'name="password"' in text and 'name="username"' in text:
        return "login-login"
    return ""


# ---------------------------------------------------------------------------------------------- logins
@dataclass(frozen=True, slots=True)
class LoginContext:
    """What the caller knows of the browser login in progress (from AUTH_SESSION_ID / identity cookie)."""

    username: str | None = None
    user_id: str | None = None
    session: str | None = None


def on_login_step(rt: Route, req: RequestView, resp: ResponseView, ctx: LoginContext,
                  identity: dict[str, Any] | None) -> tuple[list[IdentityEvent], str | None]:
    """A browser form post to /login-actions/authenticate.

    Returns the events and, when the password step passed but another step
    follows, the username to remember for this login attempt.
    `identity` is the decoded KEYCLOAK_IDENTITY cookie set by the response, if any.
    """
    form = req.form()
    otp_step = "otp" in form or "totp" in form
    username = form.get("username") or ctx.username
    client = _form_client(req)
    base = IdentityEvent(EventType.LOGIN_SUCCEEDED, Outcome.SUCCEEDED, realm=rt.realm, client=client,
                         source_ip=req.client_ip, request_id=req.request_id,
                         details={"method": "browser", "step": "otp" if otp_step else "password"})
    params = _location_params(resp)
    if resp.status in (302, 303) and ("code" in params or "error" in params or identity):
        user_id = (identity or {}).get("sub") or ctx.user_id
        session = (identity or {}).get("sid") or params.get("session_state") or ctx.session
        actor = Party(id=user_id, username=username, kind="user")
        if "error" in params and "code" not in params:
            return [replace(base, type=EventType.LOGIN_FAILED, outcome=Outcome.FAILED, actor=actor,
                            error=params["error"])], None
        events = []
        if otp_step:
            events.append(replace(base, type=EventType.MFA_OTP_VERIFIED, actor=actor, session=session))
        events.append(replace(base, actor=actor, session=session))
        return events, None
    if resp.status in (302, 303) and "/login-actions/required-action" in resp.headers.get("Location", ""):
        return [], username  # credentials passed; a required action must finish before the login does
    if resp.status == 200:
        page = _page_id(resp)
        if otp_step:
            if page == "login-login-otp" or _page_has_error(resp):
                return [replace(base, type=EventType.MFA_OTP_FAILED, outcome=Outcome.FAILED,
                                actor=Party(id=ctx.user_id, username=username, kind="user"),
                                error="invalid_otp")], username
            return [], username
        if page == "login-login-otp" or page.startswith("login-config-totp") or page.startswith("login-update"):
            return [], username  # password passed, another step follows
        if _page_has_error(resp) or page in ("login-login", "login-login-password"):
            return [replace(base, type=EventType.LOGIN_FAILED, outcome=Outcome.FAILED,
                            actor=Party(username=username, kind="user"), error="invalid_user_credentials")], None
    return [], username


def on_required_action(rt: Route, req: RequestView, resp: ResponseView, ctx: LoginContext,
                       identity: dict[str, Any] | None) -> list[IdentityEvent]:
    """A required-action form (CONFIGURE_TOTP, UPDATE_PASSWORD, webauthn-register, delete_credential)."""
    action = req.query.get("execution", "")
    form = req.form()
    user_id = (identity or {}).get("sub") or ctx.user_id
    session = (identity or {}).get("sid") or ctx.session
    actor = Party(id=user_id, username=ctx.username, kind="user")
    params = _location_params(resp)
    ok = resp.status in (302, 303) and ("code" in params or params.get("kc_action_status") == "success")
    cancelled = "cancel-aia" in form or params.get("kc_action_status") == "cancelled"
    common = {"realm": rt.realm, "client": _form_client(req), "source_ip": req.client_ip,
              "request_id": req.request_id, "session": session, "actor": actor, "target": actor}
    events: list[IdentityEvent] = []
    kind = {"CONFIGURE_TOTP": ("otp", EventType.CREDENTIAL_ENROLLED),
            "UPDATE_PASSWORD": ("password", EventType.PASSWORD_CHANGED),
            "webauthn-register": ("webauthn", EventType.CREDENTIAL_ENROLLED),
            "webauthn-register-passwordless": ("webauthn-passwordless", EventType.CREDENTIAL_ENROLLED),
            "delete_credential": ("unknown", EventType.CREDENTIAL_REMOVED)}.get(action)
    if kind is None or cancelled:
        return events
    ctype, etype = kind
    if ok:
        events.append(IdentityEvent(etype, Outcome.SUCCEEDED, details={"credential_type": ctype,
                                                                      "action": action}, **common))
        if "code" in params and params.get("kc_action_status") is None:
            events.append(IdentityEvent(EventType.LOGIN_SUCCEEDED, Outcome.SUCCEEDED,
                                        details={"method": "browser", "step": action}, **common))
    elif resp.status == 200 and _page_has_error(resp):
        events.append(IdentityEvent(etype, Outcome.FAILED, error="invalid_input",
                                    details={"credential_type": ctype, "action": action}, **common))
    return events


# ---------------------------------------------------------------------------------------------- tokens
def on_token(rt: Route, req: RequestView, resp: ResponseView, client_auth: str | None,
             issued: dict[str, Any] | None, presented: dict[str, Any] | None) -> list[IdentityEvent]:
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
    common = {"realm": rt.realm, "client": client, "source_ip": req.client_ip, "request_id": req.request_id,
              "session": session, "error": error}
    outcome = Outcome.SUCCEEDED if ok else Outcome.FAILED
    if grant == "password":
        actor = Party(id=claims.get("sub"), username=form.get("username") or claims.get("preferred_username"),
                      kind="user")
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
    """RP-initiated logout (GET/POST /logout, the confirm form, or POST with a refresh token)."""
    text = resp.text() if resp.status == 200 else ""
    confirm_page = "logout-confirm" in text and "confirmLogout" in text
    if confirm_page:
        return []  # nothing ended yet: the user must confirm
    ok = resp.status in (200, 204, 302, 303) and not (resp.status == 200 and _page_has_error(resp))
    data = resp.json()
    error = None if ok else str((data or {}).get("error") if isinstance(data, dict) else f"http_{resp.status}")
    if not attribution.actor and not attribution.session and not ok:
        return []
    return [IdentityEvent(EventType.LOGOUT_COMPLETED, Outcome.SUCCEEDED if ok else Outcome.FAILED,
                          realm=rt.realm, actor=attribution.actor, client=attribution.client or _form_client(req),
                          session=attribution.session, source_ip=req.client_ip, request_id=req.request_id,
                          error=error)]


def on_revoke(rt: Route, req: RequestView, resp: ResponseView, attribution: Attribution) -> list[IdentityEvent]:
    ok = resp.status == 200
    return [IdentityEvent(EventType.TOKEN_REVOKED, Outcome.SUCCEEDED if ok else Outcome.FAILED, realm=rt.realm,
                          actor=attribution.actor, client=attribution.client, session=attribution.session,
                          source_ip=req.client_ip, request_id=req.request_id,
                          error=None if ok else f"http_{resp.status}",
                          details={"token_type_hint": req.form().get("token_type_hint", "")})]


def on_sso_auth(rt: Route, req: RequestView, resp: ResponseView, identity: dict[str, Any] | None,
                ctx: LoginContext) -> list[IdentityEvent]:
    """GET /auth answered at once with a code: a login by SSO cookie, without credentials."""
    params = _location_params(resp)
    if resp.status not in (302, 303) or "code" not in params:
        return []
    user_id = (identity or {}).get("sub") or ctx.user_id
    return [IdentityEvent(EventType.LOGIN_SUCCEEDED, Outcome.SUCCEEDED, realm=rt.realm,
                          actor=Party(id=user_id, username=ctx.username, kind="user"),
                          client=req.query.get("client_id"), session=params.get("session_state") or ctx.session,
                          source_ip=req.client_ip, request_id=req.request_id, details={"method": "sso-cookie"})]


# ---------------------------------------------------------------------------------------------- admin
@dataclass(frozen=True, slots=True)
class AdminAction:
    """What a mutating admin request intends, known before it is forwarded."""

    type: EventType
    target: Party | None
    details: dict[str, Any] = field(default_factory=dict)


def _roles(body: object) -> list[str]:
    if not isinstance(body, list):
        return []
    out = []
    for item in body:
        if isinstance(item, dict):
            name = item.get("name") or item.get("roleName") or item.get("id") or item.get("roleId")
            if isinstance(name, str):
                out.append(name)
    return out


def _match(parts: tuple[str, ...], pattern: str) -> dict[str, str] | None:
    pat = pattern.split("/")
    if len(pat) != len(parts):
        return None
    out = {}
    for p, v in zip(pat, parts, strict=True):
        if p.startswith("{"):
            out[p[1:-1]] = v
        elif p != v:
            return None
    return out


_USER_FIELDS = ("username", "email", "firstName", "lastName", "enabled", "emailVerified", "requiredActions",
                "groups", "attributes", "federationLink")
_CLIENT_FIELDS = ("clientId", "publicClient", "serviceAccountsEnabled", "directAccessGrantsEnabled",
                  "standardFlowEnabled", "enabled", "protocol")

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
    for method, pattern, etype in _RULES:
        if method != req.method or (vars_ := _match(rt.parts, pattern)) is None:
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
            if etype is EventType.ROLE_COMPOSITE_CHANGED:
                details["change"] = "removed" if req.method == "DELETE" or "role-mapping-delete" in path else "added"
            if req.method == "DELETE" and not details["roles"]:
                details["all_roles"] = True  # Keycloak: an empty DELETE removes every mapping
        if etype is EventType.USER_CREATED and isinstance(body, dict):
            details["fields"] = sorted(k for k in body if k in _USER_FIELDS)
            target = Party(username=str(body.get("username", "")) or None, kind="user")
        if etype is EventType.USER_UPDATED and isinstance(body, dict):
            details["fields"] = sorted(k for k in body if k != "credentials")
            if body.get("enabled") is False:
                etype = EventType.USER_DISABLED
            elif body.get("enabled") is True and set(body) <= {"enabled", "id", "username"}:
                etype = EventType.USER_ENABLED
            if isinstance(body.get("username"), str) and target is not None:
                target = replace(target, username=body["username"])
        if etype is EventType.PASSWORD_RESET and isinstance(body, dict):
            details["temporary"] = bool(body.get("temporary", False))
        if etype is EventType.CLIENT_CREATED and isinstance(body, dict):
            details["fields"] = sorted(k for k in body if k in _CLIENT_FIELDS)
            target = Party(client=str(body.get("clientId", "")) or None, kind="client")
        if rt.parts == ("logout-all",):
            target = Party(kind="realm", name=rt.realm)
        return AdminAction(etype, target, details)
    return AdminAction(EventType.ADMIN_CHANGE, None, {"method": req.method, "path": path})


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


# ---------------------------------------------------------------------------------------------- safety
def scrub(value: Any, secrets: Iterable[str]) -> tuple[Any, bool]:
    """Replace any string that contains one of `secrets` by "[redacted]"; report whether it happened.

    A second line of defence: records are built from allowlisted fields, but if a
    secret value ever shows up in one (a user typing a password into the
    username box, say), it is cut before the record is written.
    """
    needles = [s for s in secrets if len(s) >= 4]
    if not needles:
        return value, False
    hit = False

    def walk(v: Any) -> Any:
        nonlocal hit
        if isinstance(v, str):
            if any(n in v for n in needles):
                hit = True
                return "[redacted]"
            return v
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    return walk(value), hit
