"""The drift monitor's logic on an in-memory Keycloak: baseline, replay, dedup, unrecorded events, in-flight records.

The real Keycloak is in tests/e2e/test_drift.py; here a small fake admin API answers the same
paths so every branch is driven quickly.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

from sidecar.core.canonical import canonical_bytes
from sidecar.core.events import IdentityEvent
from sidecar.drift.monitor import DriftConfig, DriftMonitor, load_snapshot
from sidecar.drift.reconcile import match
from sidecar.drift.state import Expected, empty_state
from sidecar.errors import UpstreamError
from sidecar.ledger.writer import Commit


class FakeKeycloak:
    """Users, groups and roles in memory, served on the admin paths sidecar.drift.live reads."""

    realm = "r"

    def __init__(self) -> None:
        self.users: dict[str, dict[str, Any]] = {
            "u1": {"username": "alice", "enabled": True, "roles": ["viewer"], "groups": ["g1"], "creds": ["password"]},
            "u2": {"username": "bob", "enabled": True, "roles": [], "groups": [], "creds": []},
        }
        self.groups: dict[str, dict[str, Any]] = {"g1": {"path": "/ops", "roles": ["operator"]}}
        self.roles = ["viewer", "operator", "admin"]
        self.events: list[dict[str, Any]] = []
        self.admin_events: list[dict[str, Any]] = []
        self.down = False
        self.calls = 0

    async def fetch(self, path: str, params: dict[str, str] | None = None) -> Any:
        self.calls += 1
        if self.down:
            raise UpstreamError("Keycloak unreachable")
        p = params or {}
        first = int(p.get("first", "0"))
        page = int(p.get("max", "1000"))

        def sl(items: list[Any]) -> list[Any]:
            return items[first : first + page]

        parts = path.split("/") if path else []
        if path == "":
            return {"bruteForceProtected": True, "registrationAllowed": False}
        if path == "users":
            return sl([{"id": k, "username": v["username"], "enabled": v["enabled"]} for k, v in self.users.items()])
        if path == "groups":
            return sl(
                [
                    {"id": k, "path": v["path"], "name": v["path"].strip("/"), "subGroupCount": 0}
                    for k, v in self.groups.items()
                ]
            )
        if parts[0] == "groups" and parts[2] == "members":
            return sl(
                [
                    {"id": k}
                    for k, v in self.users.items()
                    if self.groups[parts[1]]["path"] in [self.groups[g]["path"] for g in v["groups"]]
                ]
            )
        if path == "roles":
            return sl([{"name": r, "composite": r == "admin", "id": r} for r in self.roles])
        if parts[0] == "roles" and parts[-1] == "users":
            return sl([{"id": k} for k, v in self.users.items() if parts[1] in v["roles"]])
        if parts[0] == "roles" and parts[-1] == "groups":
            return sl([{"id": k} for k, v in self.groups.items() if parts[1] in v["roles"]])
        if parts[0] == "roles" and parts[-1] == "composites":
            return [{"name": "operator", "clientRole": False}]
        if path == "clients":
            return []
        if parts[0] == "users" and parts[-1] == "credentials":
            return [{"type": t} for t in self.users[parts[1]]["creds"]]
        if path == "events":
            return sl(list(reversed(self.events)))
        if path == "admin-events":
            return sl(list(reversed(self.admin_events)))
        raise AssertionError(path)


class FakeLedger:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.monitor: DriftMonitor | None = None

    async def append(self, event: IdentityEvent) -> Any:
        return self.add(event.to_json())

    def add(self, event: dict[str, Any], ts: int | None = None) -> Any:
        rec: dict[str, Any] = {"seq": len(self.records), "ts": str(ts or time.time_ns()), "event": event}
        self.records.append(rec)
        if self.monitor is not None:
            self.monitor.on_commit(
                Commit(0, ((rec["seq"], 0, canonical_bytes({**rec, "prev": "", "v": 1})),), b"", False, 0)
            )

        class R:
            seq = rec["seq"]

        return R()

    def of(self, etype: str) -> list[dict[str, Any]]:
        return [r["event"] for r in self.records if r["event"]["type"] == etype]


def _monitor(tmp_path: Path) -> tuple[FakeKeycloak, FakeLedger, DriftMonitor]:
    kc, led = FakeKeycloak(), FakeLedger()
    mon = DriftMonitor(kc, led.append, tmp_path, DriftConfig(rate_per_s=0, grace_s=0.0), client_id="robot")
    led.monitor = mon
    return kc, led, mon


async def test_baseline_then_bypass_is_one_drift_record(tmp_path: Path) -> None:
    """A change around the sidecar is one state-mismatch record naming target, field, expected, live; a second sweep adds none."""
    kc, led, mon = _monitor(tmp_path)
    await mon.baseline()
    snap = led.of("state.snapshot")
    assert len(snap) == 1
    state = load_snapshot(tmp_path, snap[0]["details"]["digest"].removeprefix("sha256:"))
    assert state["users"]["u1"] == {
        "username": "alice",
        "enabled": True,
        "realm_roles": ["viewer"],
        "client_roles": {},
        "groups": ["/ops"],
        "credentials": ["password"],
    }
    assert await mon.sweep() == []
    kc.users["u2"]["roles"].append("admin")  # straight on Keycloak
    found = await mon.sweep()
    assert [(m.id, m.field, m.expected, m.live) for m in found] == [("u2", "realm_roles", [], ["admin"])]
    drift = led.of("drift.detected")
    assert len(drift) == 1 and drift[0]["target"] == {"id": "u2", "kind": "user", "name": "bob"}
    assert drift[0]["details"]["kind"] == "state-mismatch" and drift[0]["details"]["first_seen_ns"].isdigit()
    await mon.sweep()
    assert len(led.of("drift.detected")) == 1  # deduplicated
    assert len(mon.status.active) == 1


async def test_recorded_change_is_no_drift(tmp_path: Path) -> None:
    """A role grant the ledger recorded with its after-state, and a user it recorded as created, are not drift."""
    kc, led, mon = _monitor(tmp_path)
    await mon.baseline()
    kc.users["u2"]["roles"].append("viewer")
    led.add(
        {
            "type": "role.granted",
            "outcome": "succeeded",
            "realm": "r",
            "target": {"id": "u2", "kind": "user"},
            "details": {"after": {"realm_roles": ["viewer"], "client_roles": {}, "groups": []}},
        }
    )
    kc.users["u3"] = {"username": "carol", "enabled": True, "roles": ["viewer"], "groups": [], "creds": []}
    led.add(
        {
            "type": "user.created",
            "outcome": "succeeded",
            "realm": "r",
            "target": {"username": "carol"},
            "details": {"created_id": "u3"},
        }
    )
    assert await mon.sweep() == []
    kc.users["u3"]["enabled"] = False  # now carol is adopted: a later bypass of her is drift
    assert [(m.id, m.field) for m in await mon.sweep()] == [("u3", "enabled")]


async def test_record_written_during_sweep_is_not_held_against_it(tmp_path: Path) -> None:
    """A change recorded while the sweep was reading is compared at the next sweep, not reported as drift."""
    _kc, _led, mon = _monitor(tmp_path)
    await mon.baseline()
    exp = Expected.from_snapshot(mon._expected.state if mon._expected else {}, 0)
    live = copy.deepcopy(exp.state)
    live["users"]["u1"]["realm_roles"] = []
    during = [
        {
            "seq": 9,
            "ts": str(time.time_ns()),
            "event": {
                "type": "role.revoked",
                "outcome": "pending",
                "realm": "r",
                "target": {"id": "u1", "kind": "user"},
            },
        }
    ]
    assert exp.compare(live, skip=exp.in_flight(during)) == []
    assert [m.field for m in exp.compare(live)] == ["realm_roles"]


async def test_unrecorded_admin_event_and_unreachable(tmp_path: Path) -> None:
    """An admin event without a record is an unrecorded-change; one with its record is not; an outage is an error, not silence."""
    kc, led, mon = _monitor(tmp_path)
    await mon.baseline()
    now = int(time.time() * 1000)
    kc.admin_events.append(
        {
            "id": "e1",
            "time": now,
            "operationType": "CREATE",
            "resourceType": "REALM_ROLE_MAPPING",
            "resourcePath": "users/u2/role-mappings/realm",
            "authDetails": {"userId": "adm"},
            "representation": '[{"name":"admin","secret":"never-copied"}]',
        }
    )
    kc.admin_events.append(
        {
            "id": "e2",
            "time": now,
            "operationType": "CREATE",
            "resourceType": "REALM_ROLE_MAPPING",
            "resourcePath": "users/u1/role-mappings/realm",
            "authDetails": {"userId": "adm"},
        }
    )
    led.add(
        {
            "type": "role.granted",
            "outcome": "succeeded",
            "realm": "r",
            "actor": {"id": "adm"},
            "target": {"id": "u1", "kind": "user"},
            "details": {"path": "users/u1/role-mappings/realm"},
        }
    )
    await mon.poll()
    drift = led.of("drift.detected")
    assert len(drift) == 1 and drift[0]["details"]["kind"] == "unrecorded-change"
    assert drift[0]["target"]["id"] == "u2" and "never-copied" not in str(drift[0])
    await mon.poll()
    assert len(led.of("drift.detected")) == 1  # each event once
    kc.down = True
    try:
        await mon.poll()
    except UpstreamError:
        pass
    else:
        raise AssertionError("an unreachable Keycloak must not pass as a clean poll")


def test_reconcile_is_the_oracle() -> None:
    """tests/oracle.py and the monitor use the same matching code."""
    import tests.oracle

    assert tests.oracle.match is match
    s = empty_state("r", 1)
    assert Expected.from_snapshot(s, None).compare(s) == []


async def test_snapshot_is_replicated_and_pulled(tmp_path: Path) -> None:
    """The baseline's content goes to the remote store beside the segments and `pull` brings it into the bundle."""
    from sidecar.audit.pull import pull
    from sidecar.replicate.memory import MemoryStore

    kc, led = FakeKeycloak(), FakeLedger()
    store = MemoryStore()
    mon = DriftMonitor(kc, led.append, tmp_path / "data", DriftConfig(rate_per_s=0), client_id="robot", store=store)
    (tmp_path / "data").mkdir()
    await mon.baseline()
    hexd = led.of("state.snapshot")[0]["details"]["digest"].removeprefix("sha256:")
    assert [o.key for o in await store.list("snapshots/")] == [f"snapshots/{hexd}.json"]
    result = await pull(store, tmp_path / "bundle")
    assert not [f for f in result.findings if f.code == "remote-snapshot-mismatch"]
    assert load_snapshot(tmp_path / "bundle", hexd)["users"]["u1"]["username"] == "alice"
