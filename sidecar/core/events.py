"""The closed, versioned set of identity events a ledger record can carry.

Wire names are explicit string constants, never derived from Python names, so
renaming code can never change signed bytes. A shipped name is never changed
or reused; new kinds are added with new names (docs/format.md §5 lists them all).

An `IdentityEvent` is a frozen value. `to_json()` gives the dict that goes into
a record; absent (None) fields are left out so records stay small.

The typed boundary. Every value in an event may have come from outside (token
claims, form fields, JSON bodies, headers, paths), so an event cleans its own
fields when it is built, and no other path leads into a record:

* text fields are strings of at most `MAX_TEXT` characters (a number given
  where a string belongs becomes its decimal text; anything else is dropped);
  lone surrogates become U+FFFD;
* `details` holds only JSON the canonical encoder accepts: strings of at most
  `MAX_DETAIL_TEXT` characters, integers within +/-(2^53-1) (others, and every
  float, as decimal strings), objects with short ASCII keys (`_KEY`), at most
  `MAX_ITEMS` entries per object or list and `MAX_DEPTH` levels;
* the whole details object is at most `MAX_DETAILS_BYTES` of JSON; past that
  its containers are dropped;
* whatever was cut or dropped is named in `details.bounded` ("actor.id",
  "details.roles[3]", ...), so a record never silently says less than it saw.

So no request, however malformed, can make an event the writer cannot encode.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

MAX_TEXT = 255  # Keycloak's own limit for usernames, client ids and names
MAX_DETAIL_TEXT = 1024
MAX_ITEMS = 256
MAX_DEPTH = 6
MAX_DETAILS_BYTES = 48 * 1024
MAX_SAFE_INT = 2**53 - 1
_KEY = re.compile(r"[A-Za-z0-9_.:@-]{1,64}")
_MAX_FLAGS = 16


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
    # Named admin changes (issue 9): security-relevant configuration, bulk imports, DCR.
    CLIENT_UPDATED = "client.updated"
    GROUP_CREATED = "group.created"
    GROUP_UPDATED = "group.updated"
    GROUP_DELETED = "group.deleted"
    ROLE_CREATED = "role.created"
    ROLE_UPDATED = "role.updated"
    ROLE_DELETED = "role.deleted"
    REALM_EVENTS_CHANGED = "realm.events.changed"
    REALM_EVENTS_CLEARED = "realm.events.cleared"
    REALM_BRUTE_FORCE_CHANGED = "realm.brute_force.changed"
    REALM_PASSWORD_POLICY_CHANGED = "realm.password_policy.changed"
    REALM_OTP_POLICY_CHANGED = "realm.otp_policy.changed"
    REALM_FLOW_BINDING_CHANGED = "realm.flow_binding.changed"
    AUTH_FLOW_CHANGED = "auth.flow.changed"
    AUTH_EXECUTION_CHANGED = "auth.execution.changed"
    REQUIRED_ACTION_CHANGED = "required_action.changed"
    IDENTITY_PROVIDER_CREATED = "identity_provider.created"
    IDENTITY_PROVIDER_UPDATED = "identity_provider.updated"
    IDENTITY_PROVIDER_DELETED = "identity_provider.deleted"
    IDENTITY_PROVIDER_MAPPER_CREATED = "identity_provider.mapper.created"
    IDENTITY_PROVIDER_MAPPER_UPDATED = "identity_provider.mapper.updated"
    IDENTITY_PROVIDER_MAPPER_DELETED = "identity_provider.mapper.deleted"
    CLIENT_SCOPE_CREATED = "client_scope.created"
    CLIENT_SCOPE_UPDATED = "client_scope.updated"
    CLIENT_SCOPE_DELETED = "client_scope.deleted"
    CLIENT_SCOPE_ASSIGNED = "client_scope.assigned"
    CLIENT_SCOPE_UNASSIGNED = "client_scope.unassigned"
    PROTOCOL_MAPPER_CREATED = "protocol_mapper.created"
    PROTOCOL_MAPPER_UPDATED = "protocol_mapper.updated"
    PROTOCOL_MAPPER_DELETED = "protocol_mapper.deleted"
    SCOPE_MAPPING_CHANGED = "scope_mapping.changed"
    ADMIN_PERMISSIONS_CHANGED = "admin_permissions.changed"
    AUDIT_READ = "audit.read"
    LEDGER_STARTED = "ledger.started"
    LEDGER_RECOVERED = "ledger.recovered"
    KEY_ROTATED = "key.rotated"
    DRIFT_DETECTED = "drift.detected"
    STATE_SNAPSHOT = "state.snapshot"
    ALARM_RAISED = "alarm.raised"
    SUBJECT_ERASED = "subject.erased"


class _Bounds:
    """Collects the paths a boundary cut or dropped."""

    __slots__ = ("paths",)

    def __init__(self) -> None:
        self.paths: list[str] = []

    def flag(self, path: str) -> None:
        if len(self.paths) < _MAX_FLAGS and path not in self.paths:
            self.paths.append(path)


def _text(value: object, limit: int, path: str, bounds: _Bounds) -> str | None:
    if type(value) is str and len(value) <= limit and value.isascii():
        return value  # the common case, unchanged by every step below (hot: ~20 calls per event)
    if value is None:
        return None
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif isinstance(value, int | float):
        value = repr(value) if isinstance(value, float) else str(value)
    if not isinstance(value, str):
        bounds.flag(path)
        return None
    if len(value) > limit:
        bounds.flag(path)
        value = value[:limit]
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (JSON allows "\ud800"; UTF-8 cannot hold it)
        value = "".join("\ufffd" if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in value)
    return value


def clean_text(value: object, limit: int = MAX_TEXT) -> str | None:
    """A bounded string for an identity field, or None (see the module docstring)."""
    return _text(value, limit, "", _Bounds())


def _json(value: object, path: str, depth: int, bounds: _Bounds) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -MAX_SAFE_INT <= value <= MAX_SAFE_INT else str(value)
    if isinstance(value, float | str):
        return _text(value, MAX_DETAIL_TEXT, path, bounds)
    if depth >= MAX_DEPTH or not isinstance(value, dict | list | tuple):
        bounds.flag(path)
        return None
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str) or not _KEY.fullmatch(key):
                bounds.flag(f"{path}.?")
                continue
            if len(out) >= MAX_ITEMS:
                bounds.flag(f"{path}.*")
                break
            out[key] = _json(item, f"{path}.{key}", depth + 1, bounds)
        return out
    items = list(value[:MAX_ITEMS])
    if len(value) > MAX_ITEMS:
        bounds.flag(f"{path}[*]")
    return [_json(item, f"{path}[{i}]", depth + 1, bounds) for i, item in enumerate(items)]


def _size(value: Any) -> int:
    import orjson  # the canonical encoder's own library: its size is the record's size

    return len(orjson.dumps(value))


def clean_details(details: object, bounds: _Bounds | None = None) -> dict[str, Any]:
    """Details as JSON the canonical encoder accepts, bounded in size (see the module docstring)."""
    bounds = bounds if bounds is not None else _Bounds()
    if not isinstance(details, dict):
        if details is not None:
            bounds.flag("details")
        return {}
    previous = details.get("bounded")
    out = _json({k: v for k, v in details.items() if k != "bounded"}, "details", 0, bounds)
    assert isinstance(out, dict)
    if _size(out) > MAX_DETAILS_BYTES:
        # Too big as a whole: keep the scalars, drop the containers (before/after states, long lists).
        for key in [k for k, v in out.items() if isinstance(v, dict | list)]:
            del out[key]
            bounds.flag(f"details.{key}")
        while _size(out) > MAX_DETAILS_BYTES and out:
            key = max(out, key=lambda k: len(str(out[k])))
            del out[key]
            bounds.flag(f"details.{key}")
    flags = [p for p in (previous if isinstance(previous, list) else []) if isinstance(p, str)][:_MAX_FLAGS]
    for p in bounds.paths:
        if p not in flags and len(flags) < _MAX_FLAGS:
            flags.append(p)
    if flags:
        out["bounded"] = [p[:128] for p in flags]
    return out


class Outcome(enum.StrEnum):
    """How the action ended. `pending` marks an intent written before forwarding; `unchanged` a success
    that changed nothing (a no-op membership change, an object a bulk import skipped)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PENDING = "pending"
    UNKNOWN = "unknown"
    UNCHANGED = "unchanged"  # Keycloak answered success but nothing changed (state before == after)


