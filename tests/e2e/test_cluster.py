"""A Keycloak cluster as processes on loopback (sidecar.harness.cluster): Debian's PostgreSQL, two
production Keycloak nodes clustered by their own Infinispan caches (JGroups over TCP on 127.0.0.1,
discovery through the shared database), one sidecar per node with its own ledger, origin and key,
each replicating to one versitygw bucket under its own prefix, and Debian's HAProxy in front of the
sidecars (which believe forwarded headers only from HAProxy's source address). Started once for
the module.

Attribution across nodes: a browser login begun on A and completed on B, an admin token obtained
through A and used through B (lightweight, no `sub`), a session created on A and revoked on B.
One bucket: `sidecar verify s3://ledger/` checks both origins against an origins trust file and
`sidecar timeline` merges them. Drift across the cluster: each drift monitor reconciles against both
ledgers (read back verified from the bucket), so a change through a sidecar is drift for no origin and
one around every sidecar is drift once. Failure: one sidecar SIGKILLed under load.
"""

from __future__ import annotations

import asyncio
import html
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import orjson
import pytest

from sidecar.audit.origins import OriginsTrust
from sidecar.audit.verifier import load_trust
from sidecar.harness.cluster import PROXY_SOURCE, Cluster, running_cluster
from sidecar.harness.haproxy import ROUTE_HEADER
from sidecar.harness.realm import REALM
from tests import oracle
from tests.e2e.test_workload import Workload
from tests.fixtures_keycloak import ADMIN_PASSWORD, ADMIN_USERNAME
from tests.fixtures_sidecar import ledger_records

# The first test also waits for the module's cluster (two production Keycloak starts on a loaded 2-core machine).
pytestmark = [pytest.mark.keycloak, pytest.mark.s3, pytest.mark.timeout(1500)]

