"""The other nodes' ledgers, read back from the one bucket, for a drift monitor in a cluster.

In a Keycloak cluster every node has its own sidecar, ledger, origin and key, and Keycloak's event
store is shared: a node's drift monitor sees every node's events, so it must reconcile them against
the union of every origin's ledger (docs/operations.md §10.5). `PeerFollower` is that union's
remote half. For each origin of the origins trust file (kc-ledger-origins/1) other than its own:

* **Finding it.** The bucket's ledger prefixes are discovered (`sidecar.audit.origins.discover`);
  a prefix belongs to the origin its checkpoints name. The claim is only a hint: everything read
  under it is verified against that origin's key from the trust file.
* **Reading it, incrementally.** Each `refresh()` pulls the prefix into ``<cache>/<prefix>/``
  (`sidecar.audit.pull`: objects already fetched are not fetched again; the open segment is
  rebuilt from its tail chunks) and scans only the segments from the last one it stopped in,
  all in a worker thread with an event loop of its own (the proxy's loop is never held up).
* **Verifying it, on every read.** A segment's records are used only when a signed checkpoint of
  that segment covers them, the checkpoint's root recomputed from the records and the header's
  prefix range, and its key descends from the trust file's key through checked `key.rotated`
  records (`sidecar.audit.reading.SegmentProver`, the lookup reader's check). Records are taken
  in seq order without gaps. A prefix whose bytes do not verify is never trusted again in this run:
  it is logged, counted in `sidecar_drift_peer_untrusted_total`, and its records are dropped.
* **Coverage.** A peer's coverage is the time of its newest verified checkpoint: every record
  it wrote before that is in hand. Heartbeat checkpoints advance it while the peer is idle.
* **Stalled.** A peer whose coverage is older than the trust file's ``max_silence_s`` (three
  heartbeats by default), counted from this follower's start when it is newer, is stalled: it no
  longer holds back decisions (`covered()`), and ownership passes over it (`owner()`). An
  untrusted or never-found peer is stalled the same way. The stall itself is what
  `sidecar verify s3://...` reports (``origin-stalled``).

Records are kept as they are signed (identifying values stay encrypted under the peer's subject
keys, which this node never holds); each carries ``"_origin"`` so that records of two origins
with one seq stay distinct. Nothing here writes to the bucket.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidecar import metrics
from sidecar.audit.origins import OriginsTrust, bundle_name, discover
from sidecar.audit.pull import PullResult, pull
from sidecar.audit.reading import SegmentProver
from sidecar.audit.verifier import UnusableInput
from sidecar.core import framing
from sidecar.core.canonical import parse
from sidecar.core.note import NoteError, checkpoint_of
from sidecar.core.segment import SEGMENT_DIR
from sidecar.errors import SidecarError
from sidecar.replicate.store import ObjectStore

log = logging.getLogger("sidecar.drift.peers")

ORIGIN_KEY = "_origin"  # added to a peer's record (not signed): which ledger it came from


def record_origin(rec: dict[str, Any]) -> str | None:
    value = rec.get(ORIGIN_KEY)
    return value if isinstance(value, str) else None


@dataclass
class Peer:
    """What this node knows of one other origin."""

    origin: str
    prefix: str | None = None
    fresh: list[dict[str, Any]] = field(default_factory=list)  # verified, not yet taken by the monitor
    next_seq: int = 0  # every record before this seq has been verified and taken
    from_segment: int = 0  # segments before this one are done (sealed and read)
    coverage_ns: int | None = None  # time of the newest verified checkpoint
    untrusted: str | None = None  # why its bytes are not trusted (sticky for this run)
    last_error: str | None = None
    reported: set[str] = field(default_factory=set)  # pull findings already logged

    def to_json(self, now_ns: int, stalled: bool) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "prefix": self.prefix,
            "verified_up_to_seq": self.next_seq,
            "coverage_ns": self.coverage_ns,
            "coverage_age_s": None if self.coverage_ns is None else round((now_ns - self.coverage_ns) / 1e9, 1),
            "stalled": stalled,
            "untrusted": self.untrusted,
            "last_error": self.last_error,
        }


class PeerFollower:
    """Reads every other origin of an origins trust file from the bucket (see module doc)."""

    def __init__(
        self,
        trust: OriginsTrust,
        own_origin: str,
        root: ObjectStore,
        open_prefix: Callable[[str], ObjectStore],
        cache_dir: Path,
        *,
        window_s: float = 900.0,
        now_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        if own_origin not in trust.anchors:
            raise ValueError(f"the origins trust file does not list this node's own origin {own_origin!r}")
        self.trust = trust
        self.own = own_origin
        self.root = root
        self.open_prefix = open_prefix
        self.cache_dir = cache_dir
        self.window_s = window_s
        self.now_ns = now_ns
        self.started_ns = now_ns()
        self.peers = {o: Peer(o) for o in sorted(trust.anchors) if o != own_origin}
        self._origins_sorted = sorted(trust.anchors)

    # ------------------------------------------------------------------------------------ judging
    def stalled(self, origin: str, now_ns: int | None = None) -> bool:
        """Whether a peer no longer holds back decisions: untrusted, or silent past the heartbeat bound."""
        if origin == self.own:
            return False
        peer = self.peers[origin]
        if peer.untrusted is not None:
            return True
        now = self.now_ns() if now_ns is None else now_ns
        since = max(peer.coverage_ns or 0, self.started_ns)
        return (now - since) / 1e9 > self.trust.max_silence_s

    def covered(self, t_ns: int, now_ns: int | None = None) -> bool:
        """Whether every peer that is not stalled has shown all it recorded up to t_ns."""
        now = self.now_ns() if now_ns is None else now_ns
        return all(
            (p.coverage_ns is not None and p.coverage_ns >= t_ns) or self.stalled(o, now) for o, p in self.peers.items()
        )

    def owner(self, key: str, now_ns: int | None = None) -> str:
        """The origin that records a drift finding named `key`: the one a hash of the key picks among the
        trust file's sorted origins, or the next one after it that is not stalled (this node never is)."""
        names = self._origins_sorted
        start = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % len(names)
        now = self.now_ns() if now_ns is None else now_ns
        for i in range(len(names)):
            name = names[(start + i) % len(names)]
            if not self.stalled(name, now):
                return name
        return self.own  # unreachable: this node is never stalled

    def take(self) -> list[dict[str, Any]]:
        """The verified records read since the last call (for the monitor's window and replay)."""
        out: list[dict[str, Any]] = []
        for p in self.peers.values():
            out.extend(p.fresh)
            p.fresh = []
        return out

    def untrusted(self) -> set[str]:
        """The origins whose bytes did not verify (their records must not be used)."""
        return {o for o, p in self.peers.items() if p.untrusted is not None}

    def to_json(self) -> dict[str, Any]:
        now = self.now_ns()
        return {o: p.to_json(now, self.stalled(o, now)) for o, p in self.peers.items()}

    # ------------------------------------------------------------------------------------ reading
    async def refresh(self) -> None:
        """Read what every peer added since the last refresh; a failure is one peer's, logged, never raised."""
        if any(p.prefix is None for p in self.peers.values()):
            try:
                await self._find_prefixes()
            except (SidecarError, OSError) as exc:
                log.warning("drift peers: cannot list the bucket: %s", exc)
                metrics.DRIFT_ERRORS.labels(phase="peers").inc()
        for peer in self.peers.values():
            if peer.prefix is None or peer.untrusted is not None:
                continue
            try:
                await self._refresh(peer)
                peer.last_error = None
            except (SidecarError, OSError) as exc:
                peer.last_error = str(exc)
                metrics.DRIFT_ERRORS.labels(phase="peers").inc()
                log.warning("drift peers: cannot read %s: %s", peer.origin, exc)
            if peer.coverage_ns is not None:
                metrics.DRIFT_PEER_COVERAGE.labels(origin=peer.origin).set(peer.coverage_ns / 1e9)

    async def _find_prefixes(self) -> None:
        taken = {p.prefix for p in self.peers.values() if p.prefix is not None}
        for prefix in await discover(self.root):
            if prefix in taken:
                continue
            origin = await self._origin_of(prefix)
            peer = self.peers.get(origin) if origin is not None else None
            if peer is not None and peer.prefix is None:
                peer.prefix = prefix
                log.info("drift peers: following %s under %r", origin, prefix or "/")

    async def _origin_of(self, prefix: str) -> str | None:
        store = self.open_prefix(prefix)
        try:
            notes = await store.list("checkpoints/")
            if not notes:
                return None
            note = await store.get(notes[-1].key)
        finally:
            await store.close()
        try:
            return checkpoint_of(note).origin
        except NoteError:
            return None

    async def _refresh(self, peer: Peer) -> None:
        assert peer.prefix is not None
        bundle = self.cache_dir / bundle_name(peer.prefix)
        # The pull (listing, fetching, rebuilding the open segment) and the verification run in a worker
        # thread with an event loop of its own: the proxy's loop keeps answering while a peer is read.
        got = await asyncio.to_thread(self._fetch_and_read, peer, bundle)
        if got is None:
            return  # nothing of the ledger there yet
        findings, records, coverage, problem = got
        for message in findings:  # `sidecar verify` judges these; here only verified records count
            if message not in peer.reported:
                peer.reported.add(message)
                log.warning("drift peers: %s: %s", peer.origin, message)
        if problem is not None:
            peer.untrusted = problem
            peer.fresh = []
            metrics.DRIFT_PEER_UNTRUSTED.labels(origin=peer.origin).inc()
            log.error("drift peers: %s does not verify, its records are not used: %s", peer.origin, problem)
            return
        horizon = self.now_ns() - int(self.window_s * 1e9)
        for rec in records:
            if int(rec["ts"]) >= horizon:  # older ones can no longer match an event the monitor decides
                rec[ORIGIN_KEY] = peer.origin
                peer.fresh.append(rec)
        if coverage is not None and (peer.coverage_ns is None or coverage > peer.coverage_ns):
            peer.coverage_ns = coverage

    def _fetch_and_read(
        self, peer: Peer, bundle: Path
    ) -> tuple[list[str], list[dict[str, Any]], int | None, str | None] | None:
        """In a worker thread: pull the peer's prefix into bundle, then `_read` it; None if it holds no ledger."""
        assert peer.prefix is not None
        prefix = peer.prefix

        async def fetch() -> PullResult:
            store = self.open_prefix(prefix)  # opened in this thread's loop, closed before it ends
            try:
                return await pull(store, bundle, check_versions=False, concurrency=4)
            finally:
                await store.close()

        try:
            result = asyncio.run(fetch())
        except UnusableInput:
            return None
        return ([f.message for f in result.findings], *self._read(peer, bundle))

    def _read(self, peer: Peer, bundle: Path) -> tuple[list[dict[str, Any]], int | None, str | None]:
        """(new verified records, newest verified checkpoint time, why not trusted) of a pulled bundle."""
        anchor = self.trust.anchors[peer.origin]
        prover = SegmentProver(bundle, anchor)
        numbers = sorted(n for n in prover.files if n >= peer.from_segment)
        out: list[dict[str, Any]] = []
        coverage: int | None = None
        for n in numbers:
            checked = prover.checked_checkpoints(n)
            if checked is None:
                findings = "; ".join(f"{f.segment or ''} {f.message}".strip() for f in prover.findings[:3])
                return [], None, findings or f"segment {n:08d} could not be checked"
            covered = max((size for size, _root, _key in checked), default=0)
            for kind, body in _frames(bundle / SEGMENT_DIR / f"{n:08d}.seg"):
                if kind != framing.RECORD:
                    continue
                rec = parse(body)
                seq = int(rec["seq"])
                if seq >= covered:
                    break
                if seq < peer.next_seq:
                    continue
                if seq != peer.next_seq:
                    return out, coverage, None  # a gap (a segment not there yet): stop, nothing beyond it counts
                out.append(rec)
                peer.next_seq = seq + 1
            scan = prover.scan(n)
            for cps in scan.checkpoints:
                cp = cps.checkpoint
                if cp is not None and cps.signer is not None and cp.size <= peer.next_seq:
                    coverage = cp.time_ns if coverage is None else max(coverage, cp.time_ns)
            if scan.sealed and n != numbers[-1]:
                peer.from_segment = n + 1
        return out, coverage, None


def _frames(path: Path) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    for frame in framing.iter_frames(path.read_bytes()):
        if isinstance(frame, framing.FrameDamage):
            break
        if frame.kind != framing.HEADER:
            out.append((frame.kind, bytes(frame.body)))
    return out