@dataclass(frozen=True, slots=True)
class Party:
    """Who acted or was acted upon: a user, a client, or both."""

    id: str | None = None
    username: str | None = None
    client: str | None = None
    kind: str | None = None  # "user", "client", "group", "role", "session", "credential", ...
    name: str | None = None

    def to_json(self) -> dict[str, str]:
        return {
            k: v
            for k, v in (
                ("id", self.id),
                ("username", self.username),
                ("client", self.client),
                ("kind", self.kind),
                ("name", self.name),
            )
            if v is not None
        }


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

    def __post_init__(self) -> None:
        # SECURITY: the typed boundary (module docstring): whatever the caller passed in, what this
        # event holds is bounded and canonically encodable, so hostile input cannot break the writer.
        bounds = _Bounds()
        for name in ("realm", "client", "source_ip", "session", "request_id", "error"):
            object.__setattr__(self, name, _text(getattr(self, name), MAX_TEXT, name, bounds))
        for name in ("actor", "target"):
            party = getattr(self, name)
            if party is not None and not isinstance(party, Party):
                bounds.flag(name)
                party = None
            if party is not None:
                party = Party(*(_text(getattr(party, f), MAX_TEXT, f"{name}.{f}", bounds) for f in Party.__slots__))
            object.__setattr__(self, name, party)
        object.__setattr__(self, "details", clean_details(self.details, bounds))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type.value, "outcome": self.outcome.value}
        for key, value in (
            ("realm", self.realm),
            ("client", self.client),
            ("ip", self.source_ip),
            ("session", self.session),
            ("request_id", self.request_id),
            ("error", self.error),
        ):
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

# What records an event: `sidecar serve`'s appender (sidecar/app.py, over `Ledger.append`). Capture, the
# auditor endpoint and the drift monitor take one of these and pass it events only,
# already through the typed boundary above (redaction returns an IdentityEvent too). What it returns
# (the ledger's receipt) is the caller's to use or ignore.
Appender = Callable[[IdentityEvent], Awaitable[Any]]
