"""The closed, versioned set of identity events a ledger record can carry.

Wire names are explicit string constants, never derived from Python names, so
renaming code can never change signed bytes. A shipped name is never changed
or reused; new kinds are added with new names (docs/format.md §5 lists them all).

An `IdentityEvent` is a frozen value. `to_json()` gives the dict that goes into
a record; absent (None) fields are left out so records stay small.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class EventType(enum.StrEnum):
    """Every event kind the ledger knows. The value is the wire name."""

    LOGIN_SUCCEEDED = "login.succeeded"
    LOGIN_FAILED = "login.failed"
    TOKEN_ISSUED = "token.issued"
    TOKEN_FAILED = "token.failed"
    TOKEN_REFRESHED = "token.refreshed"
    TOKEN_REVOKED = "token.revoked"
    TOKEN_EXCHANGED = "token.exchanged"
    LOGOUT_COMPLETED = "logout.completed"
    MFA_OTP_VERIFIED = "mfa.otp.verified"
    MFA_OTP_FAILED = "mfa.otp.failed"
    CREDENTIAL_ENROLLED = "credential.enrolled"
    CREDENTIAL_REMOVED = "credential.removed"
    PASSWORD_CHANGED = "password.changed"
    PASSWORD_RESET = "password.reset"
    ROLE_GRANTED = "role.granted"
    ROLE_REVOKED = "role.revoked"
    GROUP_JOINED = "group.joined"
    GROUP_LEFT = "group.left"
    ROLE_COMPOSITE_CHANGED = "role.composite.changed"
    USER_CREATED = "user.created"
    USER_UPDATED = "user.updated"
    USER_DISABLED = "user.disabled"
    USER_ENABLED = "user.enabled"
    USER_DELETED = "user.deleted"
    CLIENT_CREATED = "client.created"
    CLIENT_DELETED = "client.deleted"
    CLIENT_SECRET_ROTATED = "client.secret.rotated"
    USER_IMPERSONATED = "user.impersonated"
    SESSION_REVOKED = "session.revoked"
    ORGANIZATION_JOINED = "organization.joined"
    ORGANIZATION_LEFT = "organization.left"
    ADMIN_CHANGE = "admin.change"
    AUDIT_READ = "audit.read"
    LEDGER_STARTED = "ledger.started"
    LEDGER_RECOVERED = "ledger.recovered"
    KEY_ROTATED = "key.rotated"
    DRIFT_DETECTED = "drift.detected"
    STATE_SNAPSHOT = "state.snapshot"


class Outcome(enum.StrEnum):
    """How the action ended. `pending` marks an intent written before forwarding."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PENDING = "pending"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Party:
    """Who acted or was acted upon: a user, a client, or both."""

    id: str | None = None
    username: str | None = None
    client: str | None = None
    kind: str | None = None  # "user", "client", "group", "role", "session", "credential", ...
    name: str | None = None

    def to_json(self) -> dict[str, str]:
        return {k: v for k, v in (("id", self.id), ("username", self.username), ("client", self.client),
                                  ("kind", self.kind), ("name", self.name)) if v is not None}


@dataclass(frozen=True, slots=True)
class IdentityEvent:
    """One identity event as observed in-band by the sidecar."""

    type: EventType
    outcome: Outcome
    realm: str | None = None
    actor: Party | None = None
    target: Party | None = None
    client: str | None = None
    source_ip: str | None = None
    session: str | None = None
    request_id: str | None = None
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type.value, "outcome": self.outcome.value}
        for key, value in (("realm", self.realm), ("client", self.client), ("ip", self.source_ip),
                           ("session", self.session), ("request_id", self.request_id), ("error", self.error)):
            if value is not None:
                out[key] = value
        if self.actor is not None:
            out["actor"] = self.actor.to_json()
        if self.target is not None:
            out["target"] = self.target.to_json()
        if self.details:
            out["details"] = self.details
        return out


WIRE_NAMES = frozenset(t.value for t in EventType)
