"""The auditor endpoint's access rules as values: the cached live role check and rate-limited refusal records."""

from __future__ import annotations

from sidecar.audit.access import DeniedReads, LiveRoles, Refusal


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def test_live_roles_follow_keycloak_within_the_cache_time() -> None:
    """A removed role or a disabled user is refused once the cached answer (ttl seconds) has expired; Keycloak is asked once per ttl."""
    clock = _Clock()
    state = {"enabled": True, "roles": frozenset({"ledger-auditor", "viewer"})}
    asked: list[tuple[str, str]] = []

    async def check(realm: str, user_id: str) -> tuple[bool, frozenset[str]] | None:
        asked.append((realm, user_id))
        return bool(state["enabled"]), frozenset(state["roles"])  # type: ignore[arg-type]

    live = LiveRoles(check, ttl_s=5.0, now=clock)
    assert await live.refusal("r", "u1", "ledger-auditor") is None
    state["roles"] = frozenset({"viewer"})
    assert await live.refusal("r", "u1", "ledger-auditor") is None  # cached
    assert len(asked) == 1
    clock.t += 5.0
    assert await live.refusal("r", "u1", "ledger-auditor") == "revoked"
    state["roles"], state["enabled"] = frozenset({"ledger-auditor"}), False
    clock.t += 5.0
    assert await live.refusal("r", "u1", "ledger-auditor") == "disabled"
    assert len(asked) == 3


async def test_live_roles_fail_closed_when_keycloak_cannot_say() -> None:
    """No answer from Keycloak is "unconfirmed" (the endpoint answers 503), never a pass, and is not cached."""
    calls = 0

    async def check(realm: str, user_id: str) -> tuple[bool, frozenset[str]] | None:
        nonlocal calls
        calls += 1
        return None

    live = LiveRoles(check, ttl_s=60.0)
    assert await live.refusal("r", "u1", "ledger-auditor") == "unconfirmed"
    assert await live.refusal("r", "u1", "ledger-auditor") == "unconfirmed"
    assert calls == 2


def test_denied_reads_record_one_per_window_and_aggregate_the_rest() -> None:
    """Per requester the first refusal of a window is recorded, the others become one aggregate when the window closes; all are counted."""
    clock = _Clock()
    denied = DeniedReads(window_s=60, now=clock)
    bob = Refusal({"sub": "id-bob"}, "10.0.0.1", "list", "forbidden")
    carol = Refusal({"sub": "id-carol"}, "10.0.0.2", "list", "forbidden")
    assert denied.note("id-bob", bob) is True
    assert [denied.note("id-bob", Refusal(bob.actor, bob.source_ip, f"obj{i}", "forbidden"))
            for i in range(500)] == [False] * 500
    assert denied.note("id-carol", carol) is True
    assert denied.due() == []  # windows still open
    clock.t += 60
    owed = denied.due()
    assert len(owed) == 1
    last, suppressed, objects = owed[0]
    assert last.actor == {"sub": "id-bob"} and suppressed == 500 and len(objects) == 16  # objects bounded
    assert denied.denied == 502
    assert denied.note("id-bob", bob) is True  # a new window records again
    assert denied.due(all_windows=True) == []  # nothing suppressed in it


def test_denied_reads_bound_the_requesters_tracked() -> None:
    """Beyond max_requesters new requesters share one anonymous window, so memory and records stay bounded."""
    clock = _Clock()
    denied = DeniedReads(window_s=60, now=clock, max_requesters=3)
    recorded = [denied.note(f"id-{i}", Refusal({"sub": f"id-{i}"}, None, "list", "forbidden")) for i in range(1000)]
    assert sum(recorded) == 4  # three requesters and the anonymous window
    assert denied.denied == 1000
    clock.t += 60
    owed = denied.due()
    assert [(r.actor, n) for r, n, _ in owed] == [({}, 1000 - 3 - 1)]
