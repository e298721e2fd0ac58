"""Timelines and exports: who did what to whom, when, read from the segments (the truth).

`records()` walks a ledger directory or pulled bundle in order and yields each
record's parsed form; filters select by actor, target, session, realm, type
and time. `to_ocsf()` maps a record to an OCSF 1.x event for SIEMs:
Authentication (3002) for logins, logouts and token grants; Account Change
(3001) for credentials, passwords and user lifecycle; User Access Management
(3005) for role and group changes; Entity Management (3004) for clients and
other admin changes. Nothing here is trusted before `sidecar verify` has run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidecar.audit.verifier import segment_files
from sidecar.core import framing
from sidecar.core.record import record_object


@dataclass(frozen=True)
class Filter:
    actor: str | None = None
    target: str | None = None
    session: str | None = None
    realm: str | None = None
    types: tuple[str, ...] = ()
    since_ns: int | None = None
    until_ns: int | None = None

    def __call__(self, rec: dict[str, Any]) -> bool:
        e = rec["event"]
        actor, target = e.get("actor") or {}, e.get("target") or {}
        ts = int(rec["ts"])
        return (
            (self.actor is None or self.actor in (actor.get("id"), actor.get("username"), actor.get("client")))
            and (
                self.target is None
                or self.target in (target.get("id"), target.get("username"), target.get("client"), target.get("name"))
            )
            and (self.session is None or e.get("session") == self.session)
            and (self.realm is None or e.get("realm") == self.realm)
            and (not self.types or any(e["type"] == t or e["type"].startswith(t + ".") for t in self.types))
            and (self.since_ns is None or ts >= self.since_ns)
            and (self.until_ns is None or ts <= self.until_ns)
        )


def records(source: Path, keep: Filter | None = None) -> Iterator[dict[str, Any]]:
    for path in segment_files(source):
        for frame in framing.iter_frames(path.read_bytes()):
            if isinstance(frame, framing.FrameDamage):
                break
            if frame.kind == framing.RECORD:
                rec = record_object(frame.body)
                if keep is None or keep(rec):
                    yield rec


def describe(rec: dict[str, Any]) -> str:
    """One line a person reads: who did what to whom, and how it ended."""
    e = rec["event"]
    actor, target, d = e.get("actor") or {}, e.get("target") or {}, e.get("details") or {}
    # A user without a readable username (encrypted, or erased: docs/format.md §5.2) shows as its id, its pseudonym.
    who = (
        actor.get("username")
        or (actor.get("kind") == "user" and actor.get("id"))
        or actor.get("client")
        or actor.get("id")
        or "-"
    )
    whom = target.get("username") or target.get("client") or target.get("name") or target.get("id") or ""
    extra = ""
    if isinstance(d.get("roles"), list) and d["roles"]:  # (a state.snapshot's details.roles is a count)
        extra = " roles=" + ",".join(map(str, d["roles"]))
    elif d.get("grant"):
        extra = f" grant={d['grant']}"
    elif e["type"] == "subject.erased":
        extra = f" subject={d.get('subject')} reason={d.get('reason')!r}"
    phase = f" [{d['phase']}]" if d.get("phase") == "intent" else ""
    err = f" error={e['error']}" if e.get("error") else ""
    return f"{e['type']}{phase} {e['outcome']}: {who}{' -> ' + whom if whom else ''}{extra}{err}"


_CLASSES = {
    "login": (3002, "Authentication", 1, "Logon"),
    "logout": (3002, "Authentication", 2, "Logoff"),
    "token": (3002, "Authentication", 99, "Other"),
    "mfa": (3002, "Authentication", 1, "Logon"),
    "credential": (3001, "Account Change", 99, "Other"),
    "password": (3001, "Account Change", 3, "Password Change"),
    "user": (3001, "Account Change", 99, "Other"),
    "role": (3005, "User Access Management", 1, "Assign Privileges"),
    "group": (3005, "User Access Management", 99, "Other"),
    "session": (3002, "Authentication", 2, "Logoff"),
}


def to_ocsf(rec: dict[str, Any], origin: str) -> dict[str, Any]:
    e = rec["event"]
    family = e["type"].split(".", 1)[0]
    class_uid, class_name, activity_id, activity = _CLASSES.get(family, (3004, "Entity Management", 99, "Other"))
    if e["type"] == "role.revoked":
        activity_id, activity = 2, "Revoke Privileges"
    if e["type"] == "user.created":
        activity_id, activity = 1, "Create"
    if e["type"] == "user.deleted":
        activity_id, activity = 6, "Delete"
    actor, target = e.get("actor") or {}, e.get("target") or {}
    status = {"succeeded": (1, "Success"), "failed": (2, "Failure")}.get(e["outcome"], (0, "Unknown"))
    out: dict[str, Any] = {
        "class_uid": class_uid,
        "class_name": class_name,
        "category_uid": 3,
        "category_name": "Identity & Access Management",
        "activity_id": activity_id,
        "activity_name": activity,
        "type_uid": class_uid * 100 + activity_id,
        "time": int(rec["ts"]) // 1_000_000,
        "status_id": status[0],
        "status": status[1],
        "severity_id": 1,
        "message": describe(rec),
        "metadata": {
            "version": "1.3.0",
            "product": {"name": "keycloak-ledger-sidecar", "vendor_name": "open source"},
            "uid": f"{origin}/{rec['seq']}",
            "original_time": rec["ts"],
            "log_name": origin,
            "labels": [e["type"]],
        },
        "actor": {
            "user": {"uid": actor.get("id"), "name": actor.get("username")},
            "app_name": actor.get("client") or e.get("client"),
        },
        "user": {"uid": target.get("id"), "name": target.get("username") or target.get("name")},
        "src_endpoint": {"ip": e.get("ip")},
        "unmapped": {
            "ledger_type": e["type"],
            "realm": e.get("realm"),
            "session": e.get("session"),
            "details": e.get("details", {}),
            "error": e.get("error"),
        },
    }
    if e.get("error"):
        out["status_detail"] = e["error"]
    return out
