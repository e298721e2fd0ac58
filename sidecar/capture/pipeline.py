"""The capture pipeline: one exchange plus the facts resolved for it in, identity events out. [pure]

This is where the decisions are: which exchanges matter (routing, via
`sidecar.capture.classify`), who acts (attribution from verified tokens and the
sessions seen before), what the sidecar remembers between exchanges (the
`SessionDirectory`), and which events an exchange ends in. It does no I/O:
everything from outside — the verdict on a token's signature, the console's
whoami answer, the target's access state read from Keycloak — is fetched by the
thin async layer (`sidecar.capture.hooks`) and handed in as `Facts`.

The shape follows python-tuf's `TrustedMetadataSet` / `Updater` split: this
object is stateful (session memory) but never waits on anything, so scenario
tests drive it directly with recorded exchanges and hand-written facts.

Two phases per captured exchange:

* `begin(request, facts)` before forwarding. For a mutating admin request it
  returns the intent event (outcome `pending`) that must be durable before
  Keycloak sees the request. What it needs to know first is asked with
  `needs_before(request)`.
* `finish(pending, request, response, facts)` after Keycloak answered: the
  outcome events. `needs_after(pending)` says which facts to fetch for it.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import unquote

from sidecar.capture import classify as c
from sidecar.capture.sessions import Principal, SessionDirectory
from sidecar.capture.tokens import unverified_claims
from sidecar.core.events import EventType, IdentityEvent, Outcome, Party
from sidecar.core.exchange import PASS_THROUGH, CapturePlan, RequestHead, RequestView, ResponseView

_CAPTURE = CapturePlan(True, True)
_ACCESS_CHANGES = frozenset({EventType.ROLE_GRANTED, EventType.ROLE_REVOKED, EventType.GROUP_JOINED,
                             EventType.GROUP_LEFT})

Fingerprint = Callable[[str], str]


# ---------------------------------------------------------------------------------------------- headers
def cookies(headers: Any, name: str) -> dict[str, str]:
    """Cookie name -> value from every `name` header (Cookie or Set-Cookie); bad ones are skipped."""
    jar: dict[str, str] = {}
    for raw in headers.getall(name, ()):
        try:
            parsed: SimpleCookie = SimpleCookie()
            parsed.load(raw)
        except CookieError:
            continue
        for key, morsel in parsed.items():
            jar[key] = morsel.value
    return jar


def basic_client(headers: Any) -> tuple[str | None, str | None]:
    """(client id, client secret) of an HTTP Basic Authorization header, or (None, None)."""
    auth = headers.get("Authorization", "")
    if not auth.lower().startswith("basic "):
        return None, None
    try:
        user, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None, None
    return unquote(user) or None, unquote(secret) or None


def bearer_token(headers: Any) -> str | None:
    auth = headers.get("Authorization", "")
    return auth[7:].strip() if auth.lower().startswith("bearer ") else None


# ---------------------------------------------------------------------------------------------- facts
@dataclass(frozen=True, slots=True)
class BearerFacts:
    """What the async layer found out about the request's bearer token.

    `claims` are the claims of a token whose signature verified (None if it did
    not, or there was no token); `whoami` is Keycloak's answer to who holds it,
    fetched only when `CapturePipeline.needs_whoami` asked for it.
    """

    present: bool = False
    claims: Mapping[str, Any] | None = None
    unverified: Mapping[str, Any] | None = None
    whoami: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class StateFacts:
    """Keycloak's live state around an admin change, read by the state reader."""

    access: Mapping[str, Any] | None = None  # the target's roles and groups
    target_username: str | None = None
    names: Mapping[tuple[str, str], str | None] = field(default_factory=dict)  # (kind, id) -> name


@dataclass(frozen=True, slots=True)
class Facts:
    """Everything from outside the exchange that a decision may use."""

    bearer: BearerFacts | None = None
    state: StateFacts | None = None