_ACTION = re.compile(r'<form[^>]*id="kc-form-login"[^>]*action="([^"]+)"', re.S)
HEARTBEAT_S = 30.0  # the auditor's trust file here states the default heartbeat (lenient: the sidecars beat faster)
# Drift in the test: a poll every 2 s, and a heartbeat of 5 s so that an idle peer's coverage moves on soon.
SIDECAR_HEARTBEAT_S = 5.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The two-node cluster behind HAProxy, started once for this module; every process ended by its pid."""
    work = tmp_path_factory.mktemp("cluster")
    began = time.monotonic()
    with running_cluster(
        work,
        realm_files=[REALM.file],
        reader=(REALM.name, REALM.robot.client_id, REALM.robot.secret or ""),
        sidecar_extra={"SIDECAR_DRIFT_POLL": "2", "SIDECAR_HEARTBEAT": str(SIDECAR_HEARTBEAT_S)},
        admin_username=ADMIN_USERNAME,
        admin_password=ADMIN_PASSWORD,  # the seeded workload's admins log in with the suite's admin password
    ) as running:
        print(f"cluster up in {time.monotonic() - began:.0f} s: {running.timings}")
        yield running


def _route(node: str | None) -> dict[str, str]:
    return {ROUTE_HEADER: node} if node else {}


_USED: set[str] = set()  # tokens this module received: none may reach what the sidecars wrote


async def _token(
    http: aiohttp.ClientSession, base: str, realm: str, form: dict[str, str], node: str | None
) -> tuple[int, dict[str, Any]]:
    async with http.post(
        f"{base}/realms/{realm}/protocol/openid-connect/token", data=form, headers=_route(node)
    ) as resp:
        body = await resp.json(content_type=None)
        if isinstance(body, dict):
            _USED.update(str(body[k]) for k in ("access_token", "refresh_token", "id_token") if body.get(k))
        return resp.status, body


async def _admin_token(http: aiohttp.ClientSession, c: Cluster, node: str) -> str:
    status, body = await _token(
        http,
        c.url,
        "master",
        {
            "grant_type": "password",
            "client_id": "admin-cli",
            "username": c.admin_username,
            "password": c.admin_password,
        },
        node,
    )
    assert status == 200, body
    return str(body["access_token"])


async def _admin(
    http: aiohttp.ClientSession, c: Cluster, token: str, method: str, path: str, node: str, body: Any = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}", **_route(node)}
    async with http.request(method, f"{c.url}/admin/realms/{path}", json=body, headers=headers) as resp:
        text = await resp.text()
        return resp.status, (orjson.loads(text) if text.strip() else None)


def _claims(token: str) -> dict[str, Any]:
    import base64

    part = token.split(".")[1]
    return dict(orjson.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


def _wait_records(c: Cluster, node: str, match: Any, timeout: float = 20.0) -> list[dict[str, Any]]:
    """The records of node's ledger that match, once there is at least one (a record follows its response)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [r for r in ledger_records(c.sidecar(node).data_dir) if match(r["event"])]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_cluster_is_formed_and_sidecars_trust_only_haproxy(cluster: Cluster) -> None:
    """Both Keycloak nodes see a two-member cluster view; a sidecar ignores X-Forwarded-For from anyone but HAProxy."""
    assert [n.cluster_members() for n in cluster.nodes] == [2, 2]
    assert cluster.lb.server_states() == {"a": "UP", "b": "UP"}

    async def run() -> None:
        async with aiohttp.ClientSession() as http:
            # Straight to sidecar A from 127.0.0.1 (not HAProxy's 127.0.0.2) with a forged client address.
            form = {"grant_type": "password", "client_id": REALM.app.client_id, "client_secret": REALM.app.secret or ""}
            form |= {"username": REALM.bob.username, "password": "wrong-" + REALM.bob.password}
            url = f"{cluster.sidecar('a').url}/realms/{REALM.name}/protocol/openid-connect/token"
            async with http.post(url, data=form, headers={"X-Forwarded-For": "203.0.113.66"}) as resp:
                assert resp.status in (400, 401)
            async with http.post(
                f"{cluster.url}/realms/{REALM.name}/protocol/openid-connect/token",
                data=form,
                headers={"X-Forwarded-For": "203.0.113.77", **_route("a")},
            ) as resp:
                assert resp.status in (400, 401)

    asyncio.run(run())
    failed = _wait_records(cluster, "a", lambda e: e["type"] == "login.failed" and e.get("ip"), timeout=20)
    ips = [r["event"]["ip"] for r in failed]
    assert "203.0.113.66" not in ips, "a forwarded address from a peer that is not HAProxy was believed"
    # Through HAProxy the client is the address HAProxy saw (127.0.0.1); the forged hop before it is not believed
    # either, because HAProxy appends its own view and the sidecar reads right to left.
    assert ips.count("127.0.0.1") == 2 and PROXY_SOURCE not in ips, ips


def test_login_begun_on_a_completed_on_b(cluster: Cluster) -> None:
    """A browser login whose page came from A and whose form went to B is recorded on B with Alice and her session."""

    async def run() -> tuple[str, str]:
        jar = aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=[cluster.url])
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            query = urlencode(
                {
                    "client_id": REALM.app.client_id,
                    "redirect_uri": "http://127.0.0.1/callback",
                    "response_type": "code",
                    "scope": "openid",
                    "state": "s",
                    "nonce": "n",
                }
            )
            async with http.get(
                f"{cluster.url}/realms/{REALM.name}/protocol/openid-connect/auth?{query}", headers=_route("a")
            ) as resp:
                assert resp.status == 200
                page = await resp.text()
            m = _ACTION.search(page)
            assert m is not None, page[:500]
            async with http.post(
                html.unescape(m.group(1)),
                data={"username": REALM.alice.username, "password": REALM.alice.password, "credentialId": ""},
                headers=_route("b"),
                allow_redirects=False,
            ) as resp:
                assert resp.status == 302, await resp.text()
                code = parse_qs(urlsplit(resp.headers["Location"]).query)["code"][0]
            status, tokens = await _token(
                http,
                cluster.url,
                REALM.name,
                {
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": "http://127.0.0.1/callback",
                    "client_id": REALM.app.client_id,
                    "client_secret": REALM.app.secret or "",
                },
                "a",
            )
            assert status == 200, tokens
            claims = _claims(tokens["access_token"])
            return str(claims["sub"]), str(claims["sid"])

    alice, sid = asyncio.run(run())
    logins = _wait_records(cluster, "b", lambda e: e["type"] == "login.succeeded" and e.get("session") == sid)
    assert len(logins) == 1, [r["event"] for r in ledger_records(cluster.sidecar("b").data_dir)][-5:]
    event = logins[0]["event"]
    assert event["actor"]["id"] == alice and event["actor"].get("username") == REALM.alice.username, event
    assert not [
        r
        for r in ledger_records(cluster.sidecar("a").data_dir)
        if r["event"]["type"] == "login.succeeded" and r["event"].get("session") == sid
    ], "the login is B's: A only served the page"
    issued = _wait_records(cluster, "a", lambda e: e["type"] == "token.issued" and e.get("session") == sid)
    assert issued and issued[0]["event"]["actor"]["id"] == alice, "the code exchange on A names Alice and her session"


