"""The access state of a realm, what the ledger implies it is, and how the two differ. [pure]

The state (the content of a `state.snapshot`, docs/format.md "State snapshots"):

    {"format": "kc-ledger-state/1", "realm": R, "taken_ns": "<ns>",
     "realm_settings": {<security-relevant realm fields>},
     "users":  {id: {"username", "enabled", "realm_roles": [..], "client_roles": {clientId: [..]},
                     "groups": [paths], "credentials": [types]}},
     "groups": {id: {"path", "realm_roles": [..], "client_roles": {clientId: [..]}}},
     "roles":  {"realm:<name>" | "client:<client uuid>:<name>": {"composites": [role keys]}}}

Its digest is SHA-256 over its canonical (JCS) bytes; the `state.snapshot` record carries the
digest and the content is stored beside the segments under that name.

`Expected` replays records over a snapshot: a permission change recorded with the target's
`after` state sets it exactly; a recorded change whose result the record does not carry (a
user created, a credential enrolled, a realm setting changed) marks what it touched as
"recorded but not known" and the next live read is adopted for it. Everything else must be
exactly as the ledger says; `compare()` lists each difference as a `Mismatch`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sidecar.core.canonical import canonical_bytes

STATE_FORMAT = "kc-ledger-state/1"
REALM_SETTINGS = (
    "enabled",
    "sslRequired",
    "registrationAllowed",
    "resetPasswordAllowed",
    "verifyEmail",
    "loginWithEmailAllowed",
    "duplicateEmailsAllowed",
    "editUsernameAllowed",
    "bruteForceProtected",
    "permanentLockout",
    "failureFactor",
    "maxFailureWaitSeconds",
    "passwordPolicy",
    "otpPolicyType",
    "otpPolicyAlgorithm",
    "otpPolicyDigits",
    "otpPolicyPeriod",
    "eventsEnabled",
    "adminEventsEnabled",
    "adminEventsDetailsEnabled",
    "accessTokenLifespan",
    "ssoSessionIdleTimeout",
    "ssoSessionMaxLifespan",
    "offlineSessionIdleTimeout",
    "revokeRefreshToken",
    "defaultSignatureAlgorithm",
    "browserFlow",
    "directGrantFlow",
    "resetCredentialsFlow",
    "clientAuthenticationFlow",
    "registrationFlow",
    "organizationsEnabled",
)
_ACCESS = ("realm_roles", "client_roles", "groups")


def empty_state(realm: str, now_ns: int) -> dict[str, Any]:
    return {
        "format": STATE_FORMAT,
        "realm": realm,
        "taken_ns": str(now_ns),
        "realm_settings": {},
        "users": {},
        "groups": {},
        "roles": {},
    }


def state_bytes(state: dict[str, Any]) -> bytes:
    return canonical_bytes(state)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One difference between Keycloak's live state and the ledger's."""

    realm: str
    kind: str  # "user", "group", "role", "realm"
    id: str
    name: str | None
    field: str
    expected: Any
    live: Any
    since_seq: int | None  # the newest record (or snapshot) the expected value comes from

    @property
    def key(self) -> str:
        return digest(
            canonical_bytes({"k": self.kind, "i": self.id, "f": self.field, "e": self.expected, "l": self.live})
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "realm": self.realm,
            "kind": self.kind,
            "id": self.id,
            "name": self.name,
            "field": self.field,
            "expected": self.expected,
            "live": self.live,
            "expected_since_seq": self.since_seq,
        }

    def __str__(self) -> str:
        return (
            f"{self.kind} {self.name or self.id} in {self.realm}: {self.field} is {self.live!r}, the ledger "
            f"says {self.expected!r}" + (f" (as of record {self.since_seq})" if self.since_seq is not None else "")
        )


