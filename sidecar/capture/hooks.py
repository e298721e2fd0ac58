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

Every record passes `policy.redaction` before it is appended.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sidecar.capture.pipeline import (
    AfterNeeds,
    BearerFacts,
    CapturePipeline,
    Facts,
    Pending,
    StateFacts,
    StateWanted,
    bearer_token,
)
from sidecar.capture.reader import KeycloakReader
from sidecar.capture.sessions import SessionDirectory
from sidecar.capture.tokens import TokenVerifier, unverified_claims
from sidecar.core.events import IdentityEvent
from sidecar.core.exchange import CapturePlan, Pushback, RequestHead, RequestView, ResponseView
from sidecar.errors import OverloadError, RecordRejected, StorageError
from sidecar.policy import failure
from sidecar.policy.redaction import Redactor
from sidecar.policy.schema import Policy

log = logging.getLogger("sidecar.capture")

Appender = Callable[[IdentityEvent | dict[str, Any]], Awaitable[Any]]
WhoAmI = Callable[[str, str, str | None], Awaitable[dict[str, Any] | None]]


def keyed_fingerprint(key: bytes) -> Callable[[str], str]:
    """HMAC-SHA-256 of a value, cut to 128 bits, for correlating without keeping the value."""
    def fingerprint(value: str) -> str:
        # SECURITY: a keyed fingerprint (not a plain hash) so a low-entropy secret cannot be guessed back.
        return hmac.new(key, value.encode("utf-8", "replace"), hashlib.sha256).hexdigest()[:32]
    return fingerprint


class LedgerHooks:
    """Implements sidecar.proxy.forward.CaptureHooks on top of a ledger appender."""

    def __init__(self, append: Appender, policy: Policy, tokens: TokenVerifier, sessions: SessionDirectory,
                 whoami: WhoAmI, fingerprint_key: bytes, reader: KeycloakReader | None = None) -> None:
        self._append = append
        self._policy = policy
        self._tokens = tokens
        self._whoami = whoami
        self._reader = reader if policy.capture.record_before_after else None
        self._redactor = Redactor(policy)
        self.pipeline = CapturePipeline(sessions, keyed_fingerprint(fingerprint_key),
                                        record_before_after=self._reader is not None)

    # ------------------------------------------------------------------ CaptureHooks
    def plan(self, head: RequestHead) -> CapturePlan:
        return self.pipeline.plan(head)

    async def before_forward(self, request: RequestView) -> Pushback | object:
        needs = self.pipeline.needs_before(request)
        bearer = await self._bearer(request) if needs.bearer else None
        state = await self._state(needs.state) if needs.state is not None else None
        pending = self.pipeline.begin(request, Facts(bearer=bearer, state=state))
        if pending is None or pending.intent is None:
            return pending
        try:
            receipt = await self._write(pending.intent, request, None)
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
            facts = await self._after_facts(self.pipeline.needs_after(token), request)
            events = self.pipeline.finish(token, request, response, facts)
        except Exception:  # classification must never break Keycloak traffic
            log.exception("capture failed for %s %s", request.method, request.path)
            events = []
        for event in events:
            try:
                await self._write(event, request, response)
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
                await self._write(event, request, None)
            except (StorageError, OverloadError, RecordRejected) as exc:
                log.error("UNRECORDED %s outcome (%s; Keycloak may have applied it): %s", event.type, reason, exc)

    # ------------------------------------------------------------------ fetching facts
    async def _bearer(self, request: RequestView) -> BearerFacts:
        token = bearer_token(request.headers)
        if token is None:
            return BearerFacts()
        claims = await self._tokens.verify(token)
        if claims is None:
            return BearerFacts(True, None, unverified_claims(token))
        who = None
        username = self.pipeline.needs_whoami(claims)
        if username is not None and isinstance(claims.get("_realm"), str):
            who = await self._whoami(claims["_realm"], token, username or None)
        return BearerFacts(True, claims, None, who)

    async def _state(self, wanted: StateWanted) -> StateFacts | None:
        if self._reader is None:
            return None
        access = await self._reader.access(wanted.realm, *wanted.access) if wanted.access else None
        username = await self._reader.username(wanted.realm, wanted.username_of) if wanted.username_of else None
        names = {(kind, oid): await self._reader.name_of(wanted.realm, kind, oid) for kind, oid in wanted.names}
        return StateFacts(access, username, names)

    async def _after_facts(self, needs: AfterNeeds, request: RequestView) -> Facts:
        bearer = await self._bearer(request) if needs.bearer else None
        state = None
        if needs.access is not None and self._reader is not None:
            state = StateFacts(await self._reader.access(*needs.access))
        return Facts(bearer=bearer, state=state)

    async def _write(self, event: IdentityEvent, request: RequestView, response: ResponseView | None) -> Any:
        payload, hit = self._redactor.record(event, request, response)
        if hit:
            log.warning("a secret value was cut from a %s record", event.type)
        return await self._append(payload)
