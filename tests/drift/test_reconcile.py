"""Pairing Keycloak's events with ledger records (sidecar.drift.reconcile.match): no-op outcomes."""

from __future__ import annotations

from typing import Any

from sidecar.drift.reconcile import match

REALM = "ledger-test"
PATH = "users/u-1/groups/g-ops"


def _rec(seq: int, etype: str, outcome: str, path: str = PATH) -> dict[str, Any]:
    return {
        "seq": seq,
        "ts": str(1_000 + seq),
        "event": {
            "type": etype,
            "outcome": outcome,
            "realm": REALM,
            "actor": {"id": "u-admin", "username": "admin"},
            "target": {"id": "u-1", "kind": "user"},
            "details": {"path": path, "phase": "outcome", "group": "/ops"},
        },
    }


def _admin_event(time_ms: int, op: str, path: str = PATH) -> dict[str, Any]:
    return {
        "time": time_ms,
        "operationType": op,
        "resourceType": "GROUP_MEMBERSHIP",
        "resourcePath": path,
        "authDetails": {"userId": "u-admin"},
    }


def test_noop_membership_records_never_take_a_later_real_changes_event() -> None:
    """An earlier `unchanged` join at the same path is passed over for the `succeeded` one Keycloak's event is for."""
    records = [
        _rec(1, "group.joined", "succeeded"),
        _rec(2, "group.joined", "unchanged"),  # first round: real, no-op
        _rec(3, "group.left", "succeeded"),
        _rec(4, "group.left", "unchanged"),
        _rec(5, "group.joined", "succeeded"),
        _rec(6, "group.joined", "unchanged"),  # second round, same path
        _rec(7, "group.left", "succeeded"),
        _rec(8, "group.left", "unchanged"),
    ]
    events = [
        _admin_event(1, "CREATE"),
        _admin_event(2, "DELETE"),
        _admin_event(3, "CREATE"),
        _admin_event(4, "DELETE"),
    ]
    result = match([], events, records, REALM, 0)
    assert not result.unmatched and not result.phantom, result.render()
    assert result.used == {1, 3, 5, 7}


def test_an_unchanged_record_still_matches_when_no_success_fits() -> None:
    """Keycloak records an UPDATE REALM for a realm PUT that set what was already set: its unchanged record pairs."""
    records = [_rec(1, "realm.events.changed", "unchanged", "events/config")]
    event = {
        "time": 1,
        "operationType": "UPDATE",
        "resourceType": "REALM",
        "resourcePath": "events/config",
        "authDetails": {"userId": "u-admin"},
    }
    result = match([], [event], records, REALM, 0)
    assert not result.unmatched and result.used == {1}


def test_a_login_without_an_answer_is_the_record_of_keycloaks_client_login() -> None:
    """The state reader's login whose answer never came (outcome unknown) pairs with the CLIENT_LOGIN Keycloak wrote."""
    records: list[dict[str, Any]] = [
        {
            "seq": 1,
            "ts": "1001",
            "event": {
                "type": "token.issued",
                "outcome": "unknown",
                "realm": REALM,
                "client": "ledger-robot",
                "actor": {"client": "ledger-robot", "kind": "client"},
                "error": "no_answer:TimeoutError",
                "details": {"grant": "client_credentials", "via": "sidecar-state-reader"},
            },
        }
    ]
    event = {"time": 1, "type": "CLIENT_LOGIN", "clientId": "ledger-robot", "userId": "u-sa"}
    result = match([event], [], records, REALM, 0)
    assert not result.unmatched and not result.phantom and result.used == {1}
    ok = {"seq": 2, "ts": "1002", "event": {**records[0]["event"], "outcome": "succeeded", "error": None}}
    result = match([event], [], [*records, ok], REALM, 0)
    assert result.used == {2}, "a record with Keycloak's own outcome comes first"
