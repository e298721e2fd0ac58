"""Replaying the ledger into the access state it implies. [pure]

Every permission-change outcome recorded with the state reader on carries the
target's direct realm roles, client roles and groups after the change. The
expected state of a user or group is the `after` of the newest such record;
a deletion removes it. Keycloak's live state must equal it: a difference means
a change reached Keycloak without passing through the sidecar (its own port,
its database, a federation sync) or a record is missing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

_ACCESS_TYPES = frozenset({"role.granted", "role.revoked", "group.joined", "group.left"})


@dataclass(frozen=True, slots=True)
class Expected:
    realm: str
    kind: str  # "user" or "group"
    id: str
    name: str | None
    state: dict[str, Any]
    seq: int


@dataclass(frozen=True, slots=True)
class Drift:
    realm: str
    kind: str
    id: str
    name: str | None
    field: str
    expected: Any
    live: Any
    since_seq: int

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
            f"says {self.expected!r} (as of record {self.since_seq})"
        )


def expected_state(records: Iterable[dict[str, Any]]) -> dict[tuple[str, str, str], Expected]:
    """(realm, kind, id) -> the newest recorded access state."""
    out: dict[tuple[str, str, str], Expected] = {}
    for rec in records:
        e = rec["event"]
        target = e.get("target") or {}
        key = (str(e.get("realm")), str(target.get("kind")), str(target.get("id")))
        if e["type"] == "user.deleted" and e["outcome"] == "succeeded":
            out.pop((key[0], "user", key[2]), None)
            continue
        if e["type"] not in _ACCESS_TYPES or e["outcome"] != "succeeded":
            continue
        after = (e.get("details") or {}).get("after")
        if isinstance(after, dict) and target.get("id"):
            out[key] = Expected(
                key[0], key[1], key[2], target.get("username") or target.get("name"), after, int(rec["seq"])
            )
    return out


def compare(expected: Expected, live: dict[str, Any] | None) -> list[Drift]:
    if live is None:
        return [Drift(expected.realm, expected.kind, expected.id, expected.name, "exists", True, False, expected.seq)]
    drifts = []
    for field in ("realm_roles", "client_roles", "groups"):
        if field in expected.state and expected.state[field] is not None and live.get(field) != expected.state[field]:
            drifts.append(
                Drift(
                    expected.realm,
                    expected.kind,
                    expected.id,
                    expected.name,
                    field,
                    expected.state[field],
                    live.get(field),
                    expected.seq,
                )
            )
    return drifts