@dataclass(frozen=True, slots=True)
class StateWanted:
    """Which state the pipeline wants read before an admin change (and after, if `access`)."""

    realm: str
    access: tuple[str, str] | None = None  # (target kind, target id)
    username_of: str | None = None  # a user id whose username the request does not name
    names: tuple[tuple[str, str], ...] = ()  # (kind, id) to resolve to names


@dataclass(frozen=True, slots=True)
class BeforeNeeds:
    bearer: bool = False
    state: StateWanted | None = None


@dataclass(frozen=True, slots=True)
class AfterNeeds:
    bearer: bool = False
    access: tuple[str, str, str] | None = None  # (realm, kind, id) to read after the change


@dataclass(slots=True)
class Pending:
    """What `begin` decided, carried to `finish` (the proxy's opaque token)."""

    route: c.Route
    attribution: c.Attribution
    action: c.AdminAction | None = None
    intent: IdentityEvent | None = None
    intent_seq: int | None = None
    before: Mapping[str, Any] | None = None


# ---------------------------------------------------------------------------------------------- pipeline
class CapturePipeline:
    """Routing, attribution, session memory and outcome events; no I/O."""

    def __init__(self, sessions: SessionDirectory, fingerprint: Fingerprint, *,
                 record_before_after: bool = True) -> None:
        self.sessions = sessions
        self._fingerprint = fingerprint
        self._before_after = record_before_after

    # ------------------------------------------------------------------ routing
    def plan(self, head: RequestHead) -> CapturePlan:
        return PASS_THROUGH if c.route(head) is None else _CAPTURE

    # ------------------------------------------------------------------ phase 1: before forwarding
    def needs_before(self, request: RequestView) -> BeforeNeeds:
        rt = c.route(request.head)
        if rt is None or rt.kind is not c.Kind.ADMIN_WRITE:
            return BeforeNeeds()
        action = c.admin_action(rt, request)
        return BeforeNeeds(bearer=True, state=self._state_wanted(rt, action))

    def _state_wanted(self, rt: c.Route, action: c.AdminAction) -> StateWanted | None:
        target = action.target
        if not self._before_after or action.type not in _ACCESS_CHANGES or target is None or not target.id:
            return None
        names: list[tuple[str, str]] = []
        if target.kind == "group" and not target.name:
            names.append(("group", target.id))
        if action.details.get("group_id"):
            names.append(("group", action.details["group_id"]))
        if action.details.get("client_uuid"):
            names.append(("client", action.details["client_uuid"]))
        username_of = target.id if target.kind == "user" and not target.username else None
        return StateWanted(rt.realm, (target.kind or "", target.id), username_of, tuple(names))

    def needs_whoami(self, claims: Mapping[str, Any]) -> str | None:
        """The username to help whoami with ("" if none known), or None when the token's holder is known."""
        if claims.get("sub"):
            return None
        sid = claims.get("sid")
        principal = self.sessions.sessions.get(sid) if isinstance(sid, str) else None
        if principal is not None and principal.user_id is not None:
            return None
        return (principal.username if principal else None) or ""

    def begin(self, request: RequestView, facts: Facts) -> Pending | None:
        """Decide before forwarding; `Pending.intent` is the record that must be durable first."""
        rt = c.route(request.head)
        if rt is None:
            return None
        if rt.kind is not c.Kind.ADMIN_WRITE:
            return Pending(rt, c.Attribution())
        attribution = self.attribute(facts.bearer)
        action = self._with_state(c.admin_action(rt, request), facts.state)
        intent = IdentityEvent(action.type, Outcome.PENDING, realm=rt.realm, actor=attribution.actor,
                               target=action.target, client=attribution.client, source_ip=request.client_ip,
                               session=attribution.session, request_id=request.request_id,
                               details={**action.details, "phase": "intent",
                                        "actor_verified": attribution.verified})
        before = facts.state.access if facts.state is not None else None
        return Pending(rt, attribution, action, intent, None, before)

    @staticmethod
    def _with_state(action: c.AdminAction, state: StateFacts | None) -> c.AdminAction:
        """Target username and group / client names from the state reader, for a readable record."""
        if state is None:
            return action
        target = action.target
        if target is not None and target.kind == "user" and not target.username and state.target_username:
            target = replace(target, username=state.target_username)
        if target is not None and target.kind == "group" and target.id and not target.name:
            target = replace(target, name=state.names.get(("group", target.id)))
        details = dict(action.details)
        if details.get("group_id"):
            details["group"] = state.names.get(("group", details["group_id"]))
        if details.get("client_uuid"):
            details["client_id"] = state.names.get(("client", details["client_uuid"]))
        return replace(action, target=target, details={k: v for k, v in details.items() if v is not None})

    def attribute(self, bearer: BearerFacts | None) -> c.Attribution:
        """Who presented this bearer token: a verified party, learned sessions, or explicitly unverified."""
        if bearer is None or not bearer.present:
            return c.Attribution()
        claims = bearer.claims
        if claims is None:
            raw = bearer.unverified or {}
            azp = raw.get("azp") if isinstance(raw.get("azp"), str) else None
            return c.Attribution(Party(kind="unverified", client=azp), None, azp, False)
        sid, azp = claims.get("sid"), claims.get("azp")
        if claims.get("sub"):
            known = self.sessions.sessions.get(sid) if sid else None
            username = claims.get("preferred_username") or (known.username if known else None)
            return c.Attribution(Party(id=claims["sub"], username=username, client=azp, kind="user"), sid, azp, True)
        principal = self.sessions.sessions.get(sid) if sid else None
        who = bearer.whoami
        if (principal is None or principal.user_id is None) and who and who.get("userId"):
            principal = Principal(str(who["userId"]), str(who.get("displayName") or "") or
                                  (principal.username if principal else None), claims.get("_realm"), azp)
            if sid:
                self.sessions.sessions.put(sid, principal)
        if principal is None:
            return c.Attribution(Party(client=azp, kind="user"), sid, azp, True)
        return c.Attribution(Party(id=principal.user_id, username=principal.username, client=azp, kind="user"),
                             sid, azp, True)

    # ------------------------------------------------------------------ phase 2: after the response
    def needs_after(self, pending: Pending) -> AfterNeeds:
        rt = pending.route
        if rt.kind in (c.Kind.WHOAMI, c.Kind.ACCOUNT_WRITE):
            return AfterNeeds(bearer=True)
        if rt.kind is c.Kind.ADMIN_WRITE and pending.before is not None and pending.action is not None \
                and pending.action.target is not None and pending.action.target.id:
            return AfterNeeds(access=(rt.realm, pending.action.target.kind or "", pending.action.target.id))
        return AfterNeeds()

    def finish(self, pending: Pending, request: RequestView, response: ResponseView,
               facts: Facts) -> list[IdentityEvent]:
        """The outcome events of a captured exchange, and what the sidecar learns from it."""
        rt = pending.route
        if rt.kind is c.Kind.ADMIN_WRITE:
            events = self._admin_outcome(pending, request, response)
            if pending.before is not None and facts.state is not None and facts.state.access is not None:
                events = [replace(e, details={**e.details, "before": pending.before, "after": facts.state.access})
                          for e in events]
            return events
        if rt.kind is c.Kind.TOKEN:
            return self._token(rt, request, response)
        if rt.kind in (c.Kind.LOGIN_STEP, c.Kind.REQUIRED_ACTION, c.Kind.AUTH):
            return self._browser(rt, request, response)
        if rt.kind in (c.Kind.LOGOUT, c.Kind.REVOKE):
            attribution = self._logout_attribution(request)
            return (c.on_logout if rt.kind is c.Kind.LOGOUT else c.on_revoke)(rt, request, response, attribution)
        if rt.kind is c.Kind.WHOAMI:
            self._learn_whoami(response, facts.bearer)
            return []
        if rt.kind is c.Kind.ACCOUNT_WRITE:
            return c.on_account(rt, request, response, self.attribute(facts.bearer))
        return []

    def abandoned(self, pending: Pending, request: RequestView, reason: str) -> list[IdentityEvent]:
        """No answer from Keycloak (unreachable, timed out, cut off, cancelled): an intent gets an
        outcome `unknown` naming why, so it never stays pending; other exchanges have nothing to say."""
        p = pending
        if p.intent is None or p.action is None:
            return []
        details: dict[str, Any] = {**p.action.details, "phase": "outcome", "actor_verified": p.attribution.verified}
        if p.intent_seq is not None:
            details["intent_seq"] = p.intent_seq
        return [IdentityEvent(p.action.type, Outcome.UNKNOWN, realm=p.route.realm, actor=p.attribution.actor,
                              target=p.action.target, client=p.attribution.client, source_ip=request.client_ip,
                              session=p.attribution.session, request_id=request.request_id, error=reason,
                              details=details)]

    # ------------------------------------------------------------------ internals
    def _login_context(self, request: RequestView) -> tuple[c.LoginContext, str | None]:
        jar = cookies(request.headers, "Cookie")
        key = self.sessions.attempt_key(jar["AUTH_SESSION_ID"]) if "AUTH_SESSION_ID" in jar else None
        known = self.sessions.attempts.get(key) if key else None
        identity = unverified_claims(jar.get("KEYCLOAK_IDENTITY", "")) or {}
        sid = identity.get("sid")
        session_known = self.sessions.sessions.get(sid) if sid else None
        username = (known.username if known else None) or (session_known.username if session_known else None)
        user_id = (known.user_id if known else None) or identity.get("sub")
        return c.LoginContext(username, user_id, sid, kc_action=self.sessions.action(key)), key

    @staticmethod
    def _identity_cookie(response: ResponseView) -> dict[str, Any] | None:
        # The identity cookie is HMAC-signed with a key Keycloak does not publish; its claims are
        # used for correlation (user id, session id) of a login Keycloak just answered, not as proof.
        value = cookies(response.headers, "Set-Cookie").get("KEYCLOAK_IDENTITY")
        return unverified_claims(value) if value else None

    def _browser(self, rt: c.Route, request: RequestView, response: ResponseView) -> list[IdentityEvent]:
        ctx, key = self._login_context(request)
        identity = self._identity_cookie(response)
        if rt.kind is c.Kind.LOGIN_STEP:
            events, remember = c.on_login_step(rt, request, response, ctx, identity)
            if remember and key:
                self.sessions.attempts.put(key, Principal(ctx.user_id, remember, rt.realm))
        elif rt.kind is c.Kind.REQUIRED_ACTION:
            events = c.on_required_action(rt, request, response, ctx, identity)
            if any(e.type is EventType.LOGIN_SUCCEEDED for e in events):
                self.sessions.forget_action(key)
        else:
            action = c.kc_action_of(request)
            if action:
                # The required-action post that finishes it names only the alias (not, e.g., which
                # credential delete_credential removes): remember it for this login attempt.
                cookie = cookies(request.headers, "Cookie").get("AUTH_SESSION_ID") or \
                    cookies(response.headers, "Set-Cookie").get("AUTH_SESSION_ID")
                if cookie:
                    self.sessions.remember_action(self.sessions.attempt_key(cookie), action)
            events = c.on_sso_auth(rt, request, response, identity, ctx)
        for e in events:
            if e.type is EventType.LOGIN_SUCCEEDED and e.session and e.actor:
                self.sessions.sessions.put(e.session, Principal(e.actor.id, e.actor.username, rt.realm, e.client))
        return events

    def _admin_outcome(self, p: Pending, request: RequestView, response: ResponseView) -> list[IdentityEvent]:
        assert p.action is not None
        outcome, error, extra = c.admin_outcome(p.action, response)
        target = p.action.target
        if target is not None and "created_id" in extra and target.id is None:
            target = replace(target, id=extra["created_id"])
        details = {**p.action.details, **extra, "phase": "outcome", "actor_verified": p.attribution.verified}
        if p.intent_seq is not None:
            details["intent_seq"] = p.intent_seq
        if p.action.type is EventType.USER_IMPERSONATED and outcome is Outcome.SUCCEEDED:
            ident = self._identity_cookie(response)
            if ident and ident.get("sid"):
                details["impersonation_session"] = ident["sid"]
        return [IdentityEvent(p.action.type, outcome, realm=p.route.realm, actor=p.attribution.actor, target=target,
                              client=p.attribution.client, source_ip=request.client_ip,
                              session=p.attribution.session, request_id=request.request_id, error=error,
                              details=details)]

    def _token(self, rt: c.Route, request: RequestView, response: ResponseView) -> list[IdentityEvent]:
        client_id, _ = basic_client(request.headers)
        data = response.json()
        issued: dict[str, Any] | None = None
        if isinstance(data, dict) and response.status == 200:
            # These tokens are in Keycloak's own answer on the sidecar's upstream connection: the
            # channel vouches for them, so their claims are read without a signature check (which
            # would add ~0.4 ms to every grant). Tokens *presented* by clients are always verified.
            for key in ("id_token", "access_token"):
                if isinstance(data.get(key), str):
                    issued = unverified_claims(data[key])
                    if issued is not None:
                        break
        form = request.form()
        presented = unverified_claims(form.get("refresh_token", "")) if form.get("refresh_token") else None
        events = c.on_token(rt, request, response, client_id, issued, presented)
        refresh = data.get("refresh_token") if isinstance(data, dict) else None
        if isinstance(refresh, str) and events and events[0].actor and not events[0].actor.id:
            # Lightweight access tokens carry no sub; the refresh token from the same answer does
            # (HMAC-signed by Keycloak, so read for correlation: it came back on the response we forwarded).
            issued_rt = unverified_claims(refresh)
            if issued_rt and issued_rt.get("sub"):
                events = [replace(events[0], actor=replace(events[0].actor, id=issued_rt.get("sub")),
                                  session=events[0].session or issued_rt.get("sid"))]
        out = []
        for e in events:
            details = dict(e.details)
            if form.get("refresh_token"):
                details["presented_refresh_fp"] = self._fingerprint(form["refresh_token"])
            if isinstance(refresh, str):
                details["issued_refresh_fp"] = self._fingerprint(refresh)
            out.append(replace(e, details=details))
            if e.outcome is Outcome.SUCCEEDED and e.session and e.actor and (e.actor.id or e.actor.username):
                self.sessions.sessions.put(e.session, Principal(e.actor.id, e.actor.username, rt.realm, e.client))
        return out

    def _logout_attribution(self, request: RequestView) -> c.Attribution:
        form = request.form()
        hint = form.get("id_token_hint") or request.query.get("id_token_hint") or form.get("refresh_token") \
            or form.get("token")
        claims = unverified_claims(hint) if hint else None
        if not claims:
            claims = unverified_claims(cookies(request.headers, "Cookie").get("KEYCLOAK_IDENTITY", "")) or {}
        sid = claims.get("sid")
        known = self.sessions.sessions.get(sid) if sid else None
        user_id = claims.get("sub") or (known.user_id if known else None)
        username = claims.get("preferred_username") or (known.username if known else None)
        client_basic, _ = basic_client(request.headers)
        client = client_basic or form.get("client_id") or request.query.get("client_id") or claims.get("azp")
        actor = Party(id=user_id, username=username, kind="user") if (user_id or username) else None
        return c.Attribution(actor, sid, client, False)

    def _learn_whoami(self, response: ResponseView, bearer: BearerFacts | None) -> None:
        data = response.json()
        claims = bearer.claims if bearer is not None else None
        if response.status != 200 or not isinstance(data, dict) or not claims:
            return
        if claims.get("sid") and data.get("userId"):
            self.sessions.sessions.put(str(claims["sid"]), Principal(str(data["userId"]),
                                                                     str(data.get("displayName") or "") or None,
                                                                     claims.get("_realm"), claims.get("azp")))
