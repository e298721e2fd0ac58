"""Ledger records as OCSF 1.4.0 events (docs/export.md has the mapping field by field). [pure]

Every event type maps to one class and activity of the Identity & Access Management
category: Authentication (3002), Account Change (3001), User Access Management (3005),
Group Management (3006) and Entity Management (3004, also for the ledger's own events).
An intent and its outcome export as one event (`sidecar.export.pairs`): `time` is the
outcome's, `start_time` the intent's. Absent values are left out, never written as null.
The output is checked against the official OCSF 1.4.0 JSON schema in the tests
(tests/export/test_ocsf_schema.py) for every event type the product emits.
"""

from __future__ import annotations

from typing import Any

from sidecar.audit.timeline import describe
from sidecar.export.pairs import Paired

OCSF_VERSION = "1.4.0"
PRODUCT = {"name": "keycloak-ledger-sidecar", "vendor_name": "keycloak-ledger-sidecar project"}

AUTHENTICATION, ACCOUNT_CHANGE, USER_ACCESS, GROUP_MANAGEMENT, ENTITY_MANAGEMENT = 3002, 3001, 3005, 3006, 3004
CLASS_NAMES = {
    AUTHENTICATION: "Authentication",
    ACCOUNT_CHANGE: "Account Change",
    USER_ACCESS: "User Access Management",
    GROUP_MANAGEMENT: "Group Management",
    ENTITY_MANAGEMENT: "Entity Management",
}
ACTIVITIES: dict[int, dict[int, str]] = {
    AUTHENTICATION: {
        1: "Logon",
        2: "Logoff",
        3: "Authentication Ticket",
        4: "Service Ticket Request",
        5: "Service Ticket Renew",
        99: "Other",
    },
    ACCOUNT_CHANGE: {
        1: "Create",
        2: "Enable",
        3: "Password Change",
        4: "Password Reset",
        5: "Disable",
        6: "Delete",
        10: "MFA Factor Enable",
        11: "MFA Factor Disable",
        99: "Other",
    },
    USER_ACCESS: {1: "Assign Privileges", 2: "Revoke Privileges", 99: "Other"},
    GROUP_MANAGEMENT: {
        1: "Assign Privileges",
        2: "Revoke Privileges",
        3: "Add User",
        4: "Remove User",
        5: "Delete",
        6: "Create",
        99: "Other",
    },
    ENTITY_MANAGEMENT: {1: "Create", 2: "Read", 3: "Update", 4: "Delete", 10: "Activate", 13: "Resume", 99: "Other"},
}