@dataclass
class Expected:
    """What the ledger says the state is: a snapshot plus every later record, replayed."""

    state: dict[str, Any]
    since: dict[tuple[str, str], int] = field(default_factory=dict)  # (kind, id) -> newest record seq
    unknown: set[tuple[str, str, str]] = field(default_factory=set)  # (kind, id, field); "*" = every field
    baseline_seq: int | None = None

    @classmethod
    def from_snapshot(cls, state: dict[str, Any], seq: int | None) -> Expected:
        import copy

        return cls(copy.deepcopy(state), baseline_seq=seq)

    @property
    def realm(self) -> str:
        return str(self.state.get("realm"))

    def mark(self, kind: str, ident: str, fld: str, seq: int) -> None:
        self.unknown.add((kind, ident, fld))
        self.since[(kind, ident)] = seq

    def apply(self, rec: dict[str, Any], *, touched_only: bool = False) -> None:
        """Replay one record (only successful changes in this realm matter).

        `touched_only` (for records still in flight during a sweep) also counts intents and
        unknown outcomes: they may have changed Keycloak already.
        """
        e = rec["event"]
        ok = ("succeeded", "pending", "unknown") if touched_only else ("succeeded",)
        if e.get("realm") != self.realm or e.get("outcome") not in ok:
            return
        seq = int(rec["seq"])
        etype = e["type"]
        target = e.get("target") or {}
        tid = target.get("id")
        kind = target.get("kind") or "user"
        d = e.get("details") or {}
        users, groups = self.state["users"], self.state["groups"]
        if etype in ("role.granted", "role.revoked", "group.joined", "group.left") and isinstance(tid, str):
            after = d.get("after")
            table = users if kind == "user" else groups if kind == "group" else None
            if table is None:
                return
            if isinstance(after, dict) and tid in table:
                for fld in _ACCESS:
                    if fld in after and after[fld] is not None:
                        table[tid][fld] = after[fld]
                        self.unknown.discard((kind, tid, fld))
                self.since[(kind, tid)] = seq
            else:
                for fld in _ACCESS:
                    self.mark(kind, tid, fld, seq)
        elif etype == "user.created":
            uid = d.get("created_id") or tid
            if isinstance(uid, str):
                self.mark("user", uid, "*", seq)
            else:
                self.mark("user", "*", "*", seq)  # a user we cannot name: adopt new users once
        elif etype == "user.deleted" and isinstance(tid, str):
            users.pop(tid, None)
            self.unknown = {u for u in self.unknown if u[1] != tid}
            self.since[("user", tid)] = seq
        elif etype in ("user.disabled", "user.enabled") and isinstance(tid, str):
            if tid in users:
                users[tid]["enabled"] = etype == "user.enabled"
                self.unknown.discard(("user", tid, "enabled"))
            self.since[("user", tid)] = seq
        elif etype == "user.updated" and isinstance(tid, str):
            self.mark("user", tid, "enabled", seq)
            self.mark("user", tid, "username", seq)
        elif etype in ("credential.enrolled", "credential.removed", "password.reset", "password.changed"):
            who = tid if isinstance(tid, str) and kind == "user" else (e.get("actor") or {}).get("id")
            if isinstance(who, str):
                self.mark("user", who, "credentials", seq)
        elif etype == "role.composite.changed":
            self.mark("role", "*", "composites", seq)
        elif etype in ("client.created", "client.deleted"):
            self.mark("role", "*", "composites", seq)
            self.mark("client", "*", "*", seq)
        elif etype == "admin.change":
            self._admin_change(str(d.get("path") or ""), seq)
        elif etype.startswith(
            (
                "realm.",
                "auth.",
                "required_action.",
                "identity_provider.",
                "client_scope.",
                "component.",
                "organization.",
                "protocol_mapper.",
                "scope_mapping.",
                "admin_permissions.",
            )
        ):
            self.mark("realm", self.realm, "*", seq)
        elif etype.startswith("group."):  # created, updated, deleted (joined/left are above)
            self.mark("group", tid if isinstance(tid, str) else "*", "*", seq)
            self.mark("user", "*", "groups", seq)
        elif etype.startswith(("role.", "client.")):  # role created/updated/deleted, client updated
            self.mark("role", "*", "composites", seq)
            self.mark("user", "*", "realm_roles", seq)
            self.mark("user", "*", "client_roles", seq)
            self.mark("group", "*", "realm_roles", seq)
            self.mark("group", "*", "client_roles", seq)

    def _admin_change(self, path: str, seq: int) -> None:
        parts = path.split("/") if path else []
        head = parts[0] if parts else ""
        if not parts:
            self.mark("realm", self.realm, "*", seq)  # PUT /admin/realms/{realm}: the realm itself
        elif head == "users" and len(parts) > 1:
            self.mark("user", parts[1], "*", seq)
        elif head == "groups":
            self.mark("group", parts[1] if len(parts) > 1 else "*", "*", seq)
            if len(parts) == 1:
                self.mark("user", "*", "groups", seq)
        elif head in ("roles", "roles-by-id", "clients"):
            self.mark("role", "*", "composites", seq)
            self.mark("client", "*", "*", seq)
        elif head in (
            "authentication",
            "events",
            "ui-ext",
            "organizations",
            "client-scopes",
            "components",
            "identity-provider",
            "attack-detection",
            "localization",
            "default-groups",
            "default-default-client-scopes",
            "default-optional-client-scopes",
            "partialImport",
            "partial-export",
            "push-revocation",
            "logout-all",
            "sessions",
            "client-policies",
            "client-registration-policy",
            "keys",
            "users-management-permissions",
        ):
            self.mark("realm", self.realm, "*", seq)
            if head in ("partialImport", "default-groups", "organizations", "users-management-permissions"):
                self.mark("user", "*", "*", seq)
                self.mark("group", "*", "*", seq)
                self.mark("role", "*", "composites", seq)

    def replay(self, records: Iterable[dict[str, Any]]) -> None:
        for rec in records:
            self.apply(rec)

    def _is_unknown(self, kind: str, ident: str, fld: str) -> bool:
        u = self.unknown
        return (kind, ident, fld) in u or (kind, ident, "*") in u or (kind, "*", fld) in u or (kind, "*", "*") in u

    def in_flight(self, records: Iterable[dict[str, Any]]) -> set[tuple[str, str, str]]:
        """What records written while a sweep was reading may have touched (not compared this time)."""
        scratch = Expected(empty_state(self.realm, 0))
        for rec in records:
            scratch.apply(rec, touched_only=True)
        return scratch.unknown | {(k, i, "*") for (k, i) in scratch.since}

    def compare(self, live: dict[str, Any], skip: set[tuple[str, str, str]] | None = None) -> list[Mismatch]:
        """Every difference between `live` and what the ledger says, except what records left unknown."""
        out: list[Mismatch] = []
        saved = self.unknown
        if skip:
            self.unknown = saved | skip
        try:
            return self._compare(live, out)
        finally:
            self.unknown = saved

    def _compare(self, live: dict[str, Any], out: list[Mismatch]) -> list[Mismatch]:
        realm = self.realm

        def since(kind: str, ident: str) -> int | None:
            return self.since.get((kind, ident), self.baseline_seq)

        def diff(
            kind: str,
            ident: str,
            name: str | None,
            exp: dict[str, Any] | None,
            got: dict[str, Any] | None,
            fields: Iterable[str],
        ) -> None:
            if exp is None and got is None:
                return
            if exp is None or got is None:
                if not self._is_unknown(kind, ident, "*") and not self._is_unknown(kind, ident, "exists"):
                    out.append(
                        Mismatch(
                            realm, kind, ident, name, "exists", exp is not None, got is not None, since(kind, ident)
                        )
                    )
                return
            for fld in fields:
                if exp.get(fld) != got.get(fld) and not self._is_unknown(kind, ident, fld):
                    out.append(Mismatch(realm, kind, ident, name, fld, exp.get(fld), got.get(fld), since(kind, ident)))

        s = self.state
        for table, kind, fields, label in (
            (
                "users",
                "user",
                ("username", "enabled", "realm_roles", "client_roles", "groups", "credentials"),
                "username",
            ),
            ("groups", "group", ("path", "realm_roles", "client_roles"), "path"),
            ("roles", "role", ("composites",), None),
        ):
            exp_t, live_t = s.get(table, {}), live.get(table, {})
            for ident in sorted(set(exp_t) | set(live_t)):
                e, g = exp_t.get(ident), live_t.get(ident)
                name = ident if label is None else ((g or e or {}).get(label))
                diff(kind, ident, name, e, g, fields)
        exp_r, live_r = s.get("realm_settings", {}), live.get("realm_settings", {})
        for key in sorted(set(exp_r) | set(live_r)):
            if exp_r.get(key) != live_r.get(key) and not self._is_unknown("realm", realm, key):
                out.append(
                    Mismatch(
                        realm,
                        "realm",
                        realm,
                        realm,
                        f"realm_settings.{key}",
                        exp_r.get(key),
                        live_r.get(key),
                        since("realm", realm),
                    )
                )
        return out

    def adopt(self, live: dict[str, Any]) -> None:
        """Take the live value for everything records left unknown, then forget the marks."""
        s = self.state
        for kind, ident, fld in sorted(self.unknown):
            if kind == "realm":
                if fld == "*":
                    s["realm_settings"] = dict(live.get("realm_settings", {}))
                else:
                    s["realm_settings"][fld] = live.get("realm_settings", {}).get(fld)
                continue
            table = {"user": "users", "group": "groups", "role": "roles"}.get(kind)
            if table is None:
                continue
            live_t, exp_t = live.get(table, {}), s.setdefault(table, {})
            idents = set(live_t) | set(exp_t) if ident == "*" else {ident}
            for i in idents:
                if i not in live_t:
                    if fld == "*":
                        exp_t.pop(i, None)
                    continue
                if fld == "*" or i not in exp_t:
                    exp_t[i] = _copy(live_t[i])
                else:
                    exp_t[i][fld] = _copy(live_t[i].get(fld))
        self.unknown.clear()


def _copy(value: Any) -> Any:
    import copy

    return copy.deepcopy(value)