def test_admin_token_from_a_used_through_b(cluster: Cluster) -> None:
    """An admin-cli token (lightweight, no sub) from A used through B: B's record names the admin."""

    async def run() -> tuple[str, str]:
        async with aiohttp.ClientSession() as http:
            token = await _admin_token(http, cluster, "a")
            assert "sub" not in _claims(token), "admin-cli tokens are lightweight in Keycloak 26"
            status, users = await _admin(http, cluster, token, "GET", "master/users?username=admin&exact=true", "b")
            assert status == 200
            status, _ = await _admin(
                http, cluster, token, "POST", f"{REALM.name}/users", "b", {"username": "cluster-erin", "enabled": True}
            )
            assert status == 201
            return str(users[0]["id"]), token

    admin_id, _token_value = asyncio.run(run())
    created = _wait_records(
        cluster,
        "b",
        lambda e: (
            e["type"] == "user.created"
            and (e.get("target") or {}).get("username") == "cluster-erin"
            and e["details"].get("phase") != "intent"
        ),
    )
    assert len(created) == 1
    actor = created[0]["event"]["actor"]
    assert actor["id"] == admin_id and actor.get("username") == cluster.admin_username, actor


def test_session_created_on_a_revoked_on_b(cluster: Cluster) -> None:
    """Bob's session from a login on A, revoked by an admin through B: B's record names the admin as actor and Bob's session as target."""

    async def run() -> tuple[str, str]:
        async with aiohttp.ClientSession() as http:
            status, tokens = await _token(
                http,
                cluster.url,
                REALM.name,
                {
                    "grant_type": "password",
                    "client_id": REALM.app.client_id,
                    "client_secret": REALM.app.secret or "",
                    "username": REALM.bob.username,
                    "password": REALM.bob.password,
                    "scope": "openid",
                },
                "a",
            )
            assert status == 200, tokens
            sid = str(_claims(tokens["access_token"])["sid"])
            token = await _admin_token(http, cluster, "b")
            status, users = await _admin(http, cluster, token, "GET", "master/users?username=admin&exact=true", "b")
            assert status == 200
            status, _ = await _admin(http, cluster, token, "DELETE", f"{REALM.name}/sessions/{sid}", "b")
            assert status == 204
            status, left = await _admin(
                http,
                cluster,
                token,
                "GET",
                f"{REALM.name}/users/{_claims(tokens['access_token'])['sub']}/sessions",
                "a",
            )
            assert status == 200 and sid not in [s["id"] for s in left], "the revocation reached the whole cluster"
            return sid, str(users[0]["id"])

    sid, admin_id = asyncio.run(run())
    revoked = _wait_records(
        cluster,
        "b",
        lambda e: (
            e["type"] == "session.revoked"
            and (e.get("target") or {}).get("id") == sid
            and e["details"].get("phase") == "outcome"
        ),
    )
    assert len(revoked) == 1, [r["event"] for r in ledger_records(cluster.sidecar("b").data_dir)][-5:]
    event = revoked[0]["event"]
    assert event["target"]["kind"] == "session" and event["outcome"] == "succeeded", event
    assert event["actor"]["id"] == admin_id and event["actor"].get("username") == cluster.admin_username, event
    # The record's own session is the admin's (the one the request was made in), not the revoked one.
    assert event.get("session") and event["session"] != sid