# ledger type -> (class, activity). role.granted/role.revoked on a group go to Group Management.
MAPPING: dict[str, tuple[int, int]] = {
    "login.succeeded": (AUTHENTICATION, 1),
    "login.failed": (AUTHENTICATION, 1),
    "mfa.otp.verified": (AUTHENTICATION, 1),
    "mfa.otp.failed": (AUTHENTICATION, 1),
    "user.impersonated": (AUTHENTICATION, 1),
    "token.issued": (AUTHENTICATION, 4),
    "token.failed": (AUTHENTICATION, 4),
    "token.exchanged": (AUTHENTICATION, 4),
    "token.refreshed": (AUTHENTICATION, 5),
    "token.revoked": (AUTHENTICATION, 2),
    "logout.completed": (AUTHENTICATION, 2),
    "session.revoked": (AUTHENTICATION, 2),
    "credential.enrolled": (ACCOUNT_CHANGE, 10),
    "credential.removed": (ACCOUNT_CHANGE, 11),
    "password.changed": (ACCOUNT_CHANGE, 3),
    "password.reset": (ACCOUNT_CHANGE, 4),
    "user.created": (ACCOUNT_CHANGE, 1),
    "user.enabled": (ACCOUNT_CHANGE, 2),
    "user.disabled": (ACCOUNT_CHANGE, 5),
    "user.deleted": (ACCOUNT_CHANGE, 6),
    "user.updated": (ACCOUNT_CHANGE, 99),
    "role.granted": (USER_ACCESS, 1),
    "role.revoked": (USER_ACCESS, 2),
    "group.joined": (GROUP_MANAGEMENT, 3),
    "group.left": (GROUP_MANAGEMENT, 4),
    "organization.joined": (GROUP_MANAGEMENT, 3),
    "organization.left": (GROUP_MANAGEMENT, 4),
    "role.composite.changed": (ENTITY_MANAGEMENT, 3),
    "client.created": (ENTITY_MANAGEMENT, 1),
    "client.deleted": (ENTITY_MANAGEMENT, 4),
    "client.secret.rotated": (ENTITY_MANAGEMENT, 3),
    "audit.read": (ENTITY_MANAGEMENT, 2),
    "ledger.started": (ENTITY_MANAGEMENT, 10),
    "ledger.recovered": (ENTITY_MANAGEMENT, 13),
    "key.rotated": (ENTITY_MANAGEMENT, 3),
    "drift.detected": (ENTITY_MANAGEMENT, 99),
    "state.snapshot": (ENTITY_MANAGEMENT, 2),
    "alarm.raised": (ENTITY_MANAGEMENT, 99),
    # Named configuration changes (docs/capture.md): groups are Group Management, the rest entities.
    "group.created": (GROUP_MANAGEMENT, 6),
    "group.deleted": (GROUP_MANAGEMENT, 5),
    "group.updated": (GROUP_MANAGEMENT, 99),
    "client.updated": (ENTITY_MANAGEMENT, 3),
    "role.created": (ENTITY_MANAGEMENT, 1),
    "role.updated": (ENTITY_MANAGEMENT, 3),
    "role.deleted": (ENTITY_MANAGEMENT, 4),
    "realm.events.changed": (ENTITY_MANAGEMENT, 3),
    "realm.events.cleared": (ENTITY_MANAGEMENT, 4),
    "realm.brute_force.changed": (ENTITY_MANAGEMENT, 3),
    "realm.password_policy.changed": (ENTITY_MANAGEMENT, 3),
    "realm.otp_policy.changed": (ENTITY_MANAGEMENT, 3),
    "realm.flow_binding.changed": (ENTITY_MANAGEMENT, 3),
    "auth.flow.changed": (ENTITY_MANAGEMENT, 3),
    "auth.execution.changed": (ENTITY_MANAGEMENT, 3),
    "required_action.changed": (ENTITY_MANAGEMENT, 3),
    "identity_provider.created": (ENTITY_MANAGEMENT, 1),
    "identity_provider.updated": (ENTITY_MANAGEMENT, 3),
    "identity_provider.deleted": (ENTITY_MANAGEMENT, 4),
    "identity_provider.mapper.created": (ENTITY_MANAGEMENT, 1),
    "identity_provider.mapper.updated": (ENTITY_MANAGEMENT, 3),
    "identity_provider.mapper.deleted": (ENTITY_MANAGEMENT, 4),
    "client_scope.created": (ENTITY_MANAGEMENT, 1),
    "client_scope.updated": (ENTITY_MANAGEMENT, 3),
    "client_scope.deleted": (ENTITY_MANAGEMENT, 4),
    "client_scope.assigned": (ENTITY_MANAGEMENT, 3),
    "client_scope.unassigned": (ENTITY_MANAGEMENT, 3),
    "protocol_mapper.created": (ENTITY_MANAGEMENT, 1),
    "protocol_mapper.updated": (ENTITY_MANAGEMENT, 3),
    "protocol_mapper.deleted": (ENTITY_MANAGEMENT, 4),
    "scope_mapping.changed": (ENTITY_MANAGEMENT, 3),
    "admin_permissions.changed": (ENTITY_MANAGEMENT, 3),
}
_ALERTS = frozenset({"drift.detected", "alarm.raised"})
_ADMIN_METHODS = {"POST": 1, "PUT": 3, "PATCH": 3, "DELETE": 4}
# `unchanged` (Keycloak answered success, nothing changed) is a Success whose status_detail says so.
_STATUS = {"succeeded": (1, "Success"), "unchanged": (1, "Success"), "failed": (2, "Failure")}
_MFA_FACTORS = {
    "otp": (7, "OTP"),
    "totp": (7, "OTP"),
    "webauthn": (10, "WebAuthn"),
    "webauthn-passwordless": (10, "WebAuthn"),
    "password": (11, "Password"),
}


