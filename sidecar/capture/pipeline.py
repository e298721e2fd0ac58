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
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import unquote

from sidecar.capture import changes
from sidecar.capture import classify as c
from sidecar.capture.sessions import Principal, SessionDirectory
from sidecar.capture.tokens import Claims, unverified_claims
from sidecar.core.events import EventType, IdentityEvent, Outcome, Party
from sidecar.core.exchange import PASS_THROUGH, CapturePlan, RequestHead, RequestView, ResponseView

log = logging.getLogger("sidecar.capture")

_CAPTURE = CapturePlan(True, True)
_ACCESS_CHANGES = frozenset(
    {EventType.ROLE_GRANTED, EventType.ROLE_REVOKED, EventType.GROUP_JOINED, EventType.GROUP_LEFT}
)

Fingerprint = Callable[[str], str]
_MFA = ":mfa"  # suffix of the attempt key under which a passed OTP step is remembered until the login ends


# ---------------------------------------------------------------------------------------------- headers
def cookies(headers: Any, name: str, only: str | None = None) -> dict[str, str]:
    """Cookie name -> value from every `name` header (Cookie or Set-Cookie); bad ones are skipped.

    With `only`, headers whose text does not contain that cookie name are not parsed (a cookie
    name is matched literally, so they cannot hold it): the same answer for `jar.get(only)`.
    """
    jar: dict[str, str] = {}
    for raw in headers.getall(name, ()):
        if only is not None and only not in raw:
            continue
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
    claims: Claims | None = None
    unverified: Claims | None = None
    whoami: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class StateFacts:
    """Keycloak's live state around an admin change, read by the state reader."""

    access: Mapping[str, Any] | None = None  # the target's roles and groups
    target_username: str | None = None
    names: Mapping[tuple[str, str], str | None] = field(default_factory=dict)  # (kind, id) -> name
    reads: Mapping[str, Any] | None = None  # the resources of AdminAction.reads (path -> JSON or None)
    # The effective roles of every user a composite or group role change can reach (user id -> roles or
    # None), whether that list is complete, and which clients' roles were read (sidecar.capture.changes).
    effect: Mapping[str, list[str] | None] | None = None
    effect_complete: bool = False
    effect_clients: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HintFacts:
    """The token a logout or revocation presents (`id_token_hint`, `token`, `refresh_token`).

    `claims` are set when its signature verified (ID and access tokens are signed with the
    realm's published keys); refresh tokens are HMAC-signed and never verify here, but the
    pipeline knows them if Keycloak issued them through the sidecar.
    """

    token: str | None = None
    claims: Claims | None = None


@dataclass(frozen=True, slots=True)
class Facts:
    """Everything from outside the exchange that a decision may use."""

    bearer: BearerFacts | None = None
    state: StateFacts | None = None
    hint: HintFacts | None = None


@dataclass(frozen=True, slots=True)
class StateWanted:
    """Which state the pipeline wants read before an admin change (and after, if `access`)."""

    realm: str
    access: tuple[str, str] | None = None  # (target kind, target id)
    username_of: str | None = None  # a user id whose username the request does not name
    names: tuple[tuple[str, str], ...] = ()  # (kind, id) to resolve to names
    reads: tuple[str, ...] = ()  # admin GET paths to read (before, and again after the change)
    effect: str | None = None  # whose users to examine for the effect (changes.effect_target)
    effect_clients: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BeforeNeeds:
    bearer: bool = False
    state: StateWanted | None = None


@dataclass(frozen=True, slots=True)
class AfterNeeds:
    bearer: bool = False
    access: tuple[str, str, str] | None = None  # (realm, kind, id) to read after the change
    hint: str | None = None  # a presented token to verify (signature only: an expired hint is still a hint)
    fresh_keys: bool = False  # verify the bearer again with the realm's keys refetched
    realm: str = ""
    reads: tuple[str, ...] = ()  # the same resources as before the change
    effect_users: tuple[str, ...] = ()  # whose effective roles to read again
    effect_clients: tuple[str, ...] = ()


