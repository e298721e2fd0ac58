"""Identity events: a closed set of wire names, and a typed boundary that bounds whatever it is given."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.core import events
from sidecar.core.canonical import canonical_bytes
from sidecar.core.events import (
    MAX_DETAIL_TEXT,
    MAX_DETAILS_BYTES,
    MAX_ITEMS,
    MAX_TEXT,
    WIRE_NAMES,
    EventType,
    IdentityEvent,
    Outcome,
    Party,
    clean_details,
    clean_text,
)


def test_wire_names_are_explicit_and_unique() -> None:
    """Every event type's wire name is its value, dotted lowercase, and no two types share one."""
    assert len(WIRE_NAMES) == len(EventType)
    assert all(t.value == str(t) and t.value == t.value.lower() and "." in t.value for t in EventType)
    assert EventType("login.succeeded") is EventType.LOGIN_SUCCEEDED


def test_an_event_encodes_only_what_it_holds() -> None:
    """to_json leaves out absent fields, names the source IP `ip` and keeps parties and details."""
    bare = IdentityEvent(EventType.LOGIN_FAILED, Outcome.FAILED)
    assert bare.to_json() == {"type": "login.failed", "outcome": "failed"}
    full = IdentityEvent(
        EventType.ROLE_GRANTED,
        Outcome.SUCCEEDED,
        realm="r",
        actor=Party(id="a", kind="user"),
        target=Party(username="u", name="n", client="c"),
        client="console",
        source_ip="192.0.2.1",
        session="s",
        request_id="q",
        error="e",
        details={"roles": ["viewer"]},
    )
    assert full.to_json() == {
        "type": "role.granted",
        "outcome": "succeeded",
        "realm": "r",
        "client": "console",
        "ip": "192.0.2.1",
        "session": "s",
        "request_id": "q",
        "error": "e",
        "actor": {"id": "a", "kind": "user"},
        "target": {"username": "u", "client": "c", "name": "n"},
        "details": {"roles": ["viewer"]},
    }


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, None),
        (True, "true"),
        (False, "false"),
        (7, "7"),
        (1.5, "1.5"),
        ("x" * 300, "x" * MAX_TEXT),
        ("a\ud800b", "a\ufffdb"),
        (["list"], None),
        (b"bytes", None),
    ],
)
def test_text_fields_are_bounded_strings(value: object, text: str | None) -> None:
    """Numbers become their decimal text, long text is cut, lone surrogates become U+FFFD, other types go."""
    assert clean_text(value) == text


def test_what_the_boundary_cut_is_named_in_bounded() -> None:
    """A non-string realm, an over-long actor id, a party that is not a Party: each named in details.bounded."""
    event = IdentityEvent(
        EventType.LOGIN_FAILED,
        Outcome.FAILED,
        realm=["r"],  # type: ignore[arg-type]
        actor=Party(id="i" * 400),
        target="u",  # type: ignore[arg-type]
    )
    assert event.realm is None and event.target is None and event.actor == Party(id="i" * MAX_TEXT)
    assert event.details == {"bounded": ["realm", "actor.id", "target"]}


def test_details_hold_only_canonical_json() -> None:
    """Big integers and floats become strings, bad keys and deep or odd values are dropped and named."""
    deep: Any = "leaf"
    for _ in range(events.MAX_DEPTH + 1):
        deep = [deep]
    out = clean_details(
        {
            "n": 2**60,
            "ok": 3,
            "f": 0.25,
            "b": True,
            "z": None,
            "bad key!": 1,
            5: "x",
            "deep": deep,
            "set": {1},
            "t": ("a", "b"),
            "s": "y" * 2000,
        }
    )
    assert out["n"] == str(2**60) and out["ok"] == 3 and out["f"] == "0.25" and out["b"] is True
    assert out["z"] is None and out["t"] == ["a", "b"] and out["s"] == "y" * MAX_DETAIL_TEXT
    assert "bad key!" not in out and "set" in out and out["set"] is None
    assert set(out["bounded"]) >= {"details.?", "details.set", "details.s"}
    assert any(p.startswith("details.deep[0]") for p in out["bounded"])
    canonical_bytes(out)


def test_long_objects_and_lists_are_cut_at_max_items() -> None:
    """Past MAX_ITEMS entries an object or list is cut, and the cut is named."""
    out = clean_details({"many": {f"k{i}": i for i in range(MAX_ITEMS + 5)}, "list": list(range(MAX_ITEMS + 1))})
    assert len(out["many"]) == MAX_ITEMS and len(out["list"]) == MAX_ITEMS
    assert {"details.many.*", "details.list[*]"} <= set(out["bounded"])


def test_details_that_are_not_an_object_are_dropped() -> None:
    """A details value that is not a dict becomes {} and is named, unless it was None."""
    bounds = events._Bounds()
    assert clean_details(["x"], bounds) == {} and bounds.paths == ["details"]
    assert clean_details(None) == {}


def test_oversized_details_drop_containers_then_the_longest_scalars() -> None:
    """Over MAX_DETAILS_BYTES, containers go first, then the longest scalars, each named."""
    big = {f"s{i}": "v" * 1000 for i in range(60)}
    out = clean_details({**big, "roles": ["r"] * 10, "state": {"a": 1}})
    assert "roles" not in out and "state" not in out
    assert len(canonical_bytes(out)) <= MAX_DETAILS_BYTES + 2048
    assert "details.roles" in out["bounded"] and "details.state" in out["bounded"]
    assert any(p.startswith("details.s") and p not in ("details.state",) for p in out["bounded"])


def test_earlier_bounds_are_kept_and_the_list_is_capped() -> None:
    """A bounded list already in the details is kept (strings only) and at most 16 paths are named."""
    out = clean_details({"bounded": ["actor.id", 5], **{f"bad key {i}": 1 for i in range(3)}})
    assert out["bounded"] == ["actor.id", "details.?"]
    bounds = events._Bounds()
    for i in range(40):
        bounds.flag(f"p{i}")
    assert len(bounds.paths) == 16
    assert len(clean_details({"bounded": [f"q{i}" for i in range(30)]}, bounds)["bounded"]) == 16


@settings(max_examples=150, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=20,
    )
)
def test_any_details_become_encodable(details: Any) -> None:
    """Whatever the details, the event's details encode canonically."""
    event = IdentityEvent(EventType.ROLE_GRANTED, Outcome.SUCCEEDED, details={"x": details})
    canonical_bytes(event.to_json())