def test_refresh_token_from_a_revoked_on_b(cluster: Cluster) -> None:
    """A refresh token issued through A and revoked through B: B asks Keycloak (introspection, the client's own
    credentials) before the revocation, and its record names Alice as a succeeded revocation."""

    async def run() -> tuple[str, str]:
        async with aiohttp.ClientSession() as http:
            form = {"grant_type": "password", "client_id": REALM.app.client_id, "client_secret": REALM.app.secret or ""}
            form |= {"username": REALM.alice.username, "password": REALM.alice.password, "scope": "openid"}
            status, tokens = await _token(http, cluster.url, REALM.name, form, "a")
            assert status == 200, tokens
            revoke = {
                "client_id": REALM.app.client_id,
                "client_secret": REALM.app.secret or "",
                "token": tokens["refresh_token"],
                "token_type_hint": "refresh_token",
            }
            async with http.post(
                f"{cluster.url}/realms/{REALM.name}/protocol/openid-connect/revoke", data=revoke, headers=_route("b")
            ) as resp:
                assert resp.status == 200
            status, _ = await _token(
                http,
                cluster.url,
                REALM.name,
                {
                    "grant_type": "refresh_token",
                    "client_id": REALM.app.client_id,
                    "client_secret": REALM.app.secret or "",
                    "refresh_token": tokens["refresh_token"],
                },
                "a",
            )
            assert status == 400, "the revocation through B holds on A"
            claims = _claims(tokens["access_token"])
            return str(claims["sub"]), str(claims["sid"])

    alice, sid = asyncio.run(run())
    revoked = _wait_records(cluster, "b", lambda e: e["type"] == "token.revoked" and e.get("session") == sid)
    assert len(revoked) == 1, [r["event"] for r in ledger_records(cluster.sidecar("b").data_dir)][-3:]
    event = revoked[0]["event"]
    assert event["outcome"] == "succeeded" and event["actor"].get("id") == alice, event
    assert event["details"].get("attributed_by") == "token", event


def _origins_trust(c: Cluster, path: Path) -> Path:
    path.write_bytes(OriginsTrust.of([load_trust(s.trust) for s in c.sidecars], HEARTBEAT_S).encode())
    return path


def _cli(c: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(c.sidecars[0].env)
    return subprocess.run(
        [sys.executable, "-m", "sidecar", *args], capture_output=True, text=True, env=env, timeout=300, check=False
    )


def _replicated(c: Cluster, timeout: float = 60.0) -> None:
    """Until each sidecar's store prefix holds a checkpoint as large as its local ledger."""
    deadline = time.monotonic() + timeout
    client = c.bucket.client()
    try:
        while True:
            behind = []
            for s in c.sidecars:
                local = len(ledger_records(s.data_dir))
                pages = client.get_paginator("list_objects_v2").paginate(
                    Bucket=c.bucket.bucket, Prefix=f"{s.prefix}/checkpoints/"
                )
                sizes = [int(o["Key"].rsplit("/", 1)[1].split("-")[0]) for p in pages for o in p.get("Contents", [])]
                if max(sizes, default=0) < local:
                    behind.append((s.name, local, max(sizes, default=0)))
            if not behind:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"replication did not catch up: {behind}")
            time.sleep(0.3)
    finally:
        client.close()


