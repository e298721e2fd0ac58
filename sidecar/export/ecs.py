"""Ledger records as Elastic Common Schema (ECS 8.11) documents (docs/export.md: the mapping). [pure]

Standard ECS fields carry what ECS has a field for (`@timestamp`, `event.*`, `user.*`,
`user.target.*`, `group.*`, `source.ip`, `service.*`, `error.code`, `related.user`);
Keycloak-specific values go under the custom `keycloak.*` namespace, which ECS reserves
for no standard field. An intent and its outcome export as one document (`event.start`,
`event.end`). Absent values are left out, never written as null.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sidecar.audit.timeline import describe
from sidecar.export.ocsf import strip_nulls
from sidecar.export.pairs import Paired

ECS_VERSION = "8.11.0"

# ledger family or type -> (event.category, event.type)
_CATEGORY: dict[str, tuple[list[str], list[str]]] = {
    "login": (["authentication", "session"], ["start"]),
    "mfa": (["authentication"], ["info"]),
    "token": (["authentication"], ["info"]),
    "token.revoked": (["authentication", "session"], ["end"]),
    "logout": (["authentication", "session"], ["end"]),
    "session": (["session"], ["end"]),
    "user.impersonated": (["authentication", "session", "iam"], ["start", "admin"]),  # ECS: admin is an iam type
    "credential": (["iam"], ["user", "change"]),
    "password": (["iam"], ["user", "change"]),
    "user.created": (["iam"], ["user", "creation"]),
    "user.deleted": (["iam"], ["user", "deletion"]),
    "user": (["iam"], ["user", "change"]),
    "role": (["iam"], ["user", "change"]),
    "group": (["iam"], ["group", "change"]),
    "organization": (["iam"], ["group", "change"]),
    "client.created": (["iam", "configuration"], ["creation"]),
    "client.deleted": (["iam", "configuration"], ["deletion"]),
    "client": (["iam", "configuration"], ["change"]),
    "admin": (["iam", "configuration"], ["change", "admin"]),
    "drift": (["configuration", "intrusion_detection"], ["indicator"]),
    "audit": (["database"], ["access"]),
}
# Named configuration changes (realm settings, flows, identity providers, scopes, mappers, permissions).
_CONFIGURATION = (
    "realm",
    "auth",
    "required_action",
    "identity_provider",
    "client_scope",
    "protocol_mapper",
    "scope_mapping",
    "admin_permissions",
)
_VERBS = {"created": "creation", "deleted": "deletion", "cleared": "deletion"}
# `unchanged`: Keycloak answered success and nothing changed (event.type info, keycloak.outcome says so).
_OUTCOME = {"succeeded": "success", "unchanged": "success", "failed": "failure"}


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _category(etype: str, outcome: str = "succeeded") -> tuple[list[str], list[str]]:
    family, verb = etype.split(".", 1)[0], etype.rsplit(".", 1)[-1]
    if etype in _CATEGORY:
        category, types = _CATEGORY[etype]
    elif family in ("group", "role") and verb in _VERBS:  # group.created, role.deleted, ...
        category, types = ["iam"], (["group"] if family == "group" else []) + [_VERBS[verb]]
    elif family in _CONFIGURATION:
        category, types = ["configuration"], [_VERBS.get(verb, "change")]
    else:
        category, types = _CATEGORY.get(family) or (["configuration"], ["info"])
    if outcome == "unchanged":  # nothing changed: not a change, creation or deletion
        types = [t for t in types if t in ("user", "group", "admin")] + ["info"]
    return category, types


def to_ecs(item: Paired | dict[str, Any], origin: str, *, verified: bool = True) -> dict[str, Any]:
    paired = item if isinstance(item, Paired) else Paired(item)
    rec, intent = paired.record, paired.intent
    e = rec["event"]
    actor, target = e.get("actor") or {}, e.get("target") or {}
    details = e.get("details") or {}
    category, types = _category(e["type"], e["outcome"])
    ts = int(rec["ts"])
    doc: dict[str, Any] = {
        "@timestamp": _iso(ts),
        "ecs": {"version": ECS_VERSION},
        "message": describe(rec),
        "event": {
            "kind": "alert" if e["type"] in ("drift.detected", "alarm.raised") else "event",
            "category": category,
            "type": types,
            "action": e["type"],
            "outcome": _OUTCOME.get(e["outcome"], "unknown"),
            "id": f"{origin}/{rec['seq']}",
            "sequence": int(rec["seq"]),
            "provider": "keycloak-ledger-sidecar",
            "dataset": "keycloak_ledger.events",
            "module": "keycloak_ledger",
            "start": _iso(int(intent["ts"])) if intent else None,
            "end": _iso(ts) if intent else None,
            "severity": 73 if e["type"] in ("drift.detected", "alarm.raised") else None,
        },
        "user": {
            "id": actor.get("id"),
            "name": actor.get("username"),
            "target": {"id": target.get("id"), "name": target.get("username")}
            if target.get("kind") in (None, "user") and (target.get("id") or target.get("username"))
            else None,
        },
        "group": {"id": target.get("id"), "name": target.get("name")}
        if target.get("kind") == "group"
        else ({"id": details.get("group_id"), "name": details.get("group")} if details.get("group_id") else None),
        "source": {"ip": e["ip"]} if e.get("ip") else None,
        "service": {"name": "keycloak", "type": "identity"},
        "error": {"code": e["error"]} if e.get("error") else None,
        "related": {"user": sorted({str(v) for v in (actor.get("username"), target.get("username")) if v}) or None},
        "tags": ["unverified"] if not verified else None,
        "labels": {"ledger_origin": origin},
        "keycloak": {
            "realm": e.get("realm"),
            "client_id": e.get("client") or actor.get("client"),
            "outcome": e["outcome"] if e["outcome"] not in ("succeeded", "failed") else None,
            "session_id": e.get("session"),
            "request_id": e.get("request_id"),
            "target": target or None,
            "details": details or None,
            "ledger_seqs": list(paired.seqs),
            "pii": rec.get("pii"),  # fields left out: erased, or encrypted (docs/format.md §5.2)
        },
    }
    if not doc["user"]["target"] and not doc["user"]["id"] and not doc["user"]["name"]:
        doc["user"] = None
    result: dict[str, Any] = strip_nulls(doc)
    return result