@dataclass(slots=True)
class Pending:
    """What `begin` decided, carried to `finish` (the proxy's opaque token)."""

    route: c.Route
    attribution: c.Attribution
    action: c.AdminAction | None = None
    intent: IdentityEvent | None = None
    intent_seq: int | None = None
    before: Mapping[str, Any] | None = None
    claimed: Mapping[str, str] | None = None  # claims of a token that did not verify, for correlation
    state: StateFacts | None = None  # everything read before forwarding


# ---------------------------------------------------------------------------------------------- pipeline
_ALARM_KINDS = frozenset({c.Kind.ADMIN_WRITE, c.Kind.ACCOUNT_WRITE})
_FALLBACK = {
    c.Kind.TOKEN: EventType.TOKEN_FAILED,
    c.Kind.LOGOUT: EventType.LOGOUT_COMPLETED,
    c.Kind.REVOKE: EventType.TOKEN_REVOKED,
    c.Kind.ACCOUNT_WRITE: EventType.ADMIN_CHANGE,
}


def _safe(raw: Mapping[str, Any] | None) -> dict[str, str] | None:
    """Decoded JWT claims reduced to the bounded strings capture reads (typed boundary for claims)."""
    view = Claims.of(raw, verified=False)
    return view.correlation() if view is not None else None


def _unverified(party: Party | None = None) -> Party:
    return Party(kind="unverified", client=party.client if party else None)


