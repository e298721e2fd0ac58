"""The drift monitor inside `sidecar serve`, and the one-shot `sidecar drift`.

The monitor runs as its own task, off the request path (the writer only hands it each commit,
which it queues; parsing and every Keycloak read happen in the monitor's task):

1. **Baseline.** At start it reads Keycloak's live access state (`sidecar.drift.live`),
   stores the content beside the segments (`snapshots/<sha256>.json`, replicated with them)
   and appends a signed `state.snapshot` record carrying the digest.
2. **Event reconciliation**, every `poll_s` (10 s): Keycloak's user-event and admin-event
   stores are read from a watermark on and every event must have its ledger record
   (`sidecar.drift.reconcile`). An event still without one after `grace_s` is a change (or a
   login) made around the sidecar: a `drift.detected` record of kind `unrecorded-change`
   (admin events) or `unrecorded-event` (user events). The first watermark is the ledger's
   last record before this start, so events that happened while the sidecar was down count.
3. **Sweep**, every `sweep_s` (300 s), paginated and rate-limited: the live state against the
   baseline replayed with every record since (`sidecar.drift.state`); each difference is a
   `drift.detected` record of kind `state-mismatch`. Records written while a sweep reads are
   not held against it (their targets are compared next time).

Each finding is recorded once (deduplicated by what differs, expected and live) with the time
it was first seen, and counted in `sidecar_drift_*` metrics (sidecar.metrics).

**In a cluster** (`peers`, a `sidecar.drift.peers.PeerFollower` over the origins trust file):
the window and the replay hold the union of this node's records and every other origin's
verified records read from the bucket. An event is decided only once every peer that is not
stalled has a verified checkpoint at or after its time + `grace_s`; a sweep compares only once
every such peer covers the end of its live read. A finding no origin's record explains is
recorded by one origin only: its owner (`PeerFollower.owner`, a hash of the Keycloak event id or
the mismatch over the sorted origins, passing over stalled ones); no node records one that a
`drift.detected` record of any origin it has read already names. A node that is not the owner
keeps the event and records it itself if the owner stalls before its record shows
(docs/operations.md §10.5 states the residual window). A failed read is retried
with backoff; it is never a "no drift": metrics and status show the last success.

`check_once()` is the one-shot form: it verifies the ledger, replays it from the newest
snapshot, reads the live state and Keycloak's events since, and reports; `CannotCheck` (exit
code 2) when Keycloak cannot be read or the ledger gives nothing to compare against.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from sidecar import metrics
from sidecar.core.canonical import canonical_bytes, parse
from sidecar.core.events import Appender, EventType, IdentityEvent, Outcome, Party
from sidecar.core.pii import is_encrypted
from sidecar.core.record import record_object
from sidecar.drift.live import AdminReader, LiveState
from sidecar.drift.peers import PeerFollower
from sidecar.drift.reconcile import RecordId, event_label, event_summary, match, record_id
from sidecar.drift.state import Expected, Mismatch, digest, state_bytes
from sidecar.durable import write_atomic
from sidecar.errors import CannotCheck as CannotCheck  # re-exported: the CLI imports it here
from sidecar.errors import SidecarError, UpstreamError
from sidecar.ledger.writer import Commit
from sidecar.replicate.store import ObjectStore

log = logging.getLogger("sidecar.drift")

SNAPSHOT_DIR = "snapshots"


@dataclass(frozen=True, slots=True)
class DriftConfig:
    poll_s: float = 10.0
    sweep_s: float = 300.0
    rate_per_s: float = 50.0
    grace_s: float = 2.0
    credentials: bool = True
    page: int = 200
    window_s: float = 900.0  # how long records stay available for matching Keycloak's events


# ----------------------------------------------------------------------------------------- snapshots
def store_snapshot(data_dir: Path, content: bytes) -> str:
    """Write the content under its digest (atomically, fsynced); returns the hex digest."""
    hexd = digest(content)
    folder = data_dir / SNAPSHOT_DIR
    folder.mkdir(exist_ok=True)
    path = folder / f"{hexd}.json"
    if not path.exists():
        write_atomic(path, content)
    return hexd


def load_snapshot(source: Path, hexd: str) -> dict[str, Any]:
    """The content of a snapshot, checked against the digest its (verified) record carries."""
    path = source / SNAPSHOT_DIR / f"{hexd}.json"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CannotCheck(f"the state snapshot {hexd[:16]}... named by the ledger is missing: {path}") from exc
    if digest(data) != hexd:
        raise CannotCheck(f"{path} does not hash to the digest the ledger recorded: the snapshot was altered")
    state: dict[str, Any] = parse(data)
    return state


def snapshot_event(realm: str, client_id: str, content: bytes, hexd: str, state: dict[str, Any]) -> IdentityEvent:
    return IdentityEvent(
        EventType.STATE_SNAPSHOT,
        Outcome.SUCCEEDED,
        realm=realm,
        actor=Party(client=client_id, kind="client"),
        details={
            "digest": f"sha256:{hexd}",
            "file": f"{SNAPSHOT_DIR}/{hexd}.json",
            "bytes": len(content),
            "taken_ns": state["taken_ns"],
            "users": len(state["users"]),
            "groups": len(state["groups"]),
            "roles": len(state["roles"]),
        },
    )


def _plain(value: Any) -> Any:
    """Canonical JSON has no floats: carry them as strings."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def mismatch_event(m: Mismatch, first_seen_ns: int, snapshot_seq: int | None) -> IdentityEvent:
    return IdentityEvent(
        EventType.DRIFT_DETECTED,
        Outcome.SUCCEEDED,
        realm=m.realm,
        target=Party(id=m.id, kind=m.kind, name=m.name),
        details=_plain(
            {
                "kind": "state-mismatch",
                "field": m.field,
                "expected": m.expected,
                "live": m.live,
                "first_seen_ns": str(first_seen_ns),
                "expected_since_seq": m.since_seq,
                "snapshot_seq": snapshot_seq,
            }
        ),
    )


