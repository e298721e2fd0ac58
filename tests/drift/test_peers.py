"""Drift across a cluster (sidecar.drift.peers and the monitor's cluster rules) over real signed ledgers.

Each peer is a real ledger written by the sidecar's own writer, heartbeating, and replicated by the
real replicator into a directory store under its own prefix; the follower reads it back from there.
Keycloak is the in-memory admin API of test_monitor.py (our own fake of an outside reader).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

from sidecar import metrics
from sidecar.audit.origins import OriginsTrust, parent_url
from sidecar.clock import SystemClock
from sidecar.core.trust import TrustAnchor
from sidecar.drift.monitor import DriftConfig, DriftMonitor
from sidecar.drift.peers import PeerFollower
from sidecar.drift.reconcile import match
from sidecar.ledger.keystore import KeyStore
from sidecar.ledger.writer import Commit, Ledger, LedgerConfig
from sidecar.replicate.drivers import open_store
from sidecar.replicate.replicator import Replicator
from sidecar.testing import flip_byte, segment_paths
from tests.drift.test_monitor import FakeKeycloak, FakeLedger

OWN, PEER = "cluster.test/a", "cluster.test/b"
T = TypeVar("T")


@dataclass
class LivePeer:
    """Another node: its own ledger (heartbeating) replicated under <store>/node-b by `shipped()`."""

    ledger: Ledger
    replicator: Replicator
    anchor: TrustAnchor
    announced: int = -1  # newest seq the writer announced to its subscribers (the replicator among them)
    told: asyncio.Event = field(default_factory=asyncio.Event)

    def on_commit(self, commit: Commit) -> None:
        self.announced = max([self.announced, *(seq for seq, _off, _body in commit.records)])
        self.told.set()

    async def append(self, event: dict[str, Any]) -> None:
        seq = (await self.ledger.append(event)).seq
        while self.announced < seq:  # the writer answers first, then tells its subscribers
            self.told.clear()
            await self.told.wait()

    async def write(self, event: dict[str, Any]) -> None:
        await self.append(event)
        await self.shipped()

    async def shipped(self) -> None:
        await self.replicator.step()


@asynccontextmanager
async def live_peer(
    tmp: Path, store: Path, *, heartbeat_s: float = 0.2, store_url: str | None = None
) -> AsyncIterator[LivePeer]:
    data = tmp / "peer-b"
    anchor = KeyStore(data).init(PEER)
    ledger = await Ledger.open(
        data, config=LedgerConfig(heartbeat_s=heartbeat_s, fsync=False, segment_max_bytes=4096), clock=SystemClock()
    )
    target = open_store(store_url or str(store / "node-b"))
    rep = Replicator(data, target, interval_s=0.05, durable_end=ledger.durable_end)
    peer = LivePeer(ledger, rep, anchor)
    ledger.subscribers += [rep.on_commit, peer.on_commit]  # wired as sidecar.app wires it; stepped by the test
    try:
        yield peer
    finally:
        await ledger.close()
        await rep.stop()
        await target.close()


async def _shipping(peer: LivePeer, work: Awaitable[T]) -> T:
    """Run work while node b replicates every 50 ms (its heartbeats reach the bucket, as a running node's do)."""
    task = asyncio.ensure_future(work)
    while not task.done():
        await peer.shipped()
        await asyncio.wait([task], timeout=0.05)
    return task.result()


def _trust(tmp: Path, peer: TrustAnchor, heartbeat_s: float = 0.2) -> OriginsTrust:
    own = KeyStore(tmp / "own-a").init(OWN)
    return OriginsTrust.of([own, peer], heartbeat_s)


def _follower(tmp: Path, store: Path, trust: OriginsTrust) -> PeerFollower:
    return PeerFollower(
        trust, OWN, open_store(str(store)), lambda prefix: open_store(str(store / prefix)), tmp / "cache"
    )


def _role_granted(actor: str, user: str, path: str) -> dict[str, Any]:
    return {
        "type": "role.granted",
        "outcome": "succeeded",
        "realm": "r",
        "actor": {"id": actor, "kind": "user"},
        "target": {"id": user, "kind": "user"},
        "details": {"path": path, "after": {"realm_roles": ["admin"], "client_roles": {}, "groups": []}},
    }


def _admin_event(ident: str, user: str, at_ms: int) -> dict[str, Any]:
    return {
        "id": ident,
        "time": at_ms,
        "operationType": "CREATE",
        "resourceType": "REALM_ROLE_MAPPING",
        "resourcePath": f"users/{user}/role-mappings/realm",
        "authDetails": {"userId": "adm"},
    }


async def test_follower_reads_only_verified_records_and_their_coverage(tmp_path: Path) -> None:
    """The follower finds the peer's prefix by its origin, takes each verified record once, in seq order, and its coverage follows the peer's heartbeat checkpoints."""
    store = tmp_path / "store"
    async with live_peer(tmp_path, store) as peer:
        for i in range(30):  # several segments (4 KiB each), sealed ones and the open one from tail chunks
            await peer.append(_role_granted("adm", f"u{i}", f"users/u{i}/role-mappings/realm"))
        await peer.shipped()
        follower = _follower(tmp_path, store, _trust(tmp_path, peer.anchor))
        await follower.refresh()
        first = follower.take()
        assert follower.peers[PEER].prefix == "node-b"
        assert len(segment_paths(tmp_path / "peer-b")) > 2
        seqs = [int(r["seq"]) for r in first]
        assert seqs == list(range(len(seqs))) and all(r["_origin"] == PEER for r in first)
        assert sum(r["event"]["type"] == "role.granted" for r in first) == 30
        covered = follower.peers[PEER].coverage_ns
        # a checkpoint's time is taken as its batch starts: every record written before it is in hand
        assert covered is not None and int(first[0]["ts"]) <= covered <= time.time_ns()
        await peer.write(_role_granted("adm", "late", "users/late/role-mappings/realm"))
        await follower.refresh()
        more = follower.take()
        assert [r["event"]["target"]["id"] for r in more if r["event"]["type"] == "role.granted"] == ["late"]
        assert int(more[0]["seq"]) == seqs[-1] + 1
        # idle: only heartbeat checkpoints reach the bucket, and they move coverage on
        before = follower.peers[PEER].coverage_ns or 0
        await asyncio.sleep(0.5)
        await peer.shipped()
        await follower.refresh()
        assert (follower.peers[PEER].coverage_ns or 0) > max(before, int(more[-1]["ts"]))
        assert follower.covered(before) and not follower.stalled(PEER)


async def test_a_peer_whose_bytes_do_not_verify_is_never_trusted(tmp_path: Path) -> None:
    """A peer signed by another key than the trust file's, or whose stored segment was altered, is untrusted: no records, counted, and it holds back nothing."""
    store = tmp_path / "store"
    async with live_peer(tmp_path, store) as peer:
        for i in range(30):
            await peer.append(_role_granted("adm", f"u{i}", f"users/u{i}/role-mappings/realm"))
        await peer.shipped()
        impostor = KeyStore(tmp_path / "impostor").init(PEER)  # same origin name, another key
        wrong = _follower(tmp_path / "w", store, _trust(tmp_path / "w", impostor))
        before = metrics.DRIFT_PEER_UNTRUSTED.labels(origin=PEER)._value.get()
        await wrong.refresh()
        assert wrong.take() == [] and wrong.peers[PEER].untrusted is not None
        assert "key" in (wrong.peers[PEER].untrusted or "")
        assert metrics.DRIFT_PEER_UNTRUSTED.labels(origin=PEER)._value.get() == before + 1
        assert wrong.stalled(PEER) and wrong.covered(time.time_ns() + 10**12)
        await wrong.refresh()  # never read again
        assert wrong.take() == []

        good = _follower(tmp_path / "g", store, _trust(tmp_path / "g", peer.anchor))
        await good.refresh()
        assert good.take() and good.peers[PEER].untrusted is None
        flip_byte(segment_paths(store / "node-b")[0], 200)  # behind the replicator's back
        tampered = _follower(tmp_path / "t", store, _trust(tmp_path / "t", peer.anchor))
        await tampered.refresh()
        assert tampered.take() == [] and tampered.peers[PEER].untrusted is not None


def test_stall_coverage_and_ownership_rules(tmp_path: Path) -> None:
    """A silent peer holds decisions back until the trust file's max silence passes; owners spread over both origins, and a stalled one is passed over."""
    now = [10**18]
    peer = KeyStore(tmp_path / "b").init(PEER)
    trust = OriginsTrust.of([KeyStore(tmp_path / "a").init(OWN), peer], heartbeat_s=1.0)  # max silence 3 s
    f = PeerFollower(trust, OWN, open_store(str(tmp_path / "s")), lambda p: open_store(str(tmp_path / "s" / p)),
                     tmp_path / "c", now_ns=lambda: now[0])  # fmt: skip
    assert not f.stalled(PEER) and not f.covered(now[0] - 1)  # never seen yet, but not silent for long
    f.peers[PEER].coverage_ns = now[0] + 500
    assert f.covered(now[0] + 500) and not f.covered(now[0] + 501)
    owners = {f.owner(f"event-{i}") for i in range(40)}
    assert owners == {OWN, PEER}
    mine = [f"event-{i}" for i in range(40) if f.owner(f"event-{i}") == OWN]
    assert all(f.owner(k) == OWN for k in mine), "deterministic"
    now[0] += 4 * 10**9  # silent past 3 s: stalled
    assert f.stalled(PEER) and f.covered(now[0] + 10**9)
    assert {f.owner(f"event-{i}") for i in range(40)} == {OWN}
    with pytest.raises(ValueError, match="own origin"):
        PeerFollower(OriginsTrust.of([peer], 1.0), OWN, f.root, f.open_prefix, tmp_path / "c")


def _cluster_monitor(tmp: Path, store: Path, trust: OriginsTrust, kc: FakeKeycloak) -> tuple[FakeLedger, DriftMonitor]:
    led = FakeLedger()
    mon = DriftMonitor(kc, led.append, tmp / "a", DriftConfig(rate_per_s=0, grace_s=0.2), client_id="robot")
    (tmp / "a").mkdir(exist_ok=True)
    mon.peers = _follower(tmp, store, trust)
    led.monitor = mon
    return led, mon


def _ids_owned(f: PeerFollower, origin: str, count: int) -> list[str]:
    return [k for k in (f"kc-{i}" for i in range(200)) if f.owner(k) == origin][:count]


async def test_a_change_through_the_peer_is_no_drift_and_one_around_every_sidecar_is_recorded_once(
    tmp_path: Path,
) -> None:
    """An event the peer recorded matches the peer's record; an unrecorded one is recorded only by its owner, and the other node settles it when the owner's record shows."""
    store = tmp_path / "store"
    kc = FakeKeycloak()
    async with live_peer(tmp_path, store) as peer:
        trust = _trust(tmp_path, peer.anchor)
        led, mon = _cluster_monitor(tmp_path, store, trust, kc)
        await mon.baseline()
        assert mon.peers is not None
        through_b, = _ids_owned(mon.peers, OWN, 1)  # fmt: skip
        mine, theirs = _ids_owned(mon.peers, OWN, 2)[1], _ids_owned(mon.peers, PEER, 1)[0]
        at = int(time.time() * 1000)
        kc.admin_events += [_admin_event(through_b, "u2", at), _admin_event(mine, "u1", at),
                            _admin_event(theirs, "u1", at)]  # fmt: skip
        await peer.write(_role_granted("adm", "u2", "users/u2/role-mappings/realm"))  # made through node b
        # Until the peer's checkpoints cover event time + grace nothing is decided.
        deferred = await mon.poll()
        while deferred:
            await asyncio.sleep(0.1)
            await peer.shipped()
            deferred = await mon.poll()
        drift = led.of("drift.detected")
        assert [d["details"]["keycloak_event"]["id"] for d in drift] == [mine], "only what A owns, once"
        assert mon._handed.keys() == {theirs}
        # B (the owner) records its own: A sees the record in B's ledger and lets the event go.
        await peer.write(
            {
                "type": "drift.detected",
                "outcome": "succeeded",
                "realm": "r",
                "target": {"id": "u1", "kind": "user"},
                "details": {"kind": "unrecorded-change", "keycloak_event": {"id": theirs}},
            }
        )
        await mon.poll()
        assert mon._handed == {} and len(led.of("drift.detected")) == 1
        await mon.poll()
        assert len(led.of("drift.detected")) == 1, "each event once"


async def test_the_owner_stalled_so_the_other_node_records(tmp_path: Path) -> None:
    """An unrecorded event owned by a peer that goes silent past the heartbeat bound is recorded by this node, once."""
    store = tmp_path / "store"
    kc = FakeKeycloak()
    async with live_peer(tmp_path, store, heartbeat_s=0.1) as peer:
        trust = _trust(tmp_path, peer.anchor, heartbeat_s=0.1)  # silence allowed: 0.3 s
        led, mon = _cluster_monitor(tmp_path, store, trust, kc)
        await mon.baseline()
        assert mon.peers is not None
        theirs = _ids_owned(mon.peers, PEER, 1)[0]
        kc.admin_events.append(_admin_event(theirs, "u1", int(time.time() * 1000)))
        deferred = 1
        while deferred:
            await asyncio.sleep(0.05)
            await peer.shipped()
            deferred = await mon.poll()
        assert led.of("drift.detected") == [] and theirs in mon._handed
        await asyncio.sleep(0.5)  # node b's replication stops (no step): its coverage no longer moves
        await mon.poll()
        drift = led.of("drift.detected")
        assert [d["details"]["keycloak_event"]["id"] for d in drift] == [theirs]
        await mon.poll()
        assert len(led.of("drift.detected")) == 1


async def test_sweep_replays_the_peers_records_and_one_origin_records_a_mismatch(tmp_path: Path) -> None:
    """A sweep waits for the peer's coverage, replays the peer's recorded grant (no drift), and records a change around every sidecar only if this node owns it."""
    store = tmp_path / "store"
    kc = FakeKeycloak()
    async with live_peer(tmp_path, store) as peer:
        led, mon = _cluster_monitor(tmp_path, store, _trust(tmp_path, peer.anchor), kc)
        await mon.baseline()
        assert mon.peers is not None
        kc.users["u2"]["roles"].append("admin")
        await peer.write(_role_granted("adm", "u2", "users/u2/role-mappings/realm"))  # through node b
        assert await _shipping(peer, mon.sweep()) == []
        kc.users["u1"]["enabled"] = False  # around every sidecar
        found = await _shipping(peer, mon.sweep())
        assert not mon.peers.stalled(PEER), "the sweeps waited for the peer's coverage, not for its stall"
        assert [(m.id, m.field) for m in found] == [("u1", "enabled")]
        owner = mon.peers.owner(found[0].key)
        recorded = led.of("drift.detected")
        assert len(recorded) == (1 if owner == OWN else 0)
        if owner == PEER:  # the owner's record shows: this node never records it
            await peer.write(
                {
                    "type": "drift.detected",
                    "outcome": "succeeded",
                    "realm": "r",
                    "target": {"id": "u1", "kind": "user", "name": "alice"},
                    "details": {"kind": "state-mismatch", "field": "enabled", "expected": True, "live": False},
                }
            )
        await _shipping(peer, mon.sweep())
        assert len(led.of("drift.detected")) == (1 if owner == OWN else 0)


def test_the_peers_setting_is_checked_at_start(tmp_path: Path) -> None:
    """`drift_peers` must be an origins trust file listing this node's origin, with a bucket to read; the bucket defaults to the store's parent."""
    from sidecar.app import Settings, _peer_follower
    from sidecar.errors import ConfigError

    peer = KeyStore(tmp_path / "b").init(PEER)
    origins = tmp_path / "origins.json"
    origins.write_bytes(_trust(tmp_path, peer).encode())
    base = Settings(
        upstream="http://127.0.0.1:9", data_dir=tmp_path / "a", store_url=str(tmp_path / "bucket" / "node-a")
    )
    root, follower = _peer_follower(replace(base, drift_peers=origins), OWN)
    assert root.url.rstrip("/").endswith("bucket") and set(follower.peers) == {PEER}
    with pytest.raises(ConfigError, match="not an origins trust file"):
        _peer_follower(replace(base, drift_peers=tmp_path / "b" / "trust.json"), OWN)
    with pytest.raises(ConfigError, match="does not list this ledger's origin"):
        _peer_follower(replace(base, drift_peers=origins), "cluster.test/z")
    with pytest.raises(ConfigError, match="needs the bucket"):
        _peer_follower(replace(base, drift_peers=origins, store_url=None), OWN)


def test_a_peers_encrypted_username_matches_only_an_event_that_names_no_user_id() -> None:
    """A peer's record whose username is ciphertext (its node's subject key) pairs with a Keycloak event naming only a username, never one naming a user id."""
    sealed = {"ct": "AAAA", "kc-enc": 1, "n": "AAAAAAAAAAAAAAAA", "sub": "name:x"}
    rec = {
        "seq": 7,
        "ts": "1",
        "_origin": PEER,
        "event": {
            "type": "login.failed",
            "outcome": "failed",
            "realm": "r",
            "client": "web",
            "actor": {"username": sealed, "kind": "user"},
        },
    }
    by_name = {"id": "k1", "time": 1, "type": "LOGIN_ERROR", "clientId": "web", "details": {"username": "mallory"}}
    by_id = {**by_name, "id": "k2", "userId": "u9"}
    assert match([by_name], [], [rec], "r", 0).unmatched == []
    assert match([by_id], [], [rec], "r", 0).unmatched == [by_id]
    used = match([by_name], [], [rec], "r", 0).used
    assert used == {(PEER, 7)}, "a peer's record is keyed by origin and seq"
    assert parent_url("s3://ledger/node-a?endpoint=http://127.0.0.1:9&region=r") == (
        "s3://ledger/?endpoint=http://127.0.0.1:9&region=r"
    )


def _login(seq: int, session: str, *, actor: dict[str, Any], origin: str | None = PEER) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "seq": seq,
        "ts": str(seq),
        "event": {
            "type": "login.succeeded",
            "outcome": "succeeded",
            "realm": "r",
            "client": "web",
            "session": session,
            "actor": actor,
        },
    }
    if origin is not None:
        rec["_origin"] = origin
    return rec


def test_a_keycloak_session_pairs_first_and_names_a_sealed_actor() -> None:
    """An event pairs with the record of its own Keycloak session before any other, so a missing record leaves its own event unmatched; a peer's record naming the user only by a sealed username pairs by session."""
    sealed = {"ct": "AAAA", "kc-enc": 1, "n": "AAAAAAAAAAAAAAAA", "sub": "name:x"}
    first = {"id": "k1", "time": 1, "type": "LOGIN", "clientId": "web", "userId": "u1", "sessionId": "s1"}
    first["details"] = {"username": "alice"}
    second = {**first, "id": "k2", "time": 2, "sessionId": "s2"}
    only_second = [_login(5, "s2", actor={"id": "u1", "kind": "user"}, origin=None)]
    assert match([first, second], [], only_second, "r", 0).unmatched == [first]
    by_name = [_login(7, "s1", actor={"username": sealed, "kind": "user"})]
    assert match([first], [], by_name, "r", 0).unmatched == []
    assert match([second], [], by_name, "r", 0).unmatched == [second], "another session: not this event's record"
