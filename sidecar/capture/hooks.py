"""The capture hooks: the thin async layer between the proxy and the capture pipeline.

For each request the proxy asks `plan` whether capture needs it. For those that
matter this layer only fetches outside facts and appends; every decision is the
pure `CapturePipeline`'s (sidecar.capture.pipeline) or the policy's
(sidecar.policy):

* `before_forward` asks the pipeline what it needs (`needs_before`), fetches it
  (the bearer token's signature check, the console's whoami, the target's state
  from the state reader), lets the pipeline decide (`begin`) and, for a mutating
  admin request, appends the intent record and waits until it is durable. If it
  cannot be written, `policy.failure` decides: a Pushback (503, Keycloak never
  sees the request) or a loud log line.
* `after_response` fetches what `needs_after` asks for, lets the pipeline turn
  the exchange into outcome events (`finish`) and appends them, waiting for them
  to be durable before the client gets its response. When Keycloak gives no
  answer the proxy calls `abandoned` instead, and an intent gets its `unknown`
  outcome (`pipeline.abandoned`).

Every record passes `policy.redaction` before it is appended; for a failed login
this layer first asks Keycloak (through the state reader) whether the typed
login name is anyone's, so a password typed into the username box is kept only
as a keyed fingerprint.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from sidecar.capture import changes
from sidecar.capture.pipeline import (
    AfterNeeds,
    BearerFacts,
    CapturePipeline,
    Facts,
    HintFacts,
    Pending,
    StateFacts,
    StateWanted,
    bearer_token,
)
from sidecar.capture.reader import KeycloakReader
from sidecar.capture.sessions import Principal, SessionDirectory
from sidecar.capture.tokens import Claims, TokenVerifier, unverified_claims
from sidecar.core.events import Appender, IdentityEvent
from sidecar.core.exchange import CapturePlan, Pushback, RequestHead, RequestView, ResponseView
from sidecar.errors import OverloadError, RecordRejected, StorageError
from sidecar.policy import failure
from sidecar.policy.redaction import Redactor, typed_username
from sidecar.policy.schema import Policy

log = logging.getLogger("sidecar.capture")

WhoAmI = Callable[[str, str, str | None, str | None, str | None], Awaitable[dict[str, Any] | None]]
# (realm, token, the request's client credentials: headers and form fields) -> Keycloak's introspection answer
Introspect = Callable[[str, str, dict[str, str], dict[str, str]], Awaitable[dict[str, Any] | None]]

_EXISTS_TTL_S = 30.0
_EXISTS_MAX = 10_000


def keyed_fingerprint(key: bytes) -> Callable[[str], str]:
    """HMAC-SHA-256 of a value, cut to 128 bits, for correlating without keeping the value."""

    def fingerprint(value: str) -> str:
        # SECURITY: a keyed fingerprint (not a plain hash) so a low-entropy secret cannot be guessed back.
        return hmac.new(key, value.encode("utf-8", "replace"), hashlib.sha256).hexdigest()[:32]

    return fingerprint


class LedgerHooks:
    """Implements sidecar.proxy.forward.CaptureHooks on top of a ledger appender."""

    def __init__(
        self,
        append: Appender,
        policy: Policy,
        tokens: TokenVerifier,
        sessions: SessionDirectory,
        whoami: WhoAmI,
        fingerprint_key: bytes,
        reader: KeycloakReader | None = None,
        introspect: Introspect | None = None,
    ) -> None:
        self._append = append
        self._introspect = introspect
        self._policy = policy
        self._tokens = tokens
        self._whoami = whoami
        self._reader = reader if policy.capture.record_before_after else None
        self._fingerprint = keyed_fingerprint(fingerprint_key)
        self._redactor = Redactor(policy, self._fingerprint)
        self._names_seen = reader  # login names are checked even when before/after states are off
        self._exists: OrderedDict[str, tuple[float, tuple[bool | None, str | None]]] = OrderedDict()
        self.pipeline = CapturePipeline(sessions, self._fingerprint, record_before_after=self._reader is not None)

    # ------------------------------------------------------------------ CaptureHooks
    def plan(self, head: RequestHead) -> CapturePlan:
        return self.pipeline.plan(head)

    async def before_forward(self, request: RequestView) -> Pushback | object:
        if self._introspect is not None and (unseen := self.pipeline.unseen_refresh(request)) is not None:
            await self._learn_refresh(request, *unseen)
        needs = self.pipeline.needs_before(request)
        bearer = await self._bearer(request) if needs.bearer else None
        state = await self._state(needs.state) if needs.state is not None else None
        pending = self.pipeline.begin(request, Facts(bearer=bearer, state=state))
        if pending is None or pending.intent is None:
            return pending
        try:
            receipt = await self._write(pending.intent)
        except (StorageError, OverloadError, RecordRejected) as exc:
            verdict = failure.intent_not_durable(self._policy, request.method, exc)
            if verdict.pushback is not None:
                return verdict.pushback
            log.error("%s", verdict.unrecorded)
            receipt = None
        pending.intent_seq = getattr(receipt, "seq", None)
        return pending

    async def after_response(self, request: RequestView, response: ResponseView, token: object) -> Pushback | None:
        if not isinstance(token, Pending):
            return None
        try:
            facts = await self._after_facts(self.pipeline.needs_after(token, request), request)
            events = self.pipeline.finish(token, request, response, facts)
        except Exception as exc:  # fetching facts must never break Keycloak traffic
            # SECURITY: the exception's text may quote request bytes; only its type reaches the log.
            log.error("capture facts failed for %s %s: %s", request.method, token.route.kind.value, type(exc).__name__)
            events = self.pipeline.finish(token, request, response, Facts())
        for event in events:
            try:
                await self._write(event)
            except (StorageError, OverloadError, RecordRejected) as exc:
                verdict = failure.outcome_not_durable(self._policy, token.intent is not None, event.type.value, exc)
                if verdict.pushback is not None:
                    return verdict.pushback
                log.error("%s", verdict.unrecorded)
        return None

    async def abandoned(self, request: RequestView, token: object, reason: str) -> None:
        """Keycloak gave no answer: the pipeline's `unknown` outcome for an intent is appended."""
        if not isinstance(token, Pending):
            return
        for event in self.pipeline.abandoned(token, request, reason):
            try:
                await self._write(event)
            except (StorageError, OverloadError, RecordRejected) as exc:
                log.error("UNRECORDED %s outcome (%s; Keycloak may have applied it): %s", event.type, reason, exc)

    # ------------------------------------------------------------------ fetching facts
    async def _bearer(self, request: RequestView, *, fresh_keys: bool = False) -> BearerFacts:
        token = bearer_token(request.headers)
        if token is None:
            return BearerFacts()
        claims = Claims.of(await self._tokens.verify(token, fresh_keys=fresh_keys), verified=True)
        if claims is None:
            return BearerFacts(True, None, Claims.of(unverified_claims(token), verified=False))
        who = None
        username = self.pipeline.needs_whoami(claims)
        if username is not None and claims.realm:
            who = await self._whoami(claims.realm, token, username or None, claims.sid, claims.azp)
        return BearerFacts(True, claims, None, who)

    async def _learn_refresh(self, request: RequestView, realm: str, token: str) -> None:
        """Ask Keycloak whose refresh token a revocation presents, before it is revoked (docs/operations.md §10.2)."""
        assert self._introspect is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() == "authorization"}
        form = request.form()
        client = {k: form[k] for k in ("client_id", "client_secret") if form.get(k)}
        try:
            answer = await self._introspect(realm, token, headers, client)
        except Exception as exc:  # a side call must never break Keycloak traffic
            log.warning("introspection failed: %s", type(exc).__name__)
            return
        if not answer or answer.get("active") is not True or not isinstance(answer.get("sub"), str):
            return
        if client.get("client_id") and answer.get("client_id") != client["client_id"]:
            return  # Keycloak names another client: not this request's token to vouch for
        username = answer.get("username")
        self.pipeline.sessions.remember_refresh(
            self._fingerprint(token),
            Principal(answer["sub"], username if isinstance(username, str) else None, realm, answer.get("client_id")),
        )

    async def _state(self, wanted: StateWanted) -> StateFacts | None:
        if self._reader is None:
            return None
        access = await self._reader.access(wanted.realm, *wanted.access) if wanted.access else None
        username = await self._reader.username(wanted.realm, wanted.username_of) if wanted.username_of else None
        names = {(kind, oid): await self._reader.name_of(wanted.realm, kind, oid) for kind, oid in wanted.names}
        reads = {path: await self._reader.read(wanted.realm, path) for path in wanted.reads} if wanted.reads else None
        effect, complete, clients = None, False, wanted.effect_clients
        if wanted.effect is not None:
            effect, complete, clients = await self._effect_before(wanted.realm, wanted.effect, clients)
        return StateFacts(access, username, names, reads, effect, complete, clients)

    async def _effect_before(
        self, realm: str, what: str, clients: tuple[str, ...]
    ) -> tuple[dict[str, list[str] | None] | None, bool, tuple[str, ...]]:
        """The effective roles of every user a composite or group role change can reach (bounded)."""
        assert self._reader is not None
        kind, _, ref = what.partition(":")
        wanted = list(clients)
        if kind == "role-id":
            role = await self._reader.read(realm, f"roles-by-id/{ref}")
            if not isinstance(role, dict) or not isinstance(role.get("name"), str):
                return None, False, clients
            if role.get("clientRole") and isinstance(role.get("containerId"), str):
                ref = f"clients/{role['containerId']}/roles/{role['name']}"
                wanted.append(role["containerId"])
            else:
                ref = f"roles/{role['name']}"
            kind = "role"
        if kind == "group":
            users, complete = await self._reader.group_members(realm, ref, changes.EFFECT_LIMIT)
        else:
            if ref.startswith("clients/"):
                wanted.append(ref.split("/")[1])
            users, complete = await self._reader.role_holders(realm, ref, changes.EFFECT_LIMIT)
        ids = tuple(dict.fromkeys(wanted))
        roles = await asyncio.gather(*(self._reader.effective_roles(realm, uid, ids) for uid in users))
        return dict(zip(users, roles, strict=True)), complete, ids

    async def _after_facts(self, needs: AfterNeeds, request: RequestView) -> Facts:
        bearer = await self._bearer(request, fresh_keys=needs.fresh_keys) if needs.bearer else None
        state = None
        if self._reader is not None and (needs.access is not None or needs.reads or needs.effect_users):
            access = await self._reader.access(*needs.access) if needs.access is not None else None
            reads = {path: await self._reader.read(needs.realm, path) for path in needs.reads} if needs.reads else None
            effect = None
            if needs.effect_users:
                roles = await asyncio.gather(
                    *(
                        self._reader.effective_roles(needs.realm, uid, needs.effect_clients)
                        for uid in needs.effect_users
                    )
                )
                effect = dict(zip(needs.effect_users, roles, strict=True))
            state = StateFacts(access, reads=reads, effect=effect)
        hint = None
        if needs.hint is not None:
            verified = await self._tokens.verify(needs.hint, check_expiry=False)
            hint = HintFacts(needs.hint, Claims.of(verified, verified=True))
        return Facts(bearer=bearer, state=state, hint=hint)

    async def _username_exists(self, realm: str | None, name: str) -> tuple[bool | None, str | None]:
        """Is this login name some user's, and whose (the user id)? Asked of Keycloak, cached briefly by
        fingerprint (never by name)."""
        if self._names_seen is None or realm is None:
            return None, None
        key = self._fingerprint(f"{realm}\0{name}")
        now = time.monotonic()
        hit = self._exists.get(key)
        if hit is not None and now - hit[0] < _EXISTS_TTL_S:
            return hit[1]
        found = await self._names_seen.login_user(realm, name)
        self._exists[key] = (now, found)
        self._exists.move_to_end(key)
        while len(self._exists) > _EXISTS_MAX:
            self._exists.popitem(last=False)
        return found

    async def _write(self, event: IdentityEvent) -> Any:
        name = typed_username(event)
        exists, user_id = await self._username_exists(event.realm, name) if name else (None, None)
        if exists is True and user_id and event.actor is not None:
            # The user Keycloak resolves this login name to (its LOGIN_ERROR names the same id): the record
            # is theirs, so their identifying values go under their subject key and erase with it.
            event = replace(event, actor=replace(event.actor, id=user_id))
        return await self._append(self._redactor.record(event, username_exists=exists))