class CapturePipeline:
    """Routing, attribution, session memory and outcome events; no I/O."""

    def __init__(
        self, sessions: SessionDirectory, fingerprint: Fingerprint, *, record_before_after: bool = True
    ) -> None:
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
        if not self._before_after:
            return None
        effect = changes.effect_target(action.type, target, rt.parts)
        clients = ([action.details["client_uuid"]] if action.details.get("client_uuid") else []) + list(
            action.details.get("client_uuids") or []
        )
        if action.type not in _ACCESS_CHANGES or target is None or not target.id:
            if not action.reads and effect is None:
                return None
            return StateWanted(rt.realm, reads=action.reads, effect=effect, effect_clients=tuple(clients))
        names: list[tuple[str, str]] = []
        if target.kind == "group" and not target.name:
            names.append(("group", target.id))
        for kind, key in (("group", "group_id"), ("client", "client_uuid")):
            if isinstance(action.details.get(key), str):
                names.append((kind, action.details[key]))
        username_of = target.id if target.kind == "user" and not target.username else None
        return StateWanted(
            rt.realm, (target.kind or "", target.id), username_of, tuple(names), action.reads, effect, tuple(clients)
        )

    def needs_whoami(self, claims: Claims) -> str | None:
        """The username to help whoami with ("" if none known), or None when the token's holder is known."""
        if claims.sub:
            return None
        principal = self.sessions.sessions.get(claims.sid) if claims.sid else None
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
        claimed = self._claimed(facts.bearer)
        action = self._with_state(_body_caveat(request, c.admin_action(rt, request)), facts.state)
        details = {**action.details, "phase": "intent", "actor_verified": attribution.verified}
        if claimed:
            details["unverified"] = claimed
        intent = IdentityEvent(
            action.type,
            Outcome.PENDING,
            realm=rt.realm,
            actor=attribution.actor,
            target=action.target,
            client=attribution.client,
            source_ip=request.client_ip,
            session=attribution.session,
            request_id=request.request_id,
            details=details,
        )
        before = facts.state.access if facts.state is not None else None
        return Pending(rt, attribution, action, intent, None, before, claimed, facts.state)

    @staticmethod
    def _claimed(bearer: BearerFacts | None) -> dict[str, str] | None:
        if bearer is None or not bearer.present or bearer.claims is not None:
            return None
        return bearer.unverified.correlation() if bearer.unverified is not None else {}

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
        if isinstance(details.get("group_id"), str):
            details["group"] = state.names.get(("group", details["group_id"]))
        if isinstance(details.get("client_uuid"), str):
            details["client_id"] = state.names.get(("client", details["client_uuid"]))
        return replace(action, target=target, details={k: v for k, v in details.items() if v is not None})

    def attribute(self, bearer: BearerFacts | None) -> c.Attribution:
        """Who presented this bearer token: a verified party, learned sessions, or explicitly unverified.

        The claims of a token whose signature did not verify never name the actor; they are kept
        for correlation only (`details.unverified`, see `begin`).
        """
        if bearer is None or not bearer.present:
            return c.Attribution()
        claims = bearer.claims
        if claims is None:
            return c.Attribution(_unverified(), None, None, False)
        sid, azp = claims.sid, claims.azp
        if claims.sub:
            known = self.sessions.sessions.get(sid) if sid else None
            username = claims.preferred_username or (known.username if known else None)
            return c.Attribution(Party(id=claims.sub, username=username, client=azp, kind="user"), sid, azp, True)
        principal = self.sessions.sessions.get(sid) if sid else None
        who = bearer.whoami
        if (principal is None or principal.user_id is None) and who and isinstance(who.get("userId"), str):
            display = who.get("displayName")
            principal = Principal(
                who["userId"],
                (display if isinstance(display, str) and display else None)
                or (principal.username if principal else None),
                claims.realm,
                azp,
            )
            if sid:
                self.sessions.sessions.put(sid, principal)
        if principal is None:
            return c.Attribution(Party(client=azp, kind="user"), sid, azp, True)
        return c.Attribution(
            Party(id=principal.user_id, username=principal.username, client=azp, kind="user"), sid, azp, True
        )

    # ------------------------------------------------------------------ phase 2: after the response
    def needs_after(self, pending: Pending, request: RequestView) -> AfterNeeds:
        rt = pending.route
        if rt.kind in (c.Kind.WHOAMI, c.Kind.ACCOUNT_WRITE):
            return AfterNeeds(bearer=True)
        if rt.kind in (c.Kind.LOGOUT, c.Kind.REVOKE):
            hint = self._presented(request)
            return AfterNeeds(hint=hint[1] if hint and hint[0] in ("id_token_hint", "token") else None)
        if rt.kind is c.Kind.ADMIN_WRITE and pending.action is not None:
            access = None
            if pending.before is not None and pending.action.target is not None and pending.action.target.id:
                access = (rt.realm, pending.action.target.kind or "", pending.action.target.id)
            state = pending.state
            reads = tuple(state.reads) if state is not None and state.reads is not None else ()
            users = tuple(state.effect) if state is not None and state.effect is not None else ()
            clients = state.effect_clients if state is not None else ()
            # Unverified before forwarding: if Keycloak accepts it, check again with fresh realm keys
            # (a key rotation or a new signing algorithm), before calling it an alarm.
            unverified = pending.claimed is not None
            if access is None and not reads and not users and not unverified:
                return AfterNeeds()
            return AfterNeeds(
                bearer=unverified,
                access=access,
                fresh_keys=unverified,
                realm=rt.realm,
                reads=reads,
                effect_users=users,
                effect_clients=clients,
            )
        return AfterNeeds()

    def finish(
        self, pending: Pending, request: RequestView, response: ResponseView, facts: Facts
    ) -> list[IdentityEvent]:
        """The outcome events of a captured exchange, and what the sidecar learns from it.

        Never silence: if the exchange cannot be understood (a shape no rule expected), the
        result is an `alarm.raised` record naming the request, not nothing.
        """
        try:
            events = self._finish(pending, request, response, facts)
        except Exception as exc:  # hostile input must yield a record, never a dropped exchange
            # SECURITY: the exception's text may quote request bytes; only its type reaches the log.
            log.error("capture failed for %s %s: %s", request.method, pending.route.kind.value, type(exc).__name__)
            return [self._fallback(pending, request, response, type(exc).__name__)]
        hint_refused = (
            pending.route.kind is c.Kind.LOGOUT
            and facts.hint is not None
            and facts.hint.claims is None
            and (self._presented(request) or ("", ""))[0] == "id_token_hint"
            and any(e.outcome is Outcome.SUCCEEDED for e in events)
        )
        if hint_refused or (
            pending.route.kind in _ALARM_KINDS and facts_unverified(pending, facts) and 200 <= response.status < 300
        ):
            log.error(
                "ALARM: Keycloak accepted a %s %s request (%s) with a token the sidecar could not verify",
                request.method,
                pending.route.kind.value,
                request.request_id,
            )
            events.append(
                IdentityEvent(
                    EventType.ALARM_RAISED,
                    Outcome.SUCCEEDED,
                    realm=pending.route.realm,
                    actor=_unverified(),
                    source_ip=request.client_ip,
                    request_id=request.request_id,
                    details={
                        "reason": "unverified_token_accepted",
                        "event": events[0].type.value if events else None,
                        "method": request.method,
                        "status": response.status,
                        "unverified": pending.claimed
                        or self._claimed(facts.bearer)
                        or (events[0].details.get("unverified") if events else None)
                        or {},
                    },
                )
            )
        return events

    def _fallback(self, pending: Pending, request: RequestView, response: ResponseView, error: str) -> IdentityEvent:
        rt = pending.route
        etype = pending.action.type if pending.action is not None else _FALLBACK.get(rt.kind, EventType.ALARM_RAISED)
        return IdentityEvent(
            etype,
            Outcome.UNKNOWN,
            realm=rt.realm,
            actor=pending.attribution.actor,
            source_ip=request.client_ip,
            request_id=request.request_id,
            details={
                "reason": "capture_failed",
                "capture_error": error,
                "kind": rt.kind.value,
                "method": request.method,
                "status": response.status,
            },
        )

    def _finish(
        self, pending: Pending, request: RequestView, response: ResponseView, facts: Facts
    ) -> list[IdentityEvent]:
        rt = pending.route
        if rt.kind is c.Kind.ADMIN_WRITE:
            if (
                pending.claimed is not None
                and facts.bearer is not None
                and facts.bearer.claims is not None
                and 200 <= response.status < 300
            ):
                pending.attribution, pending.claimed = self.attribute(facts.bearer), None
            events = self._admin_outcome(pending, request, response)
            after = facts.state
            if pending.before is not None and after is not None and after.access is not None:
                events = [replace(e, details=_with_states(e, pending.before, after.access)) for e in events]
            before = pending.state
            # Nobody reached before (an empty group): nothing to read again, and the effect is zero users.
            after_effect = (
                after.effect
                if after is not None and after.effect is not None
                else ({} if before is not None and before.effect == {} else None)
            )
            if before is not None and before.effect is not None and after_effect is not None:
                found = changes.effect(before.effect, after_effect, before.effect_complete)
                events = [
                    replace(e, details={**e.details, "effect": found}) if e.outcome is Outcome.SUCCEEDED else e
                    for e in events
                ]
            assert pending.action is not None
            return [
                out
                for e in events
                for out in c.outcome_events(
                    rt,
                    pending.action,
                    request,
                    response,
                    e,
                    before.reads if before is not None else None,
                    after.reads if after is not None else None,
                    pending.before,
                    after.access if after is not None else None,
                )
            ]
        if rt.kind is c.Kind.TOKEN:
            return self._token(rt, request, response)
        if rt.kind in (c.Kind.LOGIN_STEP, c.Kind.REQUIRED_ACTION, c.Kind.AUTH):
            return self._browser(rt, request, response)
        if rt.kind in (c.Kind.LOGOUT, c.Kind.REVOKE):
            return self._logout(rt, request, response, facts.hint)
        if rt.kind is c.Kind.WHOAMI:
            self._learn_whoami(response, facts.bearer)
            return []
        if rt.kind is c.Kind.ACCOUNT_WRITE:
            events = c.on_account(rt, request, response, self.attribute(facts.bearer))
            claimed = self._claimed(facts.bearer)
            if claimed is not None:
                events = [replace(e, details={**e.details, "unverified": claimed}) for e in events]
            return events
        return []

    def abandoned(self, pending: Pending, request: RequestView, reason: str) -> list[IdentityEvent]:
        """No answer from Keycloak (unreachable, timed out, cut off, cancelled): an intent gets an
        outcome `unknown` naming why, so it never stays pending; other exchanges have nothing to say."""
        p = pending
        if p.intent is None or p.action is None:
            return []
        details: dict[str, Any] = {**p.action.details, "phase": "outcome", "actor_verified": p.attribution.verified}
        if p.claimed is not None:
            details["unverified"] = p.claimed
        if p.intent_seq is not None:
            details["intent_seq"] = p.intent_seq
        return [
            IdentityEvent(
                p.action.type,
                Outcome.UNKNOWN,
                realm=p.route.realm,
                actor=p.attribution.actor,
                target=p.action.target,
                client=p.attribution.client,
                source_ip=request.client_ip,
                session=p.attribution.session,
                request_id=request.request_id,
                error=reason,
                details=details,
            )
        ]

    # ------------------------------------------------------------------ internals
    def _login_context(self, request: RequestView, *, identity_vouched: bool) -> tuple[c.LoginContext, str | None]:
        """What is known of the browser login in progress.

        The presented KEYCLOAK_IDENTITY cookie is HMAC-signed with a key Keycloak does not
        publish: its user id is used only when Keycloak's answer vouches for the cookie (it
        accepted it and logged the user in) or when the session it names is one the sidecar
        saw Keycloak open for that same user.
        """
        jar = cookies(request.headers, "Cookie")
        key = self.sessions.attempt_key(jar["AUTH_SESSION_ID"]) if "AUTH_SESSION_ID" in jar else None
        known = self.sessions.attempts.get(key) if key else None
        identity = Claims.of(unverified_claims(jar.get("KEYCLOAK_IDENTITY", "")), verified=False)
        sid = identity.sid if identity else None
        session_known = self.sessions.sessions.get(sid) if sid else None
        identity_sub = identity.sub if identity else None
        if not identity_vouched and not (session_known and session_known.user_id == identity_sub):
            identity_sub = None
        username = (known.username if known else None) or (session_known.username if session_known else None)
        user_id = (known.user_id if known else None) or identity_sub
        return c.LoginContext(
            username, user_id, sid if identity_sub else None, kc_action=self.sessions.action(key)
        ), key

    @staticmethod
    def _identity_cookie(response: ResponseView) -> dict[str, str] | None:
        # The identity cookie Keycloak sets is HMAC-signed with a key it does not publish; its claims
        # come on the answer the sidecar forwarded (the channel vouches for them).
        value = cookies(response.headers, "Set-Cookie", "KEYCLOAK_IDENTITY").get("KEYCLOAK_IDENTITY")
        return _safe(unverified_claims(value)) if value else None

    def _browser(self, rt: c.Route, request: RequestView, response: ResponseView) -> list[IdentityEvent]:
        # An SSO login answered at once with a code: Keycloak accepted the presented identity cookie.
        vouched = (
            rt.kind is c.Kind.AUTH and response.status in (302, 303) and "code=" in response.headers.get("Location", "")
        )
        ctx, key = self._login_context(request, identity_vouched=vouched)
        identity = self._identity_cookie(response)
        if rt.kind is c.Kind.LOGIN_STEP:
            events, remember = c.on_login_step(rt, request, response, ctx, identity)
            if remember and key:
                self.sessions.attempts.put(key, Principal(ctx.user_id, remember, rt.realm))
            if key and any(e.type is EventType.MFA_OTP_VERIFIED for e in events):
                # the login ends after a required action: its login.succeeded must still say MFA was used
                self.sessions.remember_action(key + _MFA, "otp")
        elif rt.kind is c.Kind.REQUIRED_ACTION:
            events = c.on_required_action(rt, request, response, ctx, identity)
            if any(e.type is EventType.LOGIN_SUCCEEDED for e in events):
                mfa = self.sessions.action(key + _MFA if key else None)
                if mfa:
                    events = [
                        replace(e, details={**e.details, "mfa": mfa}) if e.type is EventType.LOGIN_SUCCEEDED else e
                        for e in events
                    ]
                self.sessions.forget_action(key)
                self.sessions.forget_action(key + _MFA if key else None)
        else:
            action = c.kc_action_of(request)
            if action:
                # The required-action post that finishes it names only the alias (not, e.g., which
                # credential delete_credential removes): remember it for this login attempt.
                cookie = cookies(request.headers, "Cookie").get("AUTH_SESSION_ID") or cookies(
                    response.headers, "Set-Cookie", "AUTH_SESSION_ID"
                ).get("AUTH_SESSION_ID")
                if cookie:
                    self.sessions.remember_action(self.sessions.attempt_key(cookie), action[:512])
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
        if p.claimed is not None:
            details["unverified"] = p.claimed
        if p.intent_seq is not None:
            details["intent_seq"] = p.intent_seq
        if p.action.type is EventType.USER_IMPERSONATED and outcome is Outcome.SUCCEEDED:
            ident = self._identity_cookie(response)
            if ident and ident.get("sid"):
                details["impersonation_session"] = ident["sid"]
        return [
            IdentityEvent(
                p.action.type,
                outcome,
                realm=p.route.realm,
                actor=p.attribution.actor,
                target=target,
                client=p.attribution.client,
                source_ip=request.client_ip,
                session=p.attribution.session,
                request_id=request.request_id,
                error=error,
                details=details,
            )
        ]

    def _token(self, rt: c.Route, request: RequestView, response: ResponseView) -> list[IdentityEvent]:
        client_id, _ = basic_client(request.headers)
        data = response.json()
        issued: dict[str, str] | None = None
        ok = response.status == 200 and isinstance(data, dict) and isinstance(data.get("access_token"), str)
        if ok and isinstance(data, dict):
            # These tokens are in Keycloak's own answer on the sidecar's upstream connection: the
            # channel vouches for them, so their claims are read without a signature check (which
            # would add ~0.4 ms to every grant). Tokens *presented* by clients are always verified.
            for key in ("id_token", "access_token"):
                if isinstance(data.get(key), str):
                    issued = _safe(unverified_claims(data[key]))
                    if issued is not None:
                        break
        form = request.form()
        presented_rt = form.get("refresh_token") or None
        presented = _safe(unverified_claims(presented_rt)) if presented_rt else None
        known = self.sessions.refresh(self._fingerprint(presented_rt)) if presented_rt else None
        claimed = None
        if presented_rt and not ok and known is None:
            # Keycloak refused the refresh token and the sidecar never saw it issued: its claims are
            # anyone's guess. Kept for correlation, never as the actor.
            claimed, presented = presented or {}, None
        elif known is not None:
            presented = {**(presented or {}), "sub": known.user_id or "", "preferred_username": known.username or ""}
            presented = {k: v for k, v in presented.items() if v}
        events = c.on_token(rt, request, response, client_id, issued, presented)
        refresh = data.get("refresh_token") if isinstance(data, dict) else None
        refresh_claims = _safe(unverified_claims(refresh)) if isinstance(refresh, str) else None
        if refresh_claims and events and events[0].actor and not events[0].actor.id and refresh_claims.get("sub"):
            # Lightweight access tokens carry no sub; the refresh token from the same answer does
            # (HMAC-signed by Keycloak, so read for correlation: it came back on the response we forwarded).
            events = [
                replace(
                    events[0],
                    actor=replace(events[0].actor, id=refresh_claims.get("sub")),
                    session=events[0].session or refresh_claims.get("sid"),
                )
            ]
        out = []
        for e in events:
            details = dict(e.details)
            actor = e.actor
            if presented_rt:
                details["presented_refresh_fp"] = self._fingerprint(presented_rt)
            if isinstance(refresh, str):
                details["issued_refresh_fp"] = self._fingerprint(refresh)
            if claimed is not None:
                details["unverified"] = claimed
                actor = _unverified()
            # Nothing added (a client-credentials grant): the event as built, not a second bounding pass.
            out.append(e if actor is e.actor and details == e.details else replace(e, actor=actor, details=details))
            if e.outcome is Outcome.SUCCEEDED and e.actor and (e.actor.id or e.actor.username):
                principal = Principal(e.actor.id, e.actor.username, rt.realm, e.client)
                if e.session:
                    self.sessions.sessions.put(e.session, principal)
                if isinstance(refresh, str):
                    self.sessions.remember_refresh(self._fingerprint(refresh), principal)
        return out

    def unseen_refresh(self, request: RequestView) -> tuple[str, str] | None:
        """(realm, token) of a revocation presenting a refresh token not issued through this sidecar, else None.

        In a cluster it may have been issued through another node; Keycloak's introspection (with the
        client's own credentials from the request, before the token is revoked) says whose it is.
        """
        rt = c.route(request.head)
        if rt is None or rt.kind is not c.Kind.REVOKE or not rt.realm:
            return None
        presented = self._presented(request)
        if presented is None or presented[0] not in ("refresh_token", "token"):
            return None
        claims = Claims.of(unverified_claims(presented[1]), verified=False)
        if claims is None or claims.typ not in ("Refresh", "Offline"):  # access tokens are checked by signature
            return None
        if self.sessions.refresh(self._fingerprint(presented[1])) is not None:
            return None
        return rt.realm, presented[1]

    @staticmethod
    def _presented(request: RequestView) -> tuple[str, str] | None:
        form = request.form()
        for name in ("id_token_hint", "refresh_token", "token"):
            value = form.get(name) or (request.query.get(name) if name == "id_token_hint" else None)
            if value:
                return name, value
        return None

    def _logout(
        self, rt: c.Route, request: RequestView, response: ResponseView, hint: HintFacts | None
    ) -> list[IdentityEvent]:
        """Logout and revocation, attributed only to what is vouched for.

        Vouched: a presented ID or access token whose signature verified; a refresh token the
        sidecar saw Keycloak issue; for a browser logout by identity cookie, a session the sidecar
        saw Keycloak open for the user the cookie names;
        or, for a logout, Keycloak's success itself, which it gives only for a hint or refresh
        token it validated. A revocation is answered 200 for valid and invalid tokens alike
        (RFC 7009), so there Keycloak's answer vouches for nothing: a token not vouched for
        otherwise gives an `unverified` actor and outcome `unknown`.
        """
        form = request.form()
        presented = self._presented(request)
        if presented is not None:
            raw, source = _safe(unverified_claims(presented[1])) or {}, presented[0]
        else:
            raw = _safe(unverified_claims(cookies(request.headers, "Cookie").get("KEYCLOAK_IDENTITY", ""))) or {}
            source = "cookie"
        vouched: Principal | None = None
        if hint is not None and hint.claims is not None and presented and hint.token == presented[1]:
            vouched = Principal(hint.claims.sub, hint.claims.preferred_username)
        elif presented and presented[0] in ("refresh_token", "token"):
            vouched = self.sessions.refresh(self._fingerprint(presented[1]))
        sid = raw.get("sid")
        known = self.sessions.sessions.get(sid) if sid else None
        if (
            vouched is None
            and source == "cookie"
            and known is not None
            and known.user_id
            and known.user_id == raw.get("sub")
        ):
            # A browser logout by cookie: the session is one the sidecar saw Keycloak open for this user.
            # (Never for a presented token: its sid and sub are not secrets, anyone can write them.)
            vouched = known
        logout = rt.kind is c.Kind.LOGOUT
        keycloak_validated = (
            logout
            and source != "cookie"
            and response.status in (200, 204, 302, 303)
            and not (response.status == 200 and c.page_errors(response))
        )
        if vouched is None and keycloak_validated and (raw.get("sub") or raw.get("preferred_username")):
            vouched = Principal(raw.get("sub"), raw.get("preferred_username"))
        client_basic, _ = basic_client(request.headers)
        client = (
            client_basic
            or form.get("client_id")
            or request.query.get("client_id")
            or (raw.get("azp") if vouched else None)
        )
        if vouched is not None:
            user_id = vouched.user_id
            username = vouched.username or (known.username if known else None)
            actor = Party(id=user_id or None, username=username, kind="user") if (user_id or username) else None
            attribution = c.Attribution(actor, sid, client, True)
        elif presented is not None or raw:
            attribution = c.Attribution(_unverified(), None, client, False)
        else:
            attribution = c.Attribution(None, None, client, False)
        events = (c.on_logout if logout else c.on_revoke)(rt, request, response, attribution)
        out = []
        for e in events:
            details = {**e.details, "attributed_by": source if vouched else "none"}
            outcome = e.outcome
            if vouched is None and (presented is not None or raw):
                if raw:
                    details["unverified"] = raw
                if not logout and outcome is Outcome.SUCCEEDED:
                    outcome = Outcome.UNKNOWN  # 200 says nothing about an unvouched token (RFC 7009)
            out.append(replace(e, outcome=outcome, details=details))
        return out

    def _learn_whoami(self, response: ResponseView, bearer: BearerFacts | None) -> None:
        data = response.json()
        claims = bearer.claims if bearer is not None else None
        if response.status != 200 or not isinstance(data, dict) or claims is None:
            return
        user_id, display = data.get("userId"), data.get("displayName")
        if claims.sid and isinstance(user_id, str):
            self.sessions.sessions.put(
                claims.sid,
                Principal(user_id, display if isinstance(display, str) and display else None, claims.realm, claims.azp),
            )