def unrecorded_event(realm: str, ev: dict[str, Any], first_seen_ns: int) -> IdentityEvent:
    admin = "operationType" in ev
    summary = event_summary(ev)
    if admin:
        path = str(ev.get("resourcePath") or "")
        parts = path.split("/")
        kind = {"users": "user", "groups": "group", "clients": "client", "roles": "role"}.get(parts[0], "resource")
        target = Party(id=parts[1] if len(parts) > 1 else None, kind=kind, name=path or None)
    else:
        # SECURITY: only a name Keycloak matched to a user; any other may be a password typed as a username.
        named = (ev.get("details") or {}).get("username") if ev.get("userId") else None
        target = Party(id=ev.get("userId"), username=named, kind="user")
    return IdentityEvent(
        EventType.DRIFT_DETECTED,
        Outcome.SUCCEEDED,
        realm=realm,
        target=target,
        details=_plain(
            {
                "kind": "unrecorded-change" if admin else "unrecorded-event",
                "field": "ledger record",
                "expected": "a ledger record for this event",
                "live": event_label(ev),
                "keycloak_event": summary,
                "first_seen_ns": str(first_seen_ns),
            }
        ),
    )


# ----------------------------------------------------------------------------------------- the monitor
@dataclass
class _Status:
    baseline_seq: int | None = None
    last_poll_ns: int | None = None
    last_sweep_ns: int | None = None
    last_error: str | None = None
    recorded: int = 0
    decided_ms: int | None = None  # the newest Keycloak event time decided (events wait in time order)
    deferred: int = 0
    active: list[dict[str, Any]] = field(default_factory=list)


