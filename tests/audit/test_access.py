"""The auditor endpoint's access rules as values: the cached live role check and rate-limited refusal records."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from joserfc import jwt
from joserfc.jwk import RSAKey

from sidecar import metrics
from sidecar.app import Settings, make_app
from sidecar.audit.access import DeniedReads, LiveRoles, Refusal
from tests.fixtures_sidecar import ledger_records
from tests.replicate.support import init_keys, wait_for

WINDOW_S = 2.0  # the refusal window of the end-to-end test


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def test_live_roles_follow_keycloak_within_the_cache_time() -> None:
    """A removed role or a disabled user is refused once the cached answer (ttl seconds) has expired; Keycloak is asked once per ttl."""
    clock = _Clock()
    state: dict[str, Any] = {"enabled": True, "roles": frozenset({"ledger-auditor", "viewer"})}
    asked: list[tuple[str, str]] = []

    async def check(realm: str, user_id: str) -> tuple[bool, frozenset[str]] | None:
        asked.append((realm, user_id))
        return bool(state["enabled"]), frozenset(state["roles"])

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
    assert [denied.note("id-bob", Refusal(bob.actor, bob.source_ip, f"obj{i}", "forbidden")) for i in range(500)] == [
        False
    ] * 500
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


async def test_endpoint_writes_one_refusal_record_then_one_aggregate(tmp_path: Path) -> None:
    """Through the real app: 30 refused reads by one user give one failed audit.read at once and one aggregate record
    (suppressed 29) once the window closes; the metric counts all 30."""
    key = RSAKey.generate_key(2048, parameters={"kid": "k1", "use": "sig", "alg": "RS256"})
    upstream_app = web.Application()

    async def certs(request: web.Request) -> web.Response:
        return web.json_response({"keys": [key.as_dict(private=False)]})

    upstream_app.router.add_get("/realms/{realm}/protocol/openid-connect/certs", certs)
    upstream = TestServer(upstream_app, host="127.0.0.1")
    await upstream.start_server()
    base_upstream = str(upstream.make_url("")).rstrip("/")
    data = tmp_path / "ledger"
    init_keys(data)
    app = make_app(
        Settings(
            upstream=base_upstream,
            data_dir=data,
            auditor_realm="r1",
            auditor_denied_window_s=WINDOW_S,
            upstream_probe_s=0,
        )
    )
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    now = int(time.time())
    token = jwt.encode(
        {"alg": "RS256", "kid": "k1", "typ": "JWT"},
        {
            "iss": f"{base_upstream}/realms/r1",
            "sub": "id-eve",
            "preferred_username": "eve",
            "azp": "app",
            "iat": now,
            "exp": now + 300,
            "realm_access": {"roles": ["viewer"]},
        },
        key,
    )
    before = metrics.AUDIT_DENIED.labels(reason="forbidden")._value.get()
    try:
        async with aiohttp.ClientSession() as http:
            began = time.monotonic()
            for _ in range(30):
                async with http.get(
                    server.make_url("/.sidecar/audit/objects"), headers={"Authorization": f"Bearer {token}"}
                ) as resp:
                    assert resp.status == 403
            in_one_window = time.monotonic() - began < WINDOW_S

            def reads() -> list[dict[str, Any]]:
                return [e for e in (r["event"] for r in ledger_records(data)) if e["type"] == "audit.read"]

            def accounted() -> int:  # refusals the records stand for: one each, plus what an aggregate suppressed
                return sum(e["details"]["suppressed"] if e["details"].get("aggregated") else 1 for e in reads())

            assert reads()[0]["details"].get("aggregated") is None  # the first refusal is written at once
            await wait_for(lambda: accounted() == 30, 60, lambda: f"30 refusals in the records ({reads()})")
    finally:
        await server.close()
        await upstream.close()
    records = reads()
    assert all(e["actor"]["username"] == "eve" and e["outcome"] == "failed" for e in records)
    if in_one_window:  # the usual case; a loaded machine may spread the 30 requests over more windows
        _first, aggregate = records
        assert aggregate["details"]["aggregated"] is True and aggregate["details"]["suppressed"] == 29
    assert len(records) < 30  # aggregated, not one record per refusal
    assert metrics.AUDIT_DENIED.labels(reason="forbidden")._value.get() - before == 30
