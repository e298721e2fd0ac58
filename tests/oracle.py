"""Keycloak's own event store as the test oracle for the ledger (promise P1).

Reads user events and admin events straight from Keycloak (not through the
sidecar), maps each to the ledger record kind it must have, and matches them.
A match needs the same kind, the same actor, the same target (for admin
events) and the same outcome. `match()` returns the table per kind, the
Keycloak events without a record, and the ledger successes Keycloak never saw.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

# Keycloak user event type -> (ledger types that may record it, outcome)
USER_EVENTS: dict[str, tuple[tuple[str, ...], str]] = {
    "LOGIN": (("login.succeeded",), "succeeded"),
    "LOGIN_ERROR": (("login.failed", "mfa.otp.failed"), "failed"),
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
}
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
    ("CREATE", "REALM_ROLE"): ("role.composite.changed", "admin.change"),
    ("DELETE", "REALM_ROLE"): ("role.composite.changed", "admin.change"),
}


# Ledger kinds whose Keycloak counterpart Keycloak stores by default: a success of one of these
# kinds with no Keycloak event is a record claiming something Keycloak did not see.
# (REFRESH_TOKEN is not stored by default, admin.change covers paths without a fixed resource type.)
ORACLE_VISIBLE = frozenset({"login.succeeded", "token.issued", "logout.completed", "role.granted", "role.revoked",
                            "group.joined", "group.left", "user.created", "user.deleted", "client.created",
                            "client.deleted", "client.secret.rotated", "password.reset"})


async def admin_token(base: str, username: str, password: str) -> str:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/realms/master/protocol/openid-connect/token",
                             data={"grant_type": "password", "client_id": "admin-cli", "username": username,
                                   "password": password}) as resp:
            data = await resp.json()
            return str(data["access_token"])


async def keycloak_events(base: str, token: str, realm: str, since_ms: int) -> tuple[list[dict[str, Any]],
                                                                                     list[dict[str, Any]]]:
    """(user events, admin events) of `realm` since `since_ms`, read directly from Keycloak."""
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.get(f"{base}/admin/realms/{realm}/events",
                            params={"dateFrom": str(since_ms), "max": "10000"}) as resp:
            user = await resp.json()
        async with http.get(f"{base}/admin/realms/{realm}/admin-events",
                            params={"dateFrom": str(since_ms), "max": "10000"}) as resp:
            admin = await resp.json()
    return [e for e in user if e["time"] >= since_ms], [e for e in admin if e["time"] >= since_ms]


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Match:
    table: Counter[str] = field(default_factory=Counter)  # "KC_TYPE -> ledger.type": count
    unmatched: list[dict[str, Any]] = field(default_factory=list)  # Keycloak events with no record
    phantom: list[dict[str, Any]] = field(default_factory=list)  # ledger successes Keycloak did not see

    def render(self) -> str:
        lines = [f"  {k:55s} {v:4d}" for k, v in sorted(self.table.items())]
        lines += [f"  UNMATCHED {e.get('type') or (e.get('operationType'), e.get('resourceType'))}" for e in
                  self.unmatched]
        lines += [f"  PHANTOM {r['event']['type']}" for r in self.phantom]
        return "\n".join(lines)


def _actor_ok(kc_user: str | None, kc_username: str | None, rec: dict[str, Any]) -> bool:
    actor = rec["event"].get("actor") or {}
    if kc_user and actor.get("id") == kc_user:
        return True
    return bool(kc_username) and actor.get("username") == kc_username


def match(user_events: list[dict[str, Any]], admin_events: list[dict[str, Any]], records: list[dict[str, Any]],
          realm: str, since_ns: int) -> Match:
    """Pair every Keycloak event with one ledger record (each record used once)."""
    result = Match()
    pool = [r for r in records if int(r["ts"]) >= since_ns and r["event"].get("realm") == realm
            and r["event"].get("details", {}).get("phase") != "intent"]
    used: set[int] = set()
    for ev in sorted(user_events, key=lambda e: e["time"]):
        if ev["type"] not in USER_EVENTS:
            continue
        kinds, outcome = USER_EVENTS[ev["type"]]
        username = (ev.get("details") or {}).get("username")
        for rec in pool:
            e = rec["event"]
            if rec["seq"] in used or e["type"] not in kinds or e["outcome"] != outcome:
                continue
            if ev["type"] in ("CLIENT_LOGIN", "CLIENT_LOGIN_ERROR"):
                ok = e.get("client") == ev.get("clientId")
            elif ev["type"] == "IMPERSONATE":  # Keycloak puts the impersonated user in userId
                ok = (e.get("target") or {}).get("id") == ev.get("userId")
            else:
                ok = _actor_ok(ev.get("userId"), username, rec)
            if ok and (e.get("client") in (None, ev.get("clientId"))):
                used.add(rec["seq"])
                result.table[f"{ev['type']} -> {e['type']}"] += 1
                break
        else:
            result.unmatched.append(ev)
    for ev in sorted(admin_events, key=lambda e: e["time"]):
        key = (ev["operationType"], ev["resourceType"])
        if key not in ADMIN_EVENTS:
            continue
        kinds = ADMIN_EVENTS[key]
        kc_actor = (ev.get("authDetails") or {}).get("userId")
        path = ev.get("resourcePath", "")
        for rec in pool:
            e = rec["event"]
            if rec["seq"] in used or e["type"] not in kinds or e["outcome"] != "succeeded":
                continue
            rec_path = e.get("details", {}).get("path", "")
            target_id = (e.get("target") or {}).get("id") or ""
            if (e.get("actor") or {}).get("id") == kc_actor and (rec_path == path or (target_id and target_id in path)):
                used.add(rec["seq"])
                result.table[f"{key[0]} {key[1]} -> {e['type']}"] += 1
                break
        else:
            result.unmatched.append(ev)
    for rec in pool:
        e = rec["event"]
        if rec["seq"] not in used and e["outcome"] == "succeeded" and e["type"] in ORACLE_VISIBLE:
            result.phantom.append(rec)
    return result