def test_one_bucket_verifies_every_origin_and_one_timeline(cluster: Cluster, tmp_path: Path) -> None:
    """`verify s3://ledger/` with an origins trust file finds both origins intact; `timeline` merges them by time."""
    _replicated(cluster)
    trust = _origins_trust(cluster, tmp_path / "origins.json")
    checked = _cli(cluster, "verify", cluster.store_url(""), "--trust", str(trust), "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    out = orjson.loads(checked.stdout)
    assert out["verdict"] == "intact" and sorted(o["origin"] for o in out["origins"]) == sorted(
        s.origin for s in cluster.sidecars
    )
    bundles = tmp_path / "bundles"
    pulled = _cli(cluster, "pull", cluster.store_url(""), "--out", str(bundles), "--json")
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    assert sorted(orjson.loads(pulled.stdout)["origins"]) == ["node-a", "node-b"]
    timeline = _cli(cluster, "timeline", str(bundles), "--trust", str(trust), "--json")
    assert timeline.returncode == 0, timeline.stderr
    lines = [orjson.loads(line) for line in timeline.stdout.splitlines()]
    ordering, rows = lines[0]["ordering"], lines[1:]
    print(f"timeline of {len(rows)} records: {ordering}; {sum(r['order_uncertain'] for r in rows)} marked uncertain")
    assert ordering["origins"] == sorted(s.origin for s in cluster.sidecars)
    assert {r["origin"] for r in rows} == set(ordering["origins"])
    stamps = [int(r["ts"]) for r in rows]
    assert stamps == sorted(stamps), "one order by time"
    for origin in ordering["origins"]:
        seqs = [r["seq"] for r in rows if r["origin"] == origin]
        assert seqs == sorted(seqs) and len(seqs) == len(set(seqs)), "each origin keeps its own seq order"
    # The login of the earlier test crossed nodes within a second: its skew pairs are measured.
    assert ordering["causal_pairs"] >= 1


WORKLOAD_ACTIONS = 80  # a lean share of test_workload's 400 (same seed, same mix)


@dataclass
class _ThroughTheCluster:
    """What the seeded workload needs of "the sidecar": the public URL (HAProxy) and every record of every origin."""

    base_url: str
    data_dirs: list[Path]

    def records(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for i, data in enumerate(self.data_dirs):  # seqs made distinct across origins (the oracle keys by seq)
            out.extend({**r, "seq": int(r["seq"]) + i * 10**9} for r in ledger_records(data))
        return sorted(out, key=lambda r: int(r["ts"]))


@pytest.mark.browser
async def test_seeded_workload_through_haproxy_across_both_nodes(
    cluster: Cluster, secrets_seen: set[str], tmp_path: Path
) -> None:
    """test_workload's seeded actions through HAProxy over both nodes: every Keycloak event has a record in some origin, and no record claims a success Keycloak did not see."""
    since_ms, since_ns = oracle.now_ms() - 1, time.time_ns()
    union = _ThroughTheCluster(cluster.url, [s.data_dir for s in cluster.sidecars])
    work = Workload(cluster.nodes[0], union, secrets_seen, tmp_path)  # type: ignore[arg-type]  # duck-typed sidecar
    started = time.monotonic()
    await work.run(WORKLOAD_ACTIONS)
    print(f"\ncluster workload: {sum(work.done.values())} actions in {time.monotonic() - started:.0f} s")
    await asyncio.sleep(1.0)
    token = await oracle.admin_token(cluster.nodes[1].base_url, ADMIN_USERNAME, ADMIN_PASSWORD)
    user_events, admin_events = await oracle.keycloak_events(cluster.nodes[1].base_url, token, REALM.name, since_ms)
    result = oracle.match(user_events, admin_events, union.records(), REALM.name, since_ns)
    print(f"oracle (cluster): {len(user_events)} user events, {len(admin_events)} admin events\n{result.render()}")
    per_node = {s.name: sum(int(r["ts"]) >= since_ns for r in ledger_records(s.data_dir)) for s in cluster.sidecars}
    print(f"records per node: {per_node}")
    assert all(per_node.values()), "HAProxy spread the workload over both nodes"
    assert not result.unmatched, f"{len(result.unmatched)} Keycloak events without a record"
    assert not result.phantom, f"{len(result.phantom)} records claim successes Keycloak did not see"


def _drift_status(c: Cluster) -> dict[str, dict[str, Any]]:
    import urllib.request

    out = {}
    for s in c.sidecars:
        with urllib.request.urlopen(f"{s.url}/.sidecar/drift", timeout=10) as resp:
            out[s.name] = orjson.loads(resp.read())
    return out


def test_a_change_through_a_sidecar_is_no_drift_and_one_around_every_sidecar_is_drift_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A user update made through sidecar A is drift for no origin; one made straight on Keycloak node B's own port is exactly one drift.detected record across both origins in the bucket (pulled and read verified)."""
    from sidecar.audit.origins import bundle_name
    from sidecar.audit.reading import read_verified

    since_ms = oracle.now_ms() - 1

    async def changes() -> tuple[str, str, list[dict[str, Any]]]:
        async with aiohttp.ClientSession() as http:
            token = await _admin_token(http, cluster, "a")
            ids = {}
            for user in (REALM.carol, REALM.dave):
                status, found = await _admin(
                    http, cluster, token, "GET", f"{REALM.name}/users?username={user.username}&exact=true", "a"
                )
                assert status == 200 and len(found) == 1, found
                ids[user.username] = str(found[0]["id"])
            through, around = ids[REALM.carol.username], ids[REALM.dave.username]
            status, body = await _admin(
                http, cluster, token, "PUT", f"{REALM.name}/users/{through}", "a", body={"firstName": "ThroughA"}
            )
            assert status == 204, body
            # Around every sidecar: node b's own HTTP port, with a token from that port.
            direct = await oracle.admin_token(cluster.nodes[1].base_url, ADMIN_USERNAME, ADMIN_PASSWORD)
            url = f"{cluster.nodes[1].base_url}/admin/realms/{REALM.name}/users/{around}"
            async with http.put(
                url, json={"firstName": "AroundAll"}, headers={"Authorization": f"Bearer {direct}"}
            ) as r:
                assert r.status == 204, await r.text()
            _user_events, admin_events = await oracle.keycloak_events(
                cluster.nodes[1].base_url, direct, REALM.name, since_ms
            )
        return through, around, admin_events

    through, around, admin_events = asyncio.run(changes())
    by_path = {e.get("resourcePath"): e for e in admin_events if e.get("operationType") == "UPDATE"}
    through_ev, around_ev = by_path[f"users/{through}"], by_path[f"users/{around}"]
    # Both monitors have decided both events and nothing waits for an owner's record.
    deadline = time.monotonic() + 90
    newest = max(int(through_ev["time"]), int(around_ev["time"]))
    while True:
        status = _drift_status(cluster)
        settled = all(
            (st["decided_ms"] or 0) >= newest and around_ev["id"] not in st["handed_to_owner"] for st in status.values()
        )
        if settled or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    print(
        f"drift monitors: { {n: {k: st[k] for k in ('decided_ms', 'deferred', 'handed_to_owner', 'last_error')} for n, st in status.items()} }"
    )
    logs = {
        s.name: [line for line in s.log_tail(4000).splitlines() if '"sidecar.access"' not in line][-25:]
        for s in cluster.sidecars
    }
    assert settled, (through_ev, around_ev, status, logs)
    _replicated(cluster)
    bundles = tmp_path / "bundles"
    pulled = _cli(cluster, "pull", cluster.store_url(""), "--out", str(bundles), "--json")
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    drift: list[tuple[str, dict[str, Any]]] = []
    for s in cluster.sidecars:
        records = read_verified(bundles / bundle_name(s.prefix), load_trust(s.trust))
        drift += [(s.name, r["event"]) for r in records if r["event"]["type"] == "drift.detected"]
    named = [(n, e) for n, e in drift if (e["details"].get("keycloak_event") or {}).get("id") == around_ev["id"]]
    assert len(named) == 1, f"one drift record for the change around every sidecar, got {named}"
    assert named[0][1]["details"]["kind"] == "unrecorded-change" and named[0][1]["target"]["id"] == around
    about_through = [
        (n, e)
        for n, e in drift
        if (e["details"].get("keycloak_event") or {}).get("id") == through_ev["id"]
        or (
            (e.get("target") or {}).get("id") == through
            and int((e["details"].get("keycloak_event") or {}).get("time") or 0) >= since_ms
        )
    ]
    assert not about_through, f"a change made through sidecar A is drift for no origin: {about_through}"
    print(f"drift records in the bucket: {len(drift)}; the bypass recorded once, by node {named[0][0]}")


def _verify_alone(c: Cluster, node: str) -> dict[str, Any]:
    s = c.sidecar(node)
    done = _cli(c, "verify", str(s.data_dir), "--trust", str(s.trust), "--json")
    assert done.returncode in (0, 1), done.stderr
    return dict(orjson.loads(done.stdout))


def test_a_sidecar_killed_under_load(cluster: Cluster, tmp_path: Path) -> None:
    """SIGKILL sidecar A under load: HAProxy fails over to B, every acknowledged login is in a ledger, A's
    ledger verifies alone, and A restarted recovers and replicates again."""
    acked: list[tuple[str, float]] = []  # (session id, when the 200 arrived)
    refused: list[str] = []
    killed_at: list[float] = []
    stop, progress = asyncio.Event(), asyncio.Event()
    users = [REALM.alice, REALM.carol]

    async def worker(i: int) -> None:
        async with aiohttp.ClientSession() as http:
            while not stop.is_set():
                user = users[i % len(users)]
                form = {
                    "grant_type": "password",
                    "client_id": REALM.app.client_id,
                    "client_secret": REALM.app.secret or "",
                }
                form |= {"username": user.username, "password": user.password, "scope": "openid"}
                try:
                    status, body = await _token(http, cluster.url, REALM.name, form, None)
                except aiohttp.ClientError as exc:
                    refused.append(repr(exc))
                    continue
                if status == 200:
                    acked.append((str(_claims(body["access_token"])["sid"]), time.monotonic()))
                    progress.set()
                else:
                    refused.append(str(status))

    async def until(done: Any) -> None:
        while not done():
            progress.clear()
            await progress.wait()

    async def run() -> None:
        tasks = [asyncio.ensure_future(worker(i)) for i in range(4)]
        try:
            await until(lambda: len(acked) >= 12)
            cluster.sidecar("a").kill()
            killed_at.append(time.monotonic())
            await asyncio.to_thread(cluster.lb.wait_state, "a", "DOWN", 20)
            await until(lambda: sum(t > killed_at[0] for _, t in acked) >= 12)
        finally:
            stop.set()
            await asyncio.gather(*tasks)

    asyncio.run(run())
    after = sum(t > killed_at[0] for _, t in acked)
    print(f"failover: {len(acked)} acknowledged ({after} after the kill), {len(refused)} refused: {refused[:5]}")

    # Every acknowledged login is a record in A's or B's ledger (A's as it was left on disk by the kill).
    sessions: dict[str, set[str]] = {}
    for s in cluster.sidecars:
        for r in ledger_records(s.data_dir):
            if r["event"]["type"] in ("token.issued", "login.succeeded") and r["event"].get("session"):
                sessions.setdefault(r["event"]["session"], set()).add(s.name)
    lost = [sid for sid, _ in acked if sid not in sessions]
    assert not lost, f"{len(lost)} acknowledged logins have no record: {lost[:3]}"
    assert any(sessions[sid] == {"a"} for sid, t in acked if t < killed_at[0]), "A served some before the kill"
    assert all(sessions[sid] == {"b"} for sid, t in acked if t > killed_at[0] + 5), "after failover only B serves"

    report = _verify_alone(cluster, "a")
    assert report["verdict"] == "intact", report["findings"]

    a = cluster.sidecar("a")
    a.start()
    cluster.lb.wait_state("a", "UP", 30)

    async def through_a() -> None:
        async with aiohttp.ClientSession() as http:
            form = {"grant_type": "password", "client_id": REALM.app.client_id, "client_secret": REALM.app.secret or ""}
            form |= {"username": REALM.dave.username, "password": REALM.dave.password, "scope": "openid"}
            status, body = await _token(http, cluster.url, REALM.name, form, "a")
            assert status == 200, body

    asyncio.run(through_a())
    _replicated(cluster)
    trust = _origins_trust(cluster, tmp_path / "origins.json")
    checked = _cli(cluster, "verify", cluster.store_url(""), "--trust", str(trust), "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_no_secret_in_anything_the_cluster_wrote(cluster: Cluster, secrets_seen: set[str]) -> None:
    """No password, client secret or token the cluster tests used is in either sidecar's ledger, data or log, or in the bucket."""
    used = {*secrets_seen, cluster.admin_password, cluster.bucket.secret_key, *_USED}
    assert len(_USED) >= 20, "the module should have collected the tokens it received"
    files = [p for s in cluster.sidecars for p in s.data_dir.parent.rglob("*") if p.is_file()]
    files += [p for p in (cluster.worm.work_dir / "root").rglob("*") if p.is_file()]
    assert any(p.suffix == ".seg" for p in files) and any(p.name == "sidecar.log" for p in files)
    blobs = {p: p.read_bytes() for p in files}
    leaks = [(str(p), v[:6] + "...") for p, blob in blobs.items() for v in used if v and v.encode() in blob]
    assert not leaks, f"secrets found at rest: {leaks}"