class DriftMonitor:
    def __init__(
        self,
        reader: AdminReader,
        append: Appender,
        data_dir: Path,
        config: DriftConfig | None = None,
        *,
        client_id: str = "",
        since_ns: int | None = None,
        store: ObjectStore | None = None,
    ) -> None:
        self.reader = reader
        self.append = append
        self.data_dir = data_dir
        self.config = config or DriftConfig()
        self.live = LiveState(
            reader, rate_per_s=self.config.rate_per_s, page=self.config.page, credentials=self.config.credentials
        )
        self.client_id = client_id
        self.status = _Status()
        self._commits: deque[Commit] = deque(maxlen=50_000)
        self._window: deque[dict[str, Any]] = deque()
        self._unapplied: list[dict[str, Any]] = []
        self._used: set[RecordId] = set()
        self._seen_events: dict[str, int] = {}
        self._reported: dict[str, int] = {}
        self._expected: Expected | None = None
        self._watermark_ms = (since_ns if since_ns is not None else time.time_ns()) // 1_000_000
        self._task: asyncio.Task[None] | None = None
        self.store = store
        self._uploads: list[str] = []  # snapshot digests not yet in the remote store
        # With a subject key store (set by the app): records are read decrypted, and the usernames
        # a snapshot holds are encrypted under their user's key before it is stored or replicated.
        self.reveal: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        self.seal_state: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        # In a cluster (set by the app): the other origins' ledgers, read from the bucket.
        self.peers: PeerFollower | None = None
        self._baseline_ns: int | None = None
        self._handed: dict[str, tuple[dict[str, Any], int]] = {}  # event id -> (event, when handed to its owner)

    # the ledger calls this after each durable batch; it must never block or fail
    def on_commit(self, commit: Commit) -> None:
        self._commits.append(commit)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="drift-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def to_json(self) -> dict[str, Any]:
        s = self.status
        return {
            "baseline_seq": s.baseline_seq,
            "last_poll_ns": s.last_poll_ns,
            "last_sweep_ns": s.last_sweep_ns,
            "last_error": s.last_error,
            "recorded": s.recorded,
            "active": s.active[:50],
            "poll_s": self.config.poll_s,
            "sweep_s": self.config.sweep_s,
            "decided_ms": s.decided_ms,
            "peers": self.peers.to_json() if self.peers is not None else None,
            "deferred": s.deferred,
            "handed_to_owner": sorted(self._handed)[:50],  # Keycloak event ids waiting for their owner's record
        }

    def _drain(self) -> None:
        while self._commits:
            commit = self._commits.popleft()
            for _seq, _off, body in commit.records:
                rec = parse(body)
                if self.reveal is not None:
                    rec = self.reveal(rec)
                self._window.append(rec)
                self._unapplied.append(rec)
        if self.peers is not None:
            for rec in self.peers.take():
                self._window.append(rec)
                if self._baseline_ns is None or int(rec["ts"]) >= self._baseline_ns:  # older ones: in the snapshot
                    self._unapplied.append(rec)
            bad = self.peers.untrusted()
            if bad and any(r.get("_origin") in bad for r in self._window):
                self._window = deque(r for r in self._window if r.get("_origin") not in bad)
                self._unapplied = [r for r in self._unapplied if r.get("_origin") not in bad]
        horizon = time.time_ns() - int(self.config.window_s * 1e9)
        if self._window and min(int(self._window[0]["ts"]), int(self._window[-1]["ts"])) < horizon:
            kept: deque[dict[str, Any]] = deque()
            for rec in self._window:  # peers' records arrive after this node's: not in time order
                if int(rec["ts"]) >= horizon:
                    kept.append(rec)
                else:
                    self._used.discard(record_id(rec))
            self._window = kept

    def _pool(self) -> list[dict[str, Any]]:
        """The records events are matched against, in time order (this node's and, in a cluster, the peers')."""
        if self.peers is None:
            return list(self._window)
        return sorted(self._window, key=lambda r: int(r["ts"]))

    def _found(self) -> set[str]:
        """What `drift.detected` records of every origin read so far name: Keycloak event ids, mismatch keys."""
        out: set[str] = set()
        for rec in self._window:
            e = rec["event"]
            if e.get("type") != "drift.detected":
                continue
            d = e.get("details") or {}
            ev = d.get("keycloak_event")
            if isinstance(ev, dict) and ev.get("id"):
                out.add(f"event:{ev['id']}")
            elif d.get("kind") == "state-mismatch":
                t = e.get("target") or {}
                out.add(_mismatch_ident(t.get("kind"), t.get("id"), d.get("field"), d.get("expected"), d.get("live")))
        return out

    async def _record(self, event: IdentityEvent, kind: str) -> None:
        await self.append(event)
        metrics.DRIFT_DETECTED.labels(kind=kind).inc()
        self.status.recorded += 1
        log.warning("drift: %s %s", kind, event.details.get("live"))

    async def _run(self) -> None:
        backoff = 1.0
        while self._expected is None:
            try:
                await self.baseline()
            except (UpstreamError, SidecarError, OSError) as exc:
                self.status.last_error = f"baseline: {exc}"
                metrics.DRIFT_ERRORS.labels(phase="baseline").inc()
                log.warning("drift baseline failed (retrying in %.0f s): %s", backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)
        next_sweep = time.monotonic() + self.config.sweep_s
        while True:
            delay = self.config.poll_s
            await self._upload()
            try:
                deferred = await self.poll()
                if deferred:
                    delay = min(delay, self.config.grace_s)
            except (UpstreamError, SidecarError, OSError) as exc:
                self.status.last_error = f"poll: {exc}"
                metrics.DRIFT_ERRORS.labels(phase="poll").inc()
                log.warning("drift poll failed: %s", exc)
            if time.monotonic() >= next_sweep:
                try:
                    await self.sweep()
                except (UpstreamError, SidecarError, OSError) as exc:
                    self.status.last_error = f"sweep: {exc}"
                    metrics.DRIFT_ERRORS.labels(phase="sweep").inc()
                    log.warning("drift sweep failed: %s", exc)
                next_sweep = time.monotonic() + self.config.sweep_s
            await asyncio.sleep(delay)

    async def baseline(self) -> None:
        now = time.time_ns()
        state = await self.live.read_state(now)
        loop = asyncio.get_running_loop()
        stored = await loop.run_in_executor(None, self.seal_state, state) if self.seal_state is not None else state
        content = state_bytes(stored)
        hexd = await asyncio.get_running_loop().run_in_executor(None, store_snapshot, self.data_dir, content)
        if self.store is not None:
            self._uploads.append(hexd)
            await self._upload()
        receipt = await self.append(snapshot_event(self.reader.realm, self.client_id, content, hexd, state))
        self._drain()
        self._unapplied = [r for r in self._unapplied if int(r["ts"]) >= now]  # older ones are in the snapshot
        self._baseline_ns = now
        self._expected = Expected.from_snapshot(state, getattr(receipt, "seq", None))
        self.status.baseline_seq = self._expected.baseline_seq
        log.info(
            "drift baseline: %d users, %d groups, %d composite roles (snapshot %s...)",
            len(state["users"]),
            len(state["groups"]),
            len(state["roles"]),
            hexd[:12],
        )

    async def _upload(self) -> None:
        """Put snapshots into the remote store beside the segments (write-once; retried each poll)."""
        from sidecar.replicate.layout import snapshot_key

        while self._uploads and self.store is not None:
            hexd = self._uploads[0]
            try:
                data = (self.data_dir / SNAPSHOT_DIR / f"{hexd}.json").read_bytes()
                await self.store.put(snapshot_key(hexd), data)
            except (SidecarError, OSError) as exc:
                log.warning("state snapshot %s... not replicated yet: %s", hexd[:12], exc)
                metrics.DRIFT_ERRORS.labels(phase="upload").inc()
                return
            self._uploads.pop(0)

    async def poll(self) -> int:
        """One reconciliation of Keycloak's event stores; returns how many events wait (grace, or peers)."""
        realm = self.reader.realm
        since = self._watermark_ms
        user = await self.live.read_events("events", since)
        admin = await self.live.read_events("admin-events", since)
        if self.peers is not None and (user or admin or self._handed):
            # After the read: what the peers show then covers what was read. (Nothing to decide: no read.)
            await self.peers.refresh()
        self._drain()
        now_ns = time.time_ns()
        now_ms = now_ns / 1e6
        grace_ms = self.config.grace_s * 1000
        fresh: list[dict[str, Any]] = []
        deferred: list[dict[str, Any]] = []
        for ev in user + admin:
            ident = _event_id(ev)
            if ident in self._seen_events:
                continue
            t = int(ev.get("time", 0))
            ready = now_ms - t >= grace_ms and (
                self.peers is None or self.peers.covered(int((t + grace_ms) * 1_000_000), now_ns)
            )
            (fresh if ready else deferred).append(ev)
        result = match(
            [e for e in fresh if "operationType" not in e],
            [e for e in fresh if "operationType" in e],
            self._pool(),
            realm,
            0,
            used=self._used,
            any_admin=True,
        )
        for ev in fresh:
            self._seen_events[_event_id(ev)] = int(ev.get("time", 0))
        metrics.DRIFT_EVENTS.inc(len(fresh))
        found = self._found() if self.peers is not None else set()
        for ev in result.unmatched:
            await self._decide(ev, found, now_ns)
        await self._settle_handed(found, now_ns)
        newest = max([int(e.get("time", 0)) for e in fresh] or [since])
        if fresh:
            self.status.decided_ms = max(newest, self.status.decided_ms or 0)
        self._watermark_ms = min([int(e.get("time", 0)) for e in deferred] or [newest])
        # forget ids older than the watermark: they can no longer come back from a query
        self._seen_events = {k: t for k, t in self._seen_events.items() if t >= self._watermark_ms}
        self.status.last_poll_ns = time.time_ns()
        metrics.DRIFT_POLLS.inc()
        metrics.DRIFT_LAST_POLL.set(time.time())
        metrics.DRIFT_DEFERRED.set(len(deferred))
        self.status.deferred = len(deferred)
        return len(deferred)

    async def _decide(self, ev: dict[str, Any], found: set[str], now_ns: int) -> None:
        """Record an event no origin's record matched, if this node owns it and no origin recorded it yet."""
        key = _event_id(ev)
        if self.peers is not None:
            if f"event:{key}" in found:
                return
            if self.peers.owner(key, now_ns) != self.peers.own:
                self._handed[key] = (ev, now_ns)  # its owner records it; taken back if the owner stalls
                return
        await self._record(
            unrecorded_event(self.reader.realm, ev, now_ns),
            "unrecorded-change" if "operationType" in ev else "unrecorded-event",
        )

    async def _settle_handed(self, found: set[str], now_ns: int) -> None:
        """Events handed to another owner: done once a record of it shows; ours if the owner stalled first."""
        if self.peers is None:
            return
        horizon = now_ns - int(self.config.window_s * 1e9)
        for key, (ev, at) in list(self._handed.items()):
            if f"event:{key}" in found or at < horizon:
                del self._handed[key]
            elif self.peers.owner(key, now_ns) == self.peers.own:
                del self._handed[key]
                log.warning("drift: the owner of Keycloak event %s stalled before recording it: recording it here", key)
                await self._record(
                    unrecorded_event(self.reader.realm, ev, now_ns),
                    "unrecorded-change" if "operationType" in ev else "unrecorded-event",
                )

    async def _await_coverage(self, t_ns: int) -> None:
        """Until every peer that is not stalled covers t_ns (bounded: a peer silent past the bound is stalled)."""
        assert self.peers is not None
        deadline = time.monotonic() + self.peers.trust.max_silence_s + 2 * self.config.poll_s
        while not self.peers.covered(t_ns) and time.monotonic() < deadline:
            await asyncio.sleep(min(1.0, self.config.poll_s, self.peers.trust.heartbeat_s / 2))
            await self.peers.refresh()

    async def sweep(self) -> list[Mismatch]:
        """One full comparison of the live state with baseline + ledger replay."""
        assert self._expected is not None
        t0 = time.time_ns()
        started = time.monotonic()
        calls_before = self.live.limit.calls
        live = await self.live.read_state(t0)
        if self.peers is not None:
            await self._await_coverage(time.time_ns())  # every peer's records written while the read ran
        self._drain()
        self._unapplied.sort(key=lambda r: int(r["ts"]))  # the peers' records join in time order
        before = [r for r in self._unapplied if int(r["ts"]) < t0]
        during = [r for r in self._unapplied if int(r["ts"]) >= t0]
        exp = self._expected
        exp.replay(before)
        mismatches = exp.compare(live, skip=exp.in_flight(during))
        exp.adopt(live)
        self._unapplied = during
        now = time.time_ns()
        active = {m.key: m for m in mismatches}
        found = self._found() if self.peers is not None else set()
        for key, m in active.items():
            if key in self._reported:
                continue
            if self.peers is not None:
                plain, sealed = _mismatch_idents(m)
                if plain in found or sealed in found:
                    self._reported[key] = now  # another origin recorded it
                    continue
                if self.peers.owner(key, now) != self.peers.own:
                    continue  # its owner records it; the next sweep looks again (and takes it if the owner stalled)
            self._reported[key] = now
            await self._record(mismatch_event(m, now, exp.baseline_seq), "state-mismatch")
        self._reported = {k: v for k, v in self._reported.items() if k in active}
        self.status.active = [m.to_json() for m in mismatches]
        self.status.last_sweep_ns = now
        metrics.DRIFT_ACTIVE.set(len(mismatches))
        metrics.DRIFT_SWEEPS.inc()
        metrics.DRIFT_SWEEP_SECONDS.set(time.monotonic() - started)
        metrics.DRIFT_SWEEP_REQUESTS.set(self.live.limit.calls - calls_before)
        metrics.DRIFT_LAST_SWEEP.set(time.time())
        metrics.record_drift(len(live["users"]) + len(live["groups"]) + len(live["roles"]), len(mismatches))
        return mismatches