def _body_caveat(request: RequestView, action: c.AdminAction) -> c.AdminAction:
    """Say so when the sidecar cannot be sure it read the body as Keycloak does; drop guesses built on it."""
    body = request.json_body()
    if body.certain or not request.body:
        return action
    details = {**action.details, "body_read": body.note or "uncertain"}
    if body.value is None:
        for key in ("roles", "role_ids", "all_roles", "fields"):
            details.pop(key, None)
    return replace(action, details=details)


def _flat_roles(state: Mapping[str, Any]) -> set[str]:
    out = {r for r in state.get("realm_roles") or () if isinstance(r, str)}
    clients = state.get("client_roles")
    if isinstance(clients, Mapping):
        out.update(
            f"{client}:{r}"
            for client, roles in clients.items()
            if isinstance(roles, list)
            for r in roles
            if isinstance(r, str)
        )
    return out


def _with_states(event: IdentityEvent, before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """Outcome details with the state Keycloak reported around the change.

    Where the body could not be read for sure, the roles the record names are the ones whose
    mapping Keycloak's state shows changed (`roles_from: state`), never a guess from the body.
    """
    details = {**event.details, "before": before, "after": after}
    if event.type in (EventType.ROLE_GRANTED, EventType.ROLE_REVOKED) and "body_read" in details:
        b, a = _flat_roles(before), _flat_roles(after)
        details["roles"] = sorted(a - b) if event.type is EventType.ROLE_GRANTED else sorted(b - a)
        details["roles_from"] = "state"
        details.pop("all_roles", None)
    return details


def facts_unverified(pending: Pending, facts: Facts) -> bool:
    """Did the request present a bearer token the sidecar could not verify?"""
    if pending.claimed is not None:
        return True
    bearer = facts.bearer
    return bearer is not None and bearer.present and bearer.claims is None
