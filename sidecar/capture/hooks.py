"""The capture hooks: where a Keycloak exchange becomes durable ledger records.

For each request the proxy asks `plan` whether capture needs it. For those
that matter:

* `before_forward` resolves who is acting (verified bearer token, sessions
  seen before, or the console's whoami) and, for a mutating admin request,
  appends an intent record (outcome `pending`) and waits until it is durable.
  If it cannot be written and the policy says "closed", the answer is a
  Pushback (503) and Keycloak never sees the request (P2).
* `after_response` classifies the exchange (sidecar.capture.classify), appends
  the outcome records and waits for them to be durable before the client gets
  its response; a login whose record cannot be written gets 503 when the
  policy says logins fail closed.

All records pass `scrub` with every secret value seen in the exchange
(passwords, codes, tokens, cookies, client secrets) before they are written.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from http.cookies import CookieError, SimpleCookie
from typing import Any

from sidecar.capture import classify as c
from sidecar.capture.reader import KeycloakReader
from sidecar.capture.sessions import Principal, SessionDirectory
from sidecar.capture.tokens import TokenVerifier, unverified_claims
from sidecar.core.events import EventType, IdentityEvent, Outcome, Party
from sidecar.core.exchange import PASS_THROUGH, CapturePlan, Pushback, RequestHead, RequestView, ResponseView
from sidecar.errors import OverloadError, StorageError
from sidecar.policy.schema import Policy

log = logging.getLogger("sidecar.capture")

Appender = Callable[[IdentityEvent], Awaitable[Any]]
WhoAmI = Callable[[str, str, str | None], Awaitable[dict[str, Any] | None]]

_CAPTURE = CapturePlan(True, True)
_TOKEN_KEYS = ("access_token", "refresh_token", "id_token", "value", "secret", "client_secret")


@dataclass(slots=True)
class _Pending:
    route: c.Route
    attribution: c.Attribution
    action: c.AdminAction | None = None
    intent_seq: int | None = None
    before: dict[str, Any] | None = None


_ACCESS_CHANGES = frozenset({EventType.ROLE_GRANTED, EventType.ROLE_REVOKED, EventType.GROUP_JOINED,
                             EventType.GROUP_LEFT})


def _cookies(headers: Any, name: str) -> dict[str, str]:
    jar: dict[str, str] = {}
    for raw in headers.getall(name, ()):
        try:
            parsed = SimpleCookie()
            parsed.load(raw)
        except CookieError:
            continue
        for key, morsel in parsed.items():
            jar[key] = morsel.value
    return jar


def _basic_client(headers: Any) -> tuple[str | None, str | None]:
    auth = headers.get("Authorization", "")
    if not auth.lower().startswith("basic "):
        return None, None
    try:
        user, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None, None
    from urllib.parse import unquote

    return unquote(user) or None, unquote(secret) or None


def _bearer(headers: Any) -> str | None:
    auth = headers.get("Authorization", "")
    return auth[7:].strip() if auth.lower().startswith("bearer ") else None


class LedgerHooks:
    """Implements sidecar.proxy.forward.CaptureHooks on top of a ledger appender."""

    def __init__(self, append: Appender, policy: Policy, tokens: TokenVerifier, sessions: SessionDirectory,
                 whoami: WhoAmI, fingerprint_key: bytes, reader: KeycloakReader | None = None) -> None:
        self._append = append
        self._policy = policy
        self._tokens = tokens
        self._sessions = sessions
        self._whoami = whoami
        self._fp_key = fingerprint_key
        self._redact = frozenset(policy.redaction.fields)
        self._reader = reader if policy.capture.record_before_after else None

    # ------------------------------------------------------------------ CaptureHooks
    def plan(self, head: RequestHead) -> CapturePlan:
        return PASS_THROUGH if c.route(head) is None else _CAPTURE

    async def before_forward(self, request: RequestView) -> Pushback | object:
        rt = c.route(request.head)
        if rt is None:
            return None
        if rt.kind is not c.Kind.ADMIN_WRITE:
            return _Pending(rt, c.Attribution())
        attribution = await self._attribute_bearer(request)
        action = c.admin_action(rt, request)
        before = None
        if self._reader is not None and action.type in _ACCESS_CHANGES and action.target and action.target.id:
            before = await self._reader.access(rt.realm, action.target.kind or "", action.target.id)
            if action.target.kind == "user" and not action.target.username:
                name = await self._reader.username(rt.realm, action.target.id)
                if name:
                    action = replace(action, target=replace(action.target, username=name))
            action = await self._names(rt.realm, action)
        intent = IdentityEvent(action.type, Outcome.PENDING, realm=rt.realm, actor=attribution.actor,
                               target=action.target, client=attribution.client, source_ip=request.client_ip,
                               session=attribution.session, request_id=request.request_id,
                               details={**action.details, "phase": "intent",
                                        "actor_verified": attribution.verified})
        try:
            receipt = await self._write(intent, request, None)
        except (StorageError, OverloadError) as exc:
            if self._policy.failure.admin_changes == "closed":
                return Pushback(f"intent record for {request.method} admin request not durable: {exc}",
                                retry_after=getattr(exc, "retry_after", 5))
            log.error("UNRECORDED admin change (failure.admin_changes=open_unsafe): %s", exc)
            receipt = None
        return _Pending(rt, attribution, action, getattr(receipt, "seq", None), before)

    async def after_response(self, request: RequestView, response: ResponseView, token: object) -> Pushback | None:
        if not isinstance(token, _Pending):
            return None
        try:
            events = await self._classify(token, request, response)
        except Exception:  # classification must never break Keycloak traffic
            log.exception("capture failed for %s %s", request.method, request.path)
            events = []
        for event in events:
            try:
                await self._write(event, request, response)
            except (StorageError, OverloadError) as exc:
                admin = token.route.kind is c.Kind.ADMIN_WRITE
                mode = self._policy.failure.admin_changes if admin else self._policy.failure.logins
                if mode == "closed" and not admin:
                    return Pushback(f"{event.type} record not durable: {exc}",
                                    retry_after=getattr(exc, "retry_after", 5))
                log.error("UNRECORDED %s outcome (%s): %s", event.type, "change already applied by Keycloak"
                          if admin else "failure.logins=open_unsafe", exc)
        return None

    # ------------------------------------------------------------------ internals
    async def _write(self, event: IdentityEvent, request: RequestView, response: ResponseView | None) -> Any:
        secrets = self._secrets(request, response)
        payload, hit = c.scrub(event.to_json(), secrets)
        if hit:
            log.warning("a secret value was cut from a %s record", event.type)
        return await self._append(payload)

    def _secrets(self, request: RequestView, response: ResponseView | None) -> set[str]:
        """Every secret value visible in the exchange, so scrub can make sure none is recorded."""
        out: set[str] = set()
        for key, value in request.form().items():
            if key.lower() in self._redact:
                out.add(value)
        for header in ("Authorization", "Cookie"):
            for value in request.headers.getall(header, ()):
                out.add(value)
                out.update(part.split(" ", 1)[-1] for part in value.split(";"))
        out.update(_cookies(request.headers, "Cookie").values())
        _, basic_secret = _basic_client(request.headers)
        if basic_secret:
            out.add(basic_secret)
        for body in (request.json(), response.json() if response is not None else None):
            if isinstance(body, dict):
                out.update(str(body[k]) for k in body if k.lower() in self._redact or k in _TOKEN_KEYS)
                for cred in body.get("credentials", []) if isinstance(body.get("credentials"), list) else []:
                    if isinstance(cred, dict) and isinstance(cred.get("value"), str):
                        out.add(cred["value"])
        if response is not None:
            out.update(_cookies(response.headers, "Set-Cookie").values())
        return {s for s in out if s}

    def _fingerprint(self, value: str) -> str:
        # SECURITY: a keyed fingerprint (not a plain hash) so a low-entropy secret cannot be guessed back.
        return hmac.new(self._fp_key, value.encode(), hashlib.sha256).hexdigest()[:32]

    async def _names(self, realm: str, action: c.AdminAction) -> c.AdminAction:
        """Group and client ids resolved to names, for a record an investigator can read."""
        assert self._reader is not None
        details = dict(action.details)
        target = action.target
        if target is not None and target.kind == "group" and target.id and not target.name:
            target = replace(target, name=await self._reader.name_of(realm, "group", target.id))
        if details.get("group_id"):
            details["group"] = await self._reader.name_of(realm, "group", details["group_id"])
        if details.get("client_uuid"):
            details["client_id"] = await self._reader.name_of(realm, "client", details["client_uuid"])
        return replace(action, target=target, details={k: v for k, v in details.items() if v is not None})

    async def _attribute_bearer(self, request: RequestView) -> c.Attribution:
        token = _bearer(request.headers)
        if token is None:
            return c.Attribution()
        claims = await self._tokens.verify(token)
        if claims is None:
            raw = unverified_claims(token) or {}
            return c.Attribution(Party(kind="unverified", client=raw.get("azp")), None, raw.get("azp"), False)
        sid, azp = claims.get("sid"), claims.get("azp")
        if claims.get("sub"):
            known = self._sessions.sessions.get(sid) if sid else None
            username = claims.get("preferred_username") or (known.username if known else None)
            return c.Attribution(Party(id=claims["sub"], username=username, client=azp, kind="user"), sid, azp, True)
        principal = self._sessions.sessions.get(sid) if sid else None
        if principal is None or principal.user_id is None:
            who = await self._whoami(claims["_realm"], token, principal.username if principal else None)
            if who and who.get("userId"):
                principal = Principal(str(who["userId"]), str(who.get("displayName") or "") or
                                      (principal.username if principal else None), claims["_realm"], azp)
                if sid:
                    self._sessions.sessions.put(sid, principal)
        if principal is None:
            return c.Attribution(Party(client=azp, kind="user"), sid, azp, True)
        return c.Attribution(Party(id=principal.user_id, username=principal.username, client=azp, kind="user"),
                             sid, azp, True)

    def _login_context(self, request: RequestView) -> tuple[c.LoginContext, str | None]:
        cookies = _cookies(request.headers, "Cookie")
        key = self._sessions.attempt_key(cookies["AUTH_SESSION_ID"]) if "AUTH_SESSION_ID" in cookies else None
        known = self._sessions.attempts.get(key) if key else None
        identity = unverified_claims(cookies.get("KEYCLOAK_IDENTITY", "")) or {}
        sid = identity.get("sid")
        session_known = self._sessions.sessions.get(sid) if sid else None
        username = (known.username if known else None) or (session_known.username if session_known else None)
        user_id = (known.user_id if known else None) or identity.get("sub")
        return c.LoginContext(username, user_id, sid, kc_action=self._sessions.action(key)), key

    def _identity_cookie(self, response: ResponseView) -> dict[str, Any] | None:
        # The identity cookie is HMAC-signed with a key Keycloak does not publish; its claims are
        # used for correlation (user id, session id) of a login Keycloak just answered, not as proof.
        value = _cookies(response.headers, "Set-Cookie").get("KEYCLOAK_IDENTITY")
        return unverified_claims(value) if value else None

    async def _classify(self, p: _Pending, request: RequestView, response: ResponseView) -> list[IdentityEvent]:
        rt = p.route
        if rt.kind is c.Kind.ADMIN_WRITE:
            events = self._admin_outcome(p, request, response)
            if p.before is not None and self._reader is not None and p.action and p.action.target \
                    and p.action.target.id:
                after = await self._reader.access(rt.realm, p.action.target.kind or "", p.action.target.id)
                events = [replace(e, details={**e.details, "before": p.before, "after": after}) for e in events]
            return events
        if rt.kind is c.Kind.TOKEN:
            return await self._token(rt, request, response)
        if rt.kind in (c.Kind.LOGIN_STEP, c.Kind.REQUIRED_ACTION, c.Kind.AUTH):
            ctx, key = self._login_context(request)
            identity = self._identity_cookie(response)
            if rt.kind is c.Kind.LOGIN_STEP:
                events, remember = c.on_login_step(rt, request, response, ctx, identity)
                if remember and key:
                    self._sessions.attempts.put(key, Principal(ctx.user_id, remember, rt.realm))
            elif rt.kind is c.Kind.REQUIRED_ACTION:
                events = c.on_required_action(rt, request, response, ctx, identity)
                if any(e.type is EventType.LOGIN_SUCCEEDED for e in events):
                    self._sessions.forget_action(key)
            else:
                action = c.kc_action_of(request)
                if action:
                    # The required-action post that finishes it names only the alias (not, e.g., which
                    # credential delete_credential removes): remember it for this login attempt.
                    cookie = _cookies(request.headers, "Cookie").get("AUTH_SESSION_ID") or \
                        _cookies(response.headers, "Set-Cookie").get("AUTH_SESSION_ID")
                    if cookie:
                        self._sessions.remember_action(self._sessions.attempt_key(cookie), action)
                events = c.on_sso_auth(rt, request, response, identity, ctx)
            for e in events:
                if e.type is EventType.LOGIN_SUCCEEDED and e.session and e.actor:
                    self._sessions.sessions.put(e.session, Principal(e.actor.id, e.actor.username, rt.realm,
                                                                     e.client))
            return events
        if rt.kind in (c.Kind.LOGOUT, c.Kind.REVOKE):
            attribution = self._logout_attribution(request)
            return (c.on_logout if rt.kind is c.Kind.LOGOUT else c.on_revoke)(rt, request, response, attribution)
        if rt.kind is c.Kind.WHOAMI:
            await self._learn_whoami(request, response)
            return []
        if rt.kind is c.Kind.ACCOUNT_WRITE:
            return await self._account(rt, request, response)
        return []

    def _admin_outcome(self, p: _Pending, request: RequestView, response: ResponseView) -> list[IdentityEvent]:
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

    async def _token(self, rt: c.Route, request: RequestView, response: ResponseView) -> list[IdentityEvent]:
        basic_client, _ = _basic_client(request.headers)
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
        events = c.on_token(rt, request, response, basic_client, issued, presented)
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
                self._sessions.sessions.put(e.session, Principal(e.actor.id, e.actor.username, rt.realm, e.client))
        return out

    def _logout_attribution(self, request: RequestView) -> c.Attribution:
        form = request.form()
        hint = form.get("id_token_hint") or request.query.get("id_token_hint") or form.get("refresh_token") \
            or form.get("token")
        claims = unverified_claims(hint) if hint else None
        if not claims:
            cookies = _cookies(request.headers, "Cookie")
            claims = unverified_claims(cookies.get("KEYCLOAK_IDENTITY", "")) or {}
        sid = claims.get("sid")
        known = self._sessions.sessions.get(sid) if sid else None
        user_id = claims.get("sub") or (known.user_id if known else None)
        username = claims.get("preferred_username") or (known.username if known else None)
        client_basic, _ = _basic_client(request.headers)
        client = client_basic or form.get("client_id") or request.query.get("client_id") or claims.get("azp")
        actor = Party(id=user_id, username=username, kind="user") if (user_id or username) else None
        return c.Attribution(actor, sid, client, False)

    async def _learn_whoami(self, request: RequestView, response: ResponseView) -> None:
        data = response.json()
        token = _bearer(request.headers)
        if response.status != 200 or not isinstance(data, dict) or token is None:
            return
        claims = await self._tokens.verify(token)
        if claims and claims.get("sid") and data.get("userId"):
            self._sessions.sessions.put(claims["sid"], Principal(str(data["userId"]),
                                                                 str(data.get("displayName") or "") or None,
                                                                 claims["_realm"], claims.get("azp")))

    async def _account(self, rt: c.Route, request: RequestView, response: ResponseView) -> list[IdentityEvent]:
        """Account REST writes by the user themself (credential delete, profile update, sessions)."""
        return c.on_account(rt, request, response, await self._attribute_bearer(request))