def _mismatch_ident(kind: Any, ident: Any, fld: Any, expected: Any, live: Any) -> str:
    """What a state-mismatch record is about: target, field, expected and live (only the first three when a
    value is encrypted under a subject key this node does not hold: another origin's username drift)."""
    if is_encrypted(expected) or is_encrypted(live):
        return "sealed:" + digest(canonical_bytes({"k": kind, "i": ident, "f": fld}))
    return "mismatch:" + digest(canonical_bytes({"k": kind, "i": ident, "f": fld, "e": expected, "l": live}))


def _mismatch_idents(m: Mismatch) -> tuple[str, str]:
    exp, got = _plain(m.expected), _plain(m.live)
    sealed = "sealed:" + digest(canonical_bytes({"k": m.kind, "i": m.id, "f": m.field}))
    return _mismatch_ident(m.kind, m.id, m.field, exp, got), sealed


def _event_id(ev: dict[str, Any]) -> str:
    if ev.get("id"):
        return str(ev["id"])
    return orjson.dumps(ev, option=orjson.OPT_SORT_KEYS).decode()


def last_activity_ns(records: Iterable[dict[str, Any]]) -> int | None:
    """The time of the newest record before the newest `ledger.started`/`ledger.recovered` (the last run)."""
    last: int | None = None
    before_start: int | None = None
    for rec in records:
        if rec["event"]["type"] in ("ledger.started", "ledger.recovered"):
            before_start = last
        last = int(rec["ts"])
    return before_start


