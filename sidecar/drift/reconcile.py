"""Keycloak's own event stores against the ledger: every event must have its record. [pure]

Keycloak stores user events (logins, token grants, credential changes) and admin events
(every admin REST mutation). Each kind maps to the ledger types that record it; a match
needs the same kind, the same actor, the same target (admin events: the resource path or
the target id in it) and the same outcome, and each record matches one event only.
`match()` returns the pairs per kind, the Keycloak events with no record (for the drift
monitor: a change made around the sidecar) and the ledger successes Keycloak never saw
(for tests: a record claiming what did not happen). tests/oracle.py uses this same code.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sidecar.core.pii import is_encrypted

RecordId = int | tuple[str, int]

# Keycloak user event type -> (ledger types that may record it, outcome)
USER_EVENTS: dict[str, tuple[tuple[str, ...], str]] = {
    "LOGIN": (("login.succeeded",), "succeeded"),
    "LOGIN_ERROR": (("login.failed", "mfa.otp.failed"), "failed"),
    "CUSTOM_REQUIRED_ACTION_ERROR": (("login.failed",), "failed"),  # e.g. cookie_not_found on a required action
    "CLIENT_LOGIN": (("token.issued",), "succeeded"),
    "CLIENT_LOGIN_ERROR": (("token.failed",), "failed"),
    "CODE_TO_TOKEN": (("token.issued",), "succeeded"),
    "CODE_TO_TOKEN_ERROR": (("token.failed",), "failed"),
    "REFRESH_TOKEN": (("token.refreshed",), "succeeded"),
    "LOGOUT": (("logout.completed",), "succeeded"),
    "UPDATE_CREDENTIAL": (("credential.enrolled", "password.changed"), "succeeded"),
    "REMOVE_CREDENTIAL": (("credential.removed",), "succeeded"),
    "IMPERSONATE": (("user.impersonated",), "succeeded"),
    "TOKEN_EXCHANGE": (("token.exchanged",), "succeeded"),
    "REVOKE_GRANT": (("token.revoked",), "succeeded"),
    "UPDATE_PASSWORD": (("password.changed",), "succeeded"),
    # Dynamic Client Registration: user events naming the client (clientId), not admin events
    "CLIENT_REGISTER": (("client.created",), "succeeded"),
    "CLIENT_UPDATE": (("client.updated",), "succeeded"),
    "CLIENT_DELETE": (("client.deleted",), "succeeded"),
}
_DCR = frozenset({"CLIENT_REGISTER", "CLIENT_UPDATE", "CLIENT_DELETE"})
# Keycloak admin event (operation, resource type) -> ledger types
ADMIN_EVENTS: dict[tuple[str, str], tuple[str, ...]] = {
    ("CREATE", "REALM_ROLE_MAPPING"): ("role.granted",),
    ("DELETE", "REALM_ROLE_MAPPING"): ("role.revoked",),
    ("CREATE", "CLIENT_ROLE_MAPPING"): ("role.granted",),
    ("DELETE", "CLIENT_ROLE_MAPPING"): ("role.revoked",),
    ("CREATE", "GROUP_MEMBERSHIP"): ("group.joined",),
    ("DELETE", "GROUP_MEMBERSHIP"): ("group.left",),
    ("CREATE", "USER"): ("user.created",),
    ("UPDATE", "USER"): ("user.updated", "user.disabled", "user.enabled"),
    ("DELETE", "USER"): ("user.deleted",),
    ("ACTION", "USER"): ("password.reset", "credential.removed", "session.revoked", "admin.change"),
    ("CREATE", "CLIENT"): ("client.created",),
    ("DELETE", "CLIENT"): ("client.deleted",),
    ("ACTION", "CLIENT"): ("client.secret.rotated", "admin.change"),
    ("DELETE", "USER_SESSION"): ("session.revoked",),
    ("CREATE", "REALM_ROLE"): ("role.composite.changed", "role.created", "admin.change"),
    ("DELETE", "REALM_ROLE"): ("role.composite.changed", "role.deleted", "admin.change"),
    ("UPDATE", "REALM_ROLE"): ("role.updated",),
    ("CREATE", "CLIENT_ROLE"): ("role.composite.changed", "role.created"),
    ("DELETE", "CLIENT_ROLE"): ("role.composite.changed", "role.deleted"),
    ("UPDATE", "CLIENT_ROLE"): ("role.updated",),
    ("UPDATE", "CLIENT"): ("client.updated",),
    ("CREATE", "GROUP"): ("group.created",),
    ("UPDATE", "GROUP"): ("group.updated",),
    ("DELETE", "GROUP"): ("group.deleted",),
    # partialImport: one CREATE / UPDATE REALM per object, resourcePath users/{id}, clients/{id}, groups/{id}, ...
    ("CREATE", "REALM"): (
        "user.created",
        "client.created",
        "group.created",
        "role.created",
        "identity_provider.created",
    ),
    ("UPDATE", "REALM"): (
        "admin.change",
        "realm.events.changed",
        "realm.brute_force.changed",
        "realm.password_policy.changed",
        "realm.otp_policy.changed",
        "realm.flow_binding.changed",
        "admin_permissions.changed",
        "user.updated",
        "client.updated",
        "group.updated",
        "role.updated",
        "role.created",
        "identity_provider.updated",
    ),
}
# Other resource types, whatever the operation (docs/capture.md §9)
ADMIN_RESOURCES: dict[str, tuple[str, ...]] = {
    "AUTH_FLOW": ("auth.flow.changed",),
    "AUTH_EXECUTION": ("auth.execution.changed",),
    "AUTH_EXECUTION_FLOW": ("auth.execution.changed",),
    "AUTHENTICATOR_CONFIG": ("auth.execution.changed",),
    "REQUIRED_ACTION": ("required_action.changed",),
    "IDENTITY_PROVIDER": ("identity_provider.created", "identity_provider.updated", "identity_provider.deleted"),
    "IDENTITY_PROVIDER_MAPPER": (
        "identity_provider.mapper.created",
        "identity_provider.mapper.updated",
        "identity_provider.mapper.deleted",
    ),
    "CLIENT_SCOPE": ("client_scope.created", "client_scope.updated", "client_scope.deleted"),
    "CLIENT_SCOPE_CLIENT_MAPPING": ("client_scope.assigned", "client_scope.unassigned"),
    "CLIENT_SCOPE_MAPPING": ("client_scope.assigned", "client_scope.unassigned", "scope_mapping.changed"),
    "REALM_SCOPE_MAPPING": ("scope_mapping.changed",),
    "PROTOCOL_MAPPER": ("protocol_mapper.created", "protocol_mapper.updated", "protocol_mapper.deleted"),
}
# Admin events of other resource types are still changes: any admin record with their path matches.
ANY_ADMIN = ("admin.change",)

# Ledger kinds whose Keycloak counterpart Keycloak stores by default: a success of one of these
# kinds with no Keycloak event is a record claiming something Keycloak did not see.
# (REFRESH_TOKEN is not stored by default, admin.change covers paths without a fixed resource type.)
ORACLE_VISIBLE = frozenset(
    {
        "login.succeeded",
        "token.issued",
        "logout.completed",
        "role.granted",
        "role.revoked",
        "group.joined",
        "group.left",
        "user.created",
        "user.deleted",
        "client.created",
        "client.deleted",
        "client.secret.rotated",
        "password.reset",
        "client.updated",
        "group.created",
        "group.deleted",
        "role.created",
        "role.deleted",
        "identity_provider.created",
        "identity_provider.updated",
        "identity_provider.deleted",
        "client_scope.created",
        "client_scope.deleted",
        "protocol_mapper.created",
        "protocol_mapper.deleted",
    }
)


_OPERATION_ENDINGS = {
    "CREATE": (".created", ".assigned", ".changed"),
    "UPDATE": (".updated", ".changed"),
    "DELETE": (".deleted", ".unassigned", ".changed"),
}


def _by_operation(kinds: tuple[str, ...], operation: str) -> tuple[str, ...]:
    """The kinds of a resource type that fit the operation (CREATE IDENTITY_PROVIDER: `*.created`)."""
    endings = _OPERATION_ENDINGS.get(operation)
    return tuple(k for k in kinds if endings is None or k.endswith(endings)) or kinds


@dataclass
class Match:
    table: Counter[str] = field(default_factory=Counter)  # "KC_TYPE -> ledger.type": count
    unmatched: list[dict[str, Any]] = field(default_factory=list)  # Keycloak events with no record
    phantom: list[dict[str, Any]] = field(default_factory=list)  # ledger successes Keycloak did not see
    used: set[RecordId] = field(default_factory=set)  # `record_id`s of the records that matched an event

    def render(self) -> str:
        lines = [f"  {k:55s} {v:4d}" for k, v in sorted(self.table.items())]
        lines += [f"  UNMATCHED {event_label(e)}" for e in self.unmatched]
        lines += [f"  PHANTOM {r['event']['type']}" for r in self.phantom]
        return "\n".join(lines)


def event_label(ev: dict[str, Any]) -> str:
    if "operationType" in ev:
        return f"{ev.get('operationType')} {ev.get('resourceType')} {ev.get('resourcePath', '')}".strip()
    return str(ev.get("type"))


def event_summary(ev: dict[str, Any]) -> dict[str, Any]:
    """The parts of a Keycloak event a drift record may carry: never a representation (it can hold secrets)."""
    if "operationType" in ev:
        auth = ev.get("authDetails") or {}
        out = {
            "store": "admin-events",
            "id": ev.get("id"),
            "time": ev.get("time"),
            "operation": ev.get("operationType"),
            "resource_type": ev.get("resourceType"),
            "resource_path": ev.get("resourcePath"),
            "actor_id": auth.get("userId"),
            "actor_client": auth.get("clientId"),
            "ip": auth.get("ipAddress"),
            "error": ev.get("error"),
        }
    else:
        details = ev.get("details") or {}
        out = {
            "store": "events",
            "id": ev.get("id"),
            "time": ev.get("time"),
            "type": ev.get("type"),
            # SECURITY: a name Keycloak matched to no user may be a password typed in the wrong field.
            "user_id": ev.get("userId"),
            "username": details.get("username") if ev.get("userId") else None,
            "client": ev.get("clientId"),
            "session": ev.get("sessionId"),
            "ip": ev.get("ipAddress"),
            "error": ev.get("error"),
        }
    return {k: v for k, v in out.items() if v is not None}


def record_id(rec: dict[str, Any]) -> RecordId:
    """A record's identity in a pool: its seq, or (origin, seq) for another origin's record (sidecar.drift.peers)."""
    origin = rec.get("_origin")
    return (origin, int(rec["seq"])) if isinstance(origin, str) else int(rec["seq"])


def _actor_ok(kc_user: str | None, kc_username: str | None, rec: dict[str, Any], kc_session: str | None = None) -> bool:
    actor = rec["event"].get("actor") or {}
    if kc_user and actor.get("id") == kc_user:
        return True
    if kc_username and not actor.get("id") and is_encrypted(actor.get("username")):
        # Another origin's record (or an erased subject's) names the user only under a key this reader does
        # not hold, so the name cannot be compared: the Keycloak session decides where both name one; else
        # only an event that names no user id either pairs, by the record's kind, client and outcome
        # (docs/operations.md §10.5).
        session = rec["event"].get("session")
        if session and kc_session:
            return bool(session == kc_session)
        return not kc_user
    return bool(kc_username) and actor.get("username") == kc_username


def _pair(
    ev: dict[str, Any], pool: list[dict[str, Any]], used: set[RecordId], twins: set[RecordId]
) -> dict[str, Any] | None:
    """The first record of pool that records user event ev (marked used), or None."""
    kinds, outcome = USER_EVENTS[ev["type"]]
    username = (ev.get("details") or {}).get("username")
    # Keycloak 26 records one password change twice: UPDATE_PASSWORD (deprecated) and UPDATE_CREDENTIAL
    # (credential_type=password). Both name the one password.changed record.
    taken = twins if ev["type"] == "UPDATE_PASSWORD" else used
    # A record whose outcome the sidecar could not observe (`unknown`) is this event's record only when
    # none with the event's own outcome is: it claims nothing, but it is the request Keycloak recorded.
    ranked = [r for r in pool if r["event"]["outcome"] == outcome] + [
        r for r in pool if r["event"]["outcome"] == "unknown"
    ]
    for rec in ranked:
        e = rec["event"]
        if record_id(rec) in taken or e["type"] not in kinds:
            continue
        client_ok = e.get("client") in (None, ev.get("clientId"))
        if ev["type"] in ("CLIENT_LOGIN", "CLIENT_LOGIN_ERROR"):
            ok = e.get("client") == ev.get("clientId")
        elif ev["type"] in _DCR:  # Keycloak names the registered client and no user
            ok = client_ok = (e.get("target") or {}).get("client") == ev.get("clientId")
        elif ev["type"] == "IMPERSONATE":  # Keycloak puts the impersonated user in userId
            ok = (e.get("target") or {}).get("id") == ev.get("userId")
        elif not ev.get("userId") and not username:  # an error page or redirect before any user is known
            # the redirect's error parameter may differ from the event's code (unauthorized_client / not_allowed)
            ok = e.get("client") == ev.get("clientId") and (
                e.get("error") == ev.get("error") or (e.get("details") or {}).get("via") == "error-redirect"
            )
        else:
            ok = _actor_ok(ev.get("userId"), username, rec, ev.get("sessionId"))
        if ok and client_ok:
            taken.add(record_id(rec))
            return rec
    return None


def match(
    user_events: Iterable[dict[str, Any]],
    admin_events: Iterable[dict[str, Any]],
    records: Iterable[dict[str, Any]],
    realm: str,
    since_ns: int,
    *,
    used: set[RecordId] | None = None,
    any_admin: bool = False,
) -> Match:
    """Pair every Keycloak event with one ledger record (each record used once).

    `used` carries the `record_id`s already matched by earlier calls (an incremental reconciler);
    `any_admin` also requires a record for admin events of resource types not in ADMIN_EVENTS.
    """
    result = Match(used=used if used is not None else set())
    used_seqs = result.used
    pool = [
        r
        for r in records
        if int(r["ts"]) >= since_ns
        and r["event"].get("realm") == realm
        and (r["event"].get("details") or {}).get("phase") != "intent"
    ]
    twins: set[RecordId] = set()  # records already matched by the UPDATE_PASSWORD twin of an UPDATE_CREDENTIAL
    events = [ev for ev in sorted(user_events, key=lambda e: e["time"]) if ev.get("type") in USER_EVENTS]
    # First the pairs one Keycloak session names (the event's sessionId is the record's session): an event
    # whose record is missing (its node was killed before writing it) must not take the record of a later
    # event of the same user and client, which would then be the one reported unmatched.
    by_session: dict[int, dict[str, Any]] = {}
    for i, ev in enumerate(events):
        if sid := ev.get("sessionId"):
            rec = _pair(ev, [r for r in pool if r["event"].get("session") == sid], used_seqs, twins)
            if rec is not None:
                by_session[i] = rec
    for i, ev in enumerate(events):
        rec = by_session[i] if i in by_session else _pair(ev, pool, used_seqs, twins)
        if rec is None:
            result.unmatched.append(ev)
        else:
            result.table[f"{ev['type']} -> {rec['event']['type']}"] += 1
    for ev in sorted(admin_events, key=lambda e: e["time"]):
        key = (ev.get("operationType"), ev.get("resourceType"))
        if key in ADMIN_EVENTS:
            kinds = ADMIN_EVENTS[key]
        elif ev.get("resourceType") in ADMIN_RESOURCES:
            kinds = _by_operation(ADMIN_RESOURCES[str(ev.get("resourceType"))], str(ev.get("operationType")))
        elif any_admin:
            kinds = ANY_ADMIN + tuple(t for ts in (*ADMIN_EVENTS.values(), *ADMIN_RESOURCES.values()) for t in ts)
        else:
            continue
        kc_actor = (ev.get("authDetails") or {}).get("userId")
        path = ev.get("resourcePath", "")
        segments = set(path.split("/"))
        # Ranked candidates: (a success, the same resource path) first. A success whose state did not change
        # is still one Keycloak may have recorded (an unchanged realm PUT), but only when no success fits: a
        # no-op membership has no Keycloak event, and must not take the event of a later real change.
        candidates: list[tuple[int, dict[str, Any]]] = []
        for rec in pool:
            e = rec["event"]
            if (
                record_id(rec) in used_seqs
                or e["type"] not in kinds
                or e["outcome"] not in ("succeeded", "unchanged", "unknown")
            ):
                continue
            if (e.get("actor") or {}).get("id") != kc_actor:
                continue
            d = e.get("details") or {}
            rec_path = d.get("resource_path") or d.get("path", "")
            target = e.get("target") or {}
            ids = {v for v in (target.get("id"), target.get("name"), d.get("created_id")) if isinstance(v, str) and v}
            rank = {"succeeded": 0, "unchanged": 2}.get(e["outcome"], 4) + (0 if rec_path == path else 1)
            if rank == 0:  # a success at the same resource path: the best match, take it at once
                candidates.insert(0, (rank, rec))
                break
            if rec_path == path or ids & segments:
                candidates.append((rank, rec))
        if candidates:
            rec = min(candidates, key=lambda c: c[0])[1]  # min keeps the earliest of equal rank
            used_seqs.add(record_id(rec))
            result.table[f"{key[0]} {key[1]} -> {rec['event']['type']}"] += 1
        else:
            result.unmatched.append(ev)
    for rec in pool:
        e = rec["event"]
        if record_id(rec) not in used_seqs and e["outcome"] == "succeeded" and e["type"] in ORACLE_VISIBLE:
            result.phantom.append(rec)
    return result
