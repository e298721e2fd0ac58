"""Gathering what the report shows from one verified pass over the ledger.

`build_report()` verifies the ledger against the trust file (and any external checkpoints),
then reads it once more through `read_verified` (which recomputes the Merkle root as it goes)
and keeps only bounded summaries, so a ledger of millions of records gives a report of a
few hundred kilobytes: counts per time bucket by type family and by outcome, coverage (every
checkpoint and heartbeat time, and each gap longer than `gap_s` in which the sidecar signed
nothing), the key epochs, every drift finding, and per-actor and per-target timelines of the
busiest actors and targets (the newest events of each). When verification fails the report
shows the verdict and the findings only: nothing unverified is presented as fact.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidecar.audit.reading import Reading, ReadRefused, read_verified
from sidecar.core.note import NoteError, checkpoint_of
from sidecar.core.trust import TrustAnchor
from sidecar.core.verify import Finding, Report

TOP = 40  # actors and targets with a timeline each
PER_PARTY = 100  # newest events kept per timeline
MAX_DRIFT = 2_000


@dataclass
class Data:
    origin: str
    verdict: str
    ok: bool
    report: Report | None
    findings: list[Finding] = field(default_factory=list)
    records: int = 0
    first_ns: int | None = None
    last_ns: int | None = None
    types: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    marks: list[int] = field(default_factory=list)  # record and checkpoint times, thinned (coverage)
    gaps: list[tuple[int, int]] = field(default_factory=list)
    starts: list[tuple[int, str]] = field(default_factory=list)  # ledger.started / recovered
    epochs: list[dict[str, Any]] = field(default_factory=list)
    drift: list[dict[str, Any]] = field(default_factory=list)
    drift_total: int = 0
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    by_time: list[tuple[int, str, str]] = field(default_factory=list)  # (ts, family, outcome), thinned later
    buckets: dict[str, Any] = field(default_factory=dict)
    actors: list[tuple[str, int, list[dict[str, Any]]]] = field(default_factory=list)
    targets: list[tuple[str, int, list[dict[str, Any]]]] = field(default_factory=list)
    checkpoints: int = 0
    gap_s: float = 120.0
    erasures: list[dict[str, Any]] = field(default_factory=list)  # subject.erased records
    erased_fields: int = 0  # records shown with values of an erased subject left out
    encrypted_fields: int = 0  # records shown with values left encrypted (no key store given)


@dataclass(frozen=True, slots=True)
class Summary:
    ok: bool
    verdict: str
    records: int


def _party(p: dict[str, Any] | None) -> str | None:
    if not p:
        return None
    if p.get("kind") == "user" and not p.get("username") and p.get("id"):
        return str(p["id"])  # its pseudonym when the username is encrypted or erased
    return p.get("username") or p.get("client") or p.get("name") or p.get("id")


def _slim(rec: dict[str, Any]) -> dict[str, Any]:
    e = rec["event"]
    return {
        "seq": rec["seq"],
        "ts": int(rec["ts"]),
        "type": e["type"],
        "outcome": e.get("outcome"),
        "actor": _party(e.get("actor")),
        "target": _party(e.get("target")),
        "ip": e.get("ip"),
        "realm": e.get("realm"),
        "error": e.get("error"),
        "phase": (e.get("details") or {}).get("phase"),
        "erased": (rec.get("pii") or {}).get("erased"),
    }


class _Buckets:
    """Counts per fixed time bucket; the bucket width doubles when there are too many (bounded)."""

    def __init__(self, limit: int = 96) -> None:
        self.width = 1_000_000_000  # 1 s to start
        self.limit = limit
        self.start: int | None = None
        self.counts: dict[int, Counter[str]] = defaultdict(Counter)

    def add(self, ts: int, *keys: str) -> None:
        if self.start is None:
            self.start = ts
        i = (ts - self.start) // self.width
        while i >= self.limit:
            merged: dict[int, Counter[str]] = defaultdict(Counter)
            for k, c in self.counts.items():
                merged[k // 2].update(c)
            self.counts = merged
            self.width *= 2
            i = (ts - self.start) // self.width
        c = self.counts[i]
        for key in keys:
            c[key] += 1


def collect(
    source: Path,
    trust: TrustAnchor,
    *,
    external: list[bytes] | None = None,
    gap_s: float = 120.0,
    reveal: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> Data:
    """`reveal` (sidecar.audit.pseudonyms.Revealer): what the report may show of encrypted values."""
    data = Data(origin=trust.origin, verdict="", ok=False, report=None, gap_s=gap_s)
    buckets = _Buckets()
    actor_counts: Counter[str] = Counter()
    target_counts: Counter[str] = Counter()
    actor_recent: dict[str, deque[dict[str, Any]]] = defaultdict(lambda: deque(maxlen=PER_PARTY))
    target_recent: dict[str, deque[dict[str, Any]]] = defaultdict(lambda: deque(maxlen=PER_PARTY))
    marks: list[int] = []
    gap_ns = int(gap_s * 1e9)
    last_mark: list[int] = []

    def mark(ts: int) -> None:
        if last_mark and ts - last_mark[0] > gap_ns:
            data.gaps.append((last_mark[0], ts))
        if not last_mark or ts - last_mark[0] >= 1_000_000_000 or not marks:
            marks.append(ts)
        if not last_mark:
            last_mark.append(ts)
        else:
            last_mark[0] = max(last_mark[0], ts)

    def on_note(note: bytes) -> None:
        try:
            cp = checkpoint_of(note)
        except NoteError:
            return
        data.checkpoints += 1
        mark(cp.time_ns)

    reading = Reading(None, False)
    try:
        for raw in read_verified(source, trust, external=external or (), on_note=on_note, reading=reading):
            rec = reveal(raw) if reveal is not None else raw
            e = rec["event"]
            pii = rec.get("pii") or {}
            data.erased_fields += bool(pii.get("erased"))
            data.encrypted_fields += bool(pii.get("encrypted"))
            ts = int(rec["ts"])
            etype, outcome = e["type"], str(e.get("outcome"))
            data.records += 1
            data.first_ns = ts if data.first_ns is None else data.first_ns
            data.last_ns = ts
            data.types[etype] += 1
            data.outcomes[outcome] += 1
            buckets.add(ts, "type:" + etype.split(".", 1)[0], "outcome:" + outcome)
            if etype in ("ledger.started", "ledger.recovered"):
                data.starts.append((ts, etype))
            mark(ts)
            if etype == "key.rotated":
                d = e.get("details") or {}
                data.epochs.append(
                    {
                        "epoch": d.get("epoch"),
                        "key": (d.get("key") or {}).get("name"),
                        "key_id": (d.get("key") or {}).get("key_id"),
                        "from_ns": ts,
                        "seq": rec["seq"],
                    }
                )
            elif etype == "drift.detected":
                data.drift_total += 1
                if len(data.drift) < MAX_DRIFT:
                    d = e.get("details") or {}
                    data.drift.append(
                        {
                            "seq": rec["seq"],
                            "ts": ts,
                            "kind": d.get("kind"),
                            "target": _party(e.get("target")),
                            "field": d.get("field"),
                            "expected": d.get("expected"),
                            "live": d.get("live"),
                            "first_seen_ns": d.get("first_seen_ns"),
                        }
                    )
            elif etype == "subject.erased":
                d = e.get("details") or {}
                data.erasures.append(
                    {
                        "seq": rec["seq"],
                        "ts": ts,
                        "subject": d.get("subject"),
                        "reason": d.get("reason"),
                        "by": _party(e.get("actor")),
                    }
                )
            elif etype == "state.snapshot":
                d = e.get("details") or {}
                data.snapshots.append(
                    {
                        "seq": rec["seq"],
                        "ts": ts,
                        "realm": e.get("realm"),
                        "digest": d.get("digest"),
                        "users": d.get("users"),
                    }
                )
            if (e.get("details") or {}).get("phase") == "intent":
                continue  # its outcome record stands for the change in the timelines
            slim: dict[str, Any] | None = None
            who = _party(e.get("actor"))
            if who:
                actor_counts[who] += 1
                slim = _slim(rec)
                actor_recent[who].append(slim)
            whom = _party(e.get("target"))
            if whom:
                target_counts[whom] += 1
                target_recent[whom].append(slim or _slim(rec))
            if len(actor_recent) > 20 * TOP:
                _prune(actor_recent, actor_counts)
            if len(target_recent) > 20 * TOP:
                _prune(target_recent, target_counts)
    except ReadRefused as exc:
        data.ok = False
        data.verdict = "TAMPERED OR INCOMPLETE"
        data.findings = exc.findings
        data.report = exc.report
        return data
    data.ok = True
    data.verdict = "INTACT"
    data.report = reading.report
    data.marks = marks
    data.buckets = {
        "start": buckets.start,
        "width": buckets.width,
        "counts": {k: dict(v) for k, v in sorted(buckets.counts.items())},
    }
    data.actors = [(a, n, list(actor_recent[a])) for a, n in actor_counts.most_common(TOP)]
    data.targets = [(t, n, list(target_recent[t])) for t, n in target_counts.most_common(TOP)]
    return data


def _prune(recent: dict[str, deque[dict[str, Any]]], counts: Counter[str]) -> None:
    """Keep the timelines of the busiest parties only (memory stays bounded on any ledger)."""
    keep = {k for k, _ in heapq.nlargest(10 * TOP, counts.items(), key=lambda kv: kv[1])}
    for k in list(recent):
        if k not in keep:
            del recent[k]


def build_report(
    source: Path,
    trust: TrustAnchor,
    out: Path,
    *,
    external: list[bytes] | None = None,
    gap_s: float = 120.0,
    reveal: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> Summary:
    from sidecar.report.html import render

    data = collect(source, trust, external=external, gap_s=gap_s, reveal=reveal)
    html = render(data)
    tmp = out.with_name(out.name + ".partial")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out)
    return Summary(data.ok, data.verdict, data.records)