def previous_run_end(data_dir: Path) -> int | None:
    """When the previous run's last record was written (read from the newest two segments only)."""
    from sidecar.core import framing
    from sidecar.core.segment import SEGMENT_DIR

    def records() -> Iterable[dict[str, Any]]:
        for path in sorted((data_dir / SEGMENT_DIR).glob("*.seg"))[-2:]:
            for frame in framing.iter_frames(path.read_bytes()):
                if isinstance(frame, framing.FrameDamage):
                    break
                if frame.kind == framing.RECORD:
                    with contextlib.suppress(ValueError):
                        yield record_object(frame.body)

    return last_activity_ns(records())


# ----------------------------------------------------------------------------------------- one-shot
@dataclass
class CheckResult:
    realm: str
    baseline: str  # "snapshot seq N" or "recorded after-states"
    compared: dict[str, int]
    events_checked: int
    drifts: list[Any]
    # Personal data the comparison could not read: records with an erased subject's fields (and which
    # fields), and snapshot usernames left uncompared (erased, or no key store given).
    erased: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "realm": self.realm,
            "baseline": self.baseline,
            "compared": self.compared,
            "events_checked": self.events_checked,
            "checked": sum(self.compared.values()),
            "verdict": "drift" if self.drifts else "no-drift",
            "drift": [d.to_json() if hasattr(d, "to_json") else d for d in self.drifts],
            "erased": self.erased,
        }

    def summary(self) -> str:
        what = ", ".join(f"{v} {k}" for k, v in self.compared.items())
        head = (
            f"compared {what} of realm {self.realm} (baseline: {self.baseline}) and "
            f"{self.events_checked} Keycloak events with the verified ledger"
        )
        if self.erased.get("records") or self.erased.get("usernames_not_compared"):
            head += (
                f"\nerased: {self.erased.get('records', 0)} records with fields of erased subjects left out "
                f"({', '.join(self.erased.get('fields', [])) or '-'}); "
                f"{self.erased.get('usernames_not_compared', 0)} snapshot usernames not compared"
            )
        return head + ("\nno drift" if not self.drifts else f"\nDRIFT ({len(self.drifts)}):")