def strip_nulls(value: Any) -> Any:
    """The value without null members or items, recursively (OCSF: absent, never null)."""
    if isinstance(value, dict):
        return {k: strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [strip_nulls(v) for v in value if v is not None]
    return value


def classify(event: dict[str, Any]) -> tuple[int, int]:
    etype = event["type"]
    target = event.get("target") or {}
    if etype in ("role.granted", "role.revoked") and target.get("kind") == "group":
        return GROUP_MANAGEMENT, 1 if etype == "role.granted" else 2
    if etype == "admin.change":
        method = str((event.get("details") or {}).get("method", "")).upper()
        return ENTITY_MANAGEMENT, _ADMIN_METHODS.get(method, 99)
    if etype in MAPPING:
        return MAPPING[etype]
    # Named configuration changes (group.created, role.deleted, realm.password_policy.changed, ...):
    # by their last word; groups are Group Management, everything else an entity.
    verb = etype.rsplit(".", 1)[-1]
    if etype.startswith("group."):
        return GROUP_MANAGEMENT, {"created": 6, "deleted": 5}.get(verb, 99)
    return ENTITY_MANAGEMENT, {"created": 1, "updated": 3, "changed": 3, "deleted": 4, "cleared": 4}.get(verb, 99)


def _user(party: dict[str, Any], *, fallback_client: str | None = None) -> dict[str, Any] | None:
    uid, name = party.get("id"), party.get("username")
    if party.get("kind") not in (None, "user") and not name:
        uid = name = None
    if uid or name:
        return {"uid": uid, "name": name, "type_id": 1, "type": "User"}
    client = party.get("client") or fallback_client
    if client:  # a client acting for itself (client credentials): its service account
        return {"name": client, "type_id": 99, "type": "Service Account"}
    return None


def _privileges(event: dict[str, Any]) -> list[str]:
    d = event.get("details") or {}
    roles = d.get("roles")
    if isinstance(roles, list) and roles:
        return [str(r) for r in roles]
    for key in ("role", "roles_changed"):
        if isinstance(d.get(key), str):
            return [d[key]]
    return ["(not recorded)"]


def _entity(event: dict[str, Any]) -> dict[str, Any]:
    etype = event["type"]
    target = event.get("target") or {}
    d = event.get("details") or {}
    name = target.get("name") or target.get("client") or target.get("username")
    uid = target.get("id")
    kind = target.get("kind")
    if etype.startswith("client."):
        kind = "client"
        name = name or event.get("client")
    elif etype == "role.composite.changed":
        kind = "role"
    elif etype == "key.rotated":
        key: dict[str, Any] = d["key"] if isinstance(d.get("key"), dict) else {}
        kind, name, uid = "signing key", key.get("name"), key.get("key_id")
    elif etype in ("ledger.started", "ledger.recovered", "audit.read", "state.snapshot"):
        kind, name = "ledger", name or "ledger"
    elif etype == "drift.detected":
        kind = kind or "keycloak object"
        name = name or d.get("target")
    elif etype == "admin.change":
        name = name or d.get("path")
    elif etype.startswith("realm."):
        kind, name = "realm", name or event.get("realm")
    if not (name or uid):
        name = str(d.get("path") or etype)
    type_ids = {"user": 2, "group": 3, "organization": 4}
    return {"uid": uid, "name": name, "type": kind or "Other", "type_id": type_ids.get(str(kind), 99)}


def to_ocsf(item: Paired | dict[str, Any], origin: str, *, verified: bool = True) -> dict[str, Any]:
    """One OCSF event for a record (or an intent/outcome pair)."""
    paired = item if isinstance(item, Paired) else Paired(item)
    rec, intent = paired.record, paired.intent
    e = rec["event"]
    class_uid, activity_id = classify(e)
    actor, target = e.get("actor") or {}, e.get("target") or {}
    details = e.get("details") or {}
    status_id, status = _STATUS.get(e["outcome"], (0, "Unknown"))
    failed = e["outcome"] == "failed"
    labels = [e["type"]] + ([] if verified else ["unverified"])
    if intent is not None:
        labels.append("intent+outcome")
    out: dict[str, Any] = {
        "class_uid": class_uid,
        "class_name": CLASS_NAMES[class_uid],
        "category_uid": 3,
        "category_name": "Identity & Access Management",
        "activity_id": activity_id,
        "activity_name": ACTIVITIES[class_uid][activity_id],
        "type_uid": class_uid * 100 + activity_id,
        "type_name": f"{CLASS_NAMES[class_uid]}: {ACTIVITIES[class_uid][activity_id]}",
        "time": int(rec["ts"]) // 1_000_000,
        "status_id": status_id,
        "status": status,
        "severity_id": 4 if e["type"] in _ALERTS else (2 if failed else 1),
        "severity": "High" if e["type"] in _ALERTS else ("Low" if failed else "Informational"),
        "message": describe(rec),
        "metadata": {
            "version": OCSF_VERSION,
            "product": PRODUCT,
            "uid": f"{origin}/{rec['seq']}",
            "sequence": int(rec["seq"]),
            "original_time": str(rec["ts"]),
            "log_name": origin,
            "log_provider": "keycloak-ledger-sidecar",
            "labels": labels,
            "correlation_uid": e.get("request_id"),
        },
        "src_endpoint": {"ip": e["ip"]} if e.get("ip") else None,
        "status_detail": e.get("error") or ("unchanged" if e["outcome"] == "unchanged" else None),
        "status_code": e.get("error"),
        "unmapped": {
            "ledger": {
                "type": e["type"],
                "outcome": e["outcome"],
                "realm": e.get("realm"),
                "client": e.get("client"),
                "session": e.get("session"),
                "seqs": list(paired.seqs),
                "details": details or None,
                "pii": rec.get("pii"),
            }
        },  # fields left out: erased, or encrypted (§5.2)
    }
    if intent is not None:
        out["start_time"] = int(intent["ts"]) // 1_000_000
    act: dict[str, Any] = {"user": _user(actor), "app_name": e.get("client") or actor.get("client")}
    if e.get("session") and class_uid != AUTHENTICATION:
        act["session"] = {"uid": e["session"]}
    if not act["user"] and not act["app_name"]:
        act = (
            {"app_name": "keycloak-ledger-sidecar"}
            if e["type"].startswith(("ledger.", "key.", "drift.", "state."))
            else {}
        )
    out["actor"] = act or None
    subject = _user(target) if target else None
    if class_uid == AUTHENTICATION:
        who = (
            subject if e["type"] == "user.impersonated" else (_user(actor, fallback_client=e.get("client")) or subject)
        )
        out["user"] = who or {"name": "(unknown)", "type_id": 0, "type": "Unknown"}
        out["service"] = {"name": "Keycloak", "uid": e.get("realm")}
        out["session"] = {"uid": e["session"]} if e.get("session") else None
        out["auth_protocol_id"], out["auth_protocol"] = 4, "OpenID"
        if e["type"].startswith("mfa."):
            # auth_factors would fit, but OCSF's auth_factor requires an email, phone number or security
            # questions, none of which an OTP step has (and the ledger never holds them).
            out["is_mfa"] = True
        step = str(details.get("step") or "")
        if step in _MFA_FACTORS and step != "password":
            out["is_mfa"] = True
    elif class_uid == ACCOUNT_CHANGE:
        out["user"] = subject or _user(actor) or {"name": "(unknown)", "type_id": 0, "type": "Unknown"}
    elif class_uid == USER_ACCESS:
        out["user"] = subject or {"name": "(unknown)", "type_id": 0, "type": "Unknown"}
        out["privileges"] = _privileges(e)
    elif class_uid == GROUP_MANAGEMENT:
        if e["type"].startswith(("role.",)):
            out["group"] = {"uid": target.get("id"), "name": target.get("name") or target.get("id") or "(unknown)"}
            out["privileges"] = _privileges(e)
        elif e["type"].startswith("group.") and e["type"] not in ("group.joined", "group.left"):
            out["group"] = {"uid": target.get("id"), "name": target.get("name") or target.get("id") or "(unknown)"}
            out["user"] = _user(actor) or {"name": "(unknown)", "type_id": 0, "type": "Unknown"}
        else:
            group = details.get("group") if isinstance(details.get("group"), str) else None
            gid = details.get("group_id") if isinstance(details.get("group_id"), str) else None
            org = details.get("organization_id") if isinstance(details.get("organization_id"), str) else None
            out["group"] = {
                "uid": gid or org,
                "name": group or gid or org or "(not recorded)",
                "type": "Organization" if e["type"].startswith("organization.") else None,
            }
            out["user"] = subject or {"name": "(unknown)", "type_id": 0, "type": "Unknown"}
    else:
        out["entity"] = _entity(e)
    if failed and e.get("error"):
        out["status_detail"] = e["error"]
    result: dict[str, Any] = strip_nulls(out)
    return result