@dataclass(frozen=True, slots=True)
class EventDrift:
    realm: str
    event: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        admin = "operationType" in self.event
        summary = event_summary(self.event)
        return {
            "realm": self.realm,
            "kind": "unrecorded-change" if admin else "unrecorded-event",
            "field": "ledger record",
            "expected": "a ledger record for this event",
            "live": event_label(self.event),
            "keycloak_event": summary,
            "id": summary.get("resource_path") or summary.get("user_id"),
        }

    def __str__(self) -> str:
        return f"Keycloak event {event_label(self.event)} at {self.event.get('time')} has no ledger record"


async def check_once(
    source: Path,
    trust: Any,
    base_url: str,
    realm: str,
    client_id: str,
    secret: str,
    *,
    unverified: bool = False,
    config: DriftConfig | None = None,
    subjects: Any = None,
    origin: str = "",
    reveal_record: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> CheckResult:
    """`subjects` (a sidecar.ledger.subjects.SubjectKeys): decrypt usernames; without it, they are not compared.

    `reveal_record` (the readers' sidecar.audit.pseudonyms.Revealer) replaces the plain decryption, so
    the ledger's own erasure records count and a lost key store is an error.
    """
    from sidecar.audit.reading import read_unverified, read_verified
    from sidecar.capture.reader import KeycloakReader
    from sidecar.drift.replay import compare as compare_after
    from sidecar.drift.replay import expected_state

    cfg = config or DriftConfig()
    started_ms = int(time.time() * 1000)
    from sidecar.ledger.subjects import open_snapshot, reveal

    opener = reveal_record or (lambda r: reveal(r, origin=origin, store=subjects))
    records = [opener(r) for r in (read_unverified(source) if unverified else read_verified(source, trust))]
    gone = [r["pii"]["erased"] for r in records if (r.get("pii") or {}).get("erased")]
    erased: dict[str, Any] = {"records": len(gone), "fields": sorted({p for paths in gone for p in paths})}
    snap = None
    for rec in records:
        e = rec["event"]
        if e["type"] == "state.snapshot" and e.get("realm") == realm and e.get("outcome") == "succeeded":
            snap = rec
    reader = KeycloakReader(base_url, realm, client_id, secret, timeout_s=10.0)
    live_reader = LiveState(reader, rate_per_s=cfg.rate_per_s, page=cfg.page, credentials=cfg.credentials)
    await reader.start()
    try:
        try:
            if snap is not None:
                hexd = str(snap["event"]["details"]["digest"]).removeprefix("sha256:")
                state, unreadable = open_snapshot(subjects, origin, load_snapshot(source, hexd))
                exp = Expected.from_snapshot(state, int(snap["seq"]))
                for uid in unreadable:  # an encrypted (or erased) username cannot be compared: not a drift
                    exp.mark("user", uid, "username", int(snap["seq"]))
                erased["usernames_not_compared"] = len(unreadable)
                exp.replay(r for r in records if int(r["seq"]) > int(snap["seq"]))
                live = await live_reader.read_state(time.time_ns())
                drifts: list[Any] = list(exp.compare(live))
                compared = {
                    "users": len(live["users"]),
                    "groups": len(live["groups"]),
                    "roles": len(live["roles"]),
                    "realm settings": len(live["realm_settings"]),
                }
                since_ns = int(state["taken_ns"])
                baseline = f"state.snapshot at seq {snap['seq']}"
            else:
                targets = [t for t in expected_state(records).values() if t.realm == realm]
                if not targets:
                    raise CannotCheck(
                        f"nothing to compare against: the ledger holds no state.snapshot of realm "
                        f"{realm} and no recorded after-state (is the drift monitor or the state "
                        "reader configured?)"
                    )
                drifts = []
                for t in targets:
                    live_t = await reader.fetch(f"{'users' if t.kind == 'user' else 'groups'}/{t.id}")
                    got = await reader.access(realm, t.kind, t.id) if live_t is not None else None
                    if live_t is not None and got is None:
                        raise UpstreamError(f"cannot read the access state of {t.kind} {t.id}")
                    drifts.extend(compare_after(t, got))
                compared = {"users and groups with recorded after-states": len(targets)}
                since_ns = min(int(r["ts"]) for r in records)
                baseline = "recorded after-states (no state.snapshot)"
            since_ms = since_ns // 1_000_000
            user_ev = [
                e for e in await live_reader.read_events("events", since_ms) if int(e.get("time", 0)) < started_ms
            ]
            admin_ev = [
                e for e in await live_reader.read_events("admin-events", since_ms) if int(e.get("time", 0)) < started_ms
            ]
        except UpstreamError as exc:
            raise CannotCheck(str(exc)) from exc
    finally:
        await reader.close()
    result = match(user_ev, admin_ev, records, realm, since_ns - 5_000_000_000, any_admin=True)
    drifts.extend(EventDrift(realm, ev) for ev in result.unmatched)
    return CheckResult(realm, baseline, compared, len(user_ev) + len(admin_ev), drifts, erased)
