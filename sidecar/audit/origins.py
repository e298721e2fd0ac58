"""One bucket, many logs: find every origin under a store or folder, verify each, merge their timelines.

A Keycloak cluster runs one sidecar per node, each with its own ledger (its own origin and key),
all replicating into one bucket under a prefix of their own (``s3://ledger/node-a/...``). This
module is what an auditor runs over the whole:

* `OriginsTrust`: the trust file that lists the origins expected and each one's trust anchor, plus
  the heartbeat the sidecars run with (``kc-ledger-origins/1``, docs/operations.md §10).
* `discover()`: every prefix of a store whose keys follow the ledger layout (docs/format.md,
  ``segments/``, ``tail/``, ``checkpoints/``, ``snapshots/``).
* `pull_all()`: each prefix pulled into ``<out>/<prefix>/`` (a bundle each).
* `verify_origins()`: each bundle verified on its own by the per-origin verifier
  (`sidecar.audit.verifier.verify_directory`) against the anchor of the origin its checkpoints
  name, then the findings of the whole: ``origin-missing`` (expected, not found),
  ``origin-extra`` (found, not expected: its records are not trusted), ``origin-duplicate`` (one
  origin under two prefixes), ``origin-stalled`` (its newest signed checkpoint is older than the
  heartbeat allows, `OriginsTrust.max_silence_s`).
* `merged()`: the verified records of all origins in one order (see `Ordering`).

Nothing here coordinates the sidecars: every origin is read and checked on its own, and the merge
is the auditor's.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from sidecar.audit.pull import PullResult, pull
from sidecar.audit.verifier import UnusableInput, bundle_checkpoint, newest_note, segment_files, verify_directory
from sidecar.core.note import NoteError, checkpoint_of
from sidecar.core.trust import TrustAnchor
from sidecar.core.verify import Finding, Report
from sidecar.replicate.drivers import open_store
from sidecar.replicate.layout import parse_key
from sidecar.replicate.store import ObjectStore

ORIGINS_FORMAT = "kc-ledger-origins/1"
_LAYOUT_ROOTS = ("segments/", "tail/", "checkpoints/", "snapshots/")
DEFAULT_SKEW_S = 1.0
"""The clock-skew bound assumed between two origins when the ledgers give no measurement of it."""


@dataclass(frozen=True)
class OriginsTrust:
    """The expected origins, each with its trust anchor, and how often each must checkpoint."""

    anchors: dict[str, TrustAnchor]
    heartbeat_s: float
    max_silence_s: float  # an origin whose newest checkpoint is older than this is stalled

    def to_json(self) -> dict[str, Any]:
        return {
            "format": ORIGINS_FORMAT,
            "heartbeat_s": self.heartbeat_s,
            "max_silence_s": self.max_silence_s,
            "origins": [a.to_json() for a in self.anchors.values()],
        }

    def encode(self) -> bytes:
        return orjson.dumps(self.to_json(), option=orjson.OPT_INDENT_2) + b"\n"

    @classmethod
    def of(cls, anchors: Iterable[TrustAnchor], heartbeat_s: float, max_silence_s: float | None = None) -> OriginsTrust:
        """Anchors and the sidecars' heartbeat; silence allowed defaults to three heartbeats (a checkpoint
        is written every heartbeat and shipped within a replication step, so two missed ones are news)."""
        table = {a.origin: a for a in anchors}
        return cls(table, heartbeat_s, max_silence_s if max_silence_s is not None else 3 * heartbeat_s)

    @classmethod
    def decode(cls, data: bytes) -> OriginsTrust:
        try:
            obj = orjson.loads(data)
            if not isinstance(obj, dict) or obj.get("format") != ORIGINS_FORMAT:
                raise ValueError(f"format is not {ORIGINS_FORMAT!r}")
            anchors = [TrustAnchor.decode(orjson.dumps(o)) for o in obj["origins"]]
            heartbeat = float(obj["heartbeat_s"])
            silence = float(obj.get("max_silence_s", 3 * heartbeat))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not an origins trust file ({ORIGINS_FORMAT}): {exc}") from exc
        if not anchors or heartbeat <= 0 or silence <= 0:
            raise ValueError("an origins trust file lists at least one origin and a positive heartbeat")
        if len({a.origin for a in anchors}) != len(anchors):
            raise ValueError("an origins trust file lists an origin twice")
        return cls.of(anchors, heartbeat, silence)


def load_origins_trust(path: Path) -> OriginsTrust | None:
    """The origins trust file at path, or None if it is a single ledger's trust file (kc-ledger-trust/1)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UnusableInput(f"cannot read trust file {path}: {exc.strerror}") from exc
    try:
        head = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None  # not ours to judge: the single-ledger reader says why it is unusable
    if not isinstance(head, dict) or head.get("format") != ORIGINS_FORMAT:
        return None
    try:
        return OriginsTrust.decode(data)
    except ValueError as exc:
        raise UnusableInput(f"{path}: {exc}") from exc


# ---------------------------------------------------------------------------------------------- finding
def prefixes_of(keys: Iterable[str]) -> list[str]:
    """The prefixes under which keys follow the ledger layout ("" for the store's root), sorted."""
    found: set[str] = set()
    for key in keys:
        for root in _LAYOUT_ROOTS:
            at = key.find(root)
            if at == 0 or (at > 0 and key[at - 1] == "/"):
                prefix = key[:at].rstrip("/")
                if parse_key(key[at:]) is not None:
                    found.add(prefix)
                break
    return sorted(found)


async def discover(store: ObjectStore) -> list[str]:
    """Every prefix of store that holds a ledger's objects."""
    return prefixes_of(info.key for info in await store.list(""))


def sub_url(url: str, prefix: str) -> str:
    """The store URL of one prefix under url (an s3:// URL keeps its query; a folder gets a subfolder)."""
    if not prefix:
        return url
    if url.startswith("s3://"):
        parts = urlsplit(url)
        path = "/".join(p for p in (parts.path.strip("/"), prefix) if p)
        return urlunsplit((parts.scheme, parts.netloc, "/" + path, parts.query, parts.fragment))
    if url.startswith("file://"):
        return url.rstrip("/") + "/" + prefix
    return str(Path(url) / prefix)


def parent_url(url: str) -> str:
    """The store URL one prefix level up (`sub_url` inverted): s3://b/node-a?q -> s3://b/?q, /s/node-a -> /s."""
    if url.startswith("s3://"):
        parts = urlsplit(url)
        path = parts.path.strip("/").rsplit("/", 1)[0] if "/" in parts.path.strip("/") else ""
        return urlunsplit((parts.scheme, parts.netloc, "/" + path, parts.query, parts.fragment))
    if url.startswith("file://"):
        return url.rstrip("/").rsplit("/", 1)[0]
    return str(Path(url).parent)


def bundle_name(prefix: str) -> str:
    return prefix.replace("/", "+") or "root"


async def pull_all(url: str, out: Path, *, progress: Callable[[str], None] | None = None) -> dict[str, PullResult]:
    """Pull every ledger prefix of the store at url into ``out/<prefix>/``; `UnusableInput` if there is none."""
    root = open_store(url)
    try:
        prefixes = await discover(root)
    finally:
        await root.close()
    if not prefixes:
        raise UnusableInput(f"{url} holds no ledger under any prefix")
    results: dict[str, PullResult] = {}
    for prefix in prefixes:
        if progress:
            progress(prefix)
        store = open_store(sub_url(url, prefix))
        try:
            results[prefix] = await pull(store, out / bundle_name(prefix))
        finally:
            await store.close()
    return results


# ---------------------------------------------------------------------------------------------- verifying
@dataclass
class OriginResult:
    """One ledger found under a prefix: what it claims to be, and its own verification."""

    prefix: str
    bundle: Path
    origin: str | None  # the origin its checkpoints name (checked against the anchor by the verifier)
    report: Report | None  # None when no anchor was expected for it (an extra origin is not verified)
    newest_checkpoint_ns: int | None
    newest_size: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix,
            "origin": self.origin,
            "verdict": self.report.to_json()["verdict"] if self.report is not None else "not-trusted",
            "records": self.report.records if self.report is not None else None,
            "tree_size": self.newest_size,
            "newest_checkpoint_ns": self.newest_checkpoint_ns,
            "findings": [f.to_json() for f in self.report.findings] if self.report is not None else [],
        }


@dataclass
class OriginsReport:
    """Every origin's result and the findings about the set of origins (missing, extra, stalled, duplicate)."""

    origins: list[OriginResult] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    now_ns: int = 0
    max_silence_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.findings and all(o.report is not None and o.report.ok for o in self.origins)

    def all_findings(self) -> list[Finding]:
        out = list(self.findings)
        for o in self.origins:
            if o.report is not None:
                out.extend(
                    Finding(f.code, f"{o.origin} ({o.prefix or 'root'}): {f.message}", f.segment, f.seq)
                    for f in o.report.findings
                )
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": "intact" if self.ok else "tampered-or-incomplete",
            "origins": [o.to_json() for o in self.origins],
            "max_silence_s": self.max_silence_s,
            "checked_at_ns": self.now_ns,
            "findings": [f.to_json() for f in self.all_findings()],
        }


def _origin_of(bundle: Path) -> tuple[str | None, int | None, int | None]:
    """(origin, time, size) of the newest checkpoint the bundle holds (store's or the segments' own)."""
    note = bundle_checkpoint(bundle) or newest_note(bundle)
    if note is None:
        return None, None, None
    try:
        cp = checkpoint_of(note)
    except NoteError:
        return None, None, None
    return cp.origin, cp.time_ns, cp.size


def bundles_in(folder: Path) -> dict[str, Path]:
    """The ledger bundles (or data directories) directly inside folder, by name ("" for folder itself)."""
    if (folder / "segments").is_dir():
        return {"": folder}
    if not folder.is_dir():
        raise UnusableInput(f"{folder} is not a directory")
    found = {p.name: p for p in sorted(folder.iterdir()) if p.is_dir() and (p / "segments").is_dir()}
    if not found:
        raise UnusableInput(f"no ledger bundle (a folder with segments/) in {folder}")
    return found


def verify_bundles(
    bundles: dict[str, Path],
    trust: OriginsTrust,
    *,
    now_ns: int,
    pulled: dict[str, PullResult] | None = None,
    external: Sequence[bytes] = (),
    workers: int | None = None,
) -> OriginsReport:
    """Verify each bundle on its own against the anchor of its origin, then judge the set of origins."""
    report = OriginsReport(now_ns=now_ns, max_silence_s=trust.max_silence_s)
    seen: dict[str, str] = {}
    for prefix, bundle in bundles.items():
        origin, cp_ns, size = _origin_of(bundle)
        anchor = trust.anchors.get(origin) if origin is not None else None
        result = OriginResult(prefix, bundle, origin, None, cp_ns, size)
        report.origins.append(result)
        if anchor is None:
            report.findings.append(
                Finding(
                    "origin-extra",
                    f"{prefix or bundle}: a ledger of origin {origin!r} the trust file does not list "
                    "(its records are not trusted)",
                )
            )
            continue
        if origin in seen:
            report.findings.append(
                Finding("origin-duplicate", f"origin {origin} is under two prefixes: {seen[origin]!r} and {prefix!r}")
            )
        seen[origin] = prefix  # type: ignore[index]  # anchor found, so origin is a str
        notes = [n for n in external if _note_origin(n) == origin]
        result.report = verify_directory(bundle, anchor, external=notes, workers=workers)
        if pulled is not None and prefix in pulled:
            result.report.findings.extend(pulled[prefix].findings)
        if cp_ns is None:
            report.findings.append(Finding("origin-stalled", f"{origin}: no signed checkpoint at all"))
        elif (now_ns - cp_ns) / 1e9 > trust.max_silence_s:
            report.findings.append(
                Finding(
                    "origin-stalled",
                    f"{origin}: newest checkpoint {(now_ns - cp_ns) / 1e9:.0f} s old, more than the "
                    f"{trust.max_silence_s:g} s a heartbeat of {trust.heartbeat_s:g} s allows",
                )
            )
    for origin in trust.anchors:
        if origin not in seen:
            report.findings.append(Finding("origin-missing", f"origin {origin} is listed in the trust file but absent"))
    return report


def _note_origin(note: bytes) -> str | None:
    try:
        return checkpoint_of(note).origin
    except NoteError:
        return None


async def pull_and_verify_origins(
    url: str, out: Path, trust: OriginsTrust, *, now_ns: int, workers: int | None = None
) -> OriginsReport:
    """Pull every prefix of the store at url into out and verify them as a set."""
    pulled = await pull_all(url, out)
    bundles = {prefix: out / bundle_name(prefix) for prefix, r in pulled.items() if r.segments}
    report = verify_bundles(bundles, trust, now_ns=now_ns, pulled=pulled, workers=workers)
    for prefix, r in pulled.items():
        if not r.segments:
            report.findings.append(Finding("origin-extra", f"{prefix}: objects of the ledger layout but no segment"))
    return report


# ---------------------------------------------------------------------------------------------- one timeline
@dataclass(frozen=True)
class Ordering:
    """How the merged order was made, stated with the timeline.

    Records of one origin keep their sequence order (their own hash chain). Records of different
    origins are ordered by their timestamps, each taken from its own sidecar's clock, with ties broken
    by origin name and seq. Two records of different origins closer in time than `skew_bound_s` may
    have happened in either order: they are marked uncertain.

    The bound is measured from the ledgers when they allow it: a Keycloak session used on one node
    after it was created on another is a causal pair (the later request was sent after the earlier
    response, and a sidecar records an event before it answers), so the later record's time minus
    the earlier one's bounds how far the later node's clock can be behind. With pairs in both
    directions between every two origins the bound is the largest of those limits; otherwise it is
    `DEFAULT_SKEW_S` (or what the auditor states) and says so.
    """

    method: str
    skew_bound_s: float
    measured: bool
    pairs: int
    origins: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "skew_bound_s": self.skew_bound_s,
            "skew_measured": self.measured,
            "causal_pairs": self.pairs,
            "origins": list(self.origins),
        }

    def describe(self) -> str:
        how = (
            f"measured from {self.pairs} cross-node session pairs"
            if self.measured
            else "assumed (the ledgers hold no cross-node pairs both ways)"
        )
        return (
            f"order: per-origin seq, across origins by timestamp ({', '.join(self.origins)}); "
            f"clock-skew bound {self.skew_bound_s * 1000:.0f} ms {how}; '~' marks records of different "
            "origins closer than the bound (order uncertain)"
        )


def measure_skew(streams: dict[str, list[dict[str, Any]]]) -> tuple[float | None, int]:
    """(bound in seconds, causal pairs seen) from sessions first seen on one origin and used on another.

    For origins X, Y: limit(X→Y) = min over pairs (ts of the later record on Y − ts of the session's
    first record on X). Y's clock is at most limit(Y→X) behind X's... so |skew| ≤ max(limit(X→Y),
    limit(Y→X)) when both are known. None when some pair of origins lacks either direction.
    """
    first: dict[str, tuple[int, str]] = {}  # session -> (ts, origin) of its first record anywhere
    for origin, recs in streams.items():
        for rec in recs:
            s = (rec.get("event") or {}).get("session")
            if s and (s not in first or int(rec["ts"]) < first[s][0]):
                first[s] = (int(rec["ts"]), origin)
    limits: dict[tuple[str, str], int] = {}
    pairs = 0
    for origin, recs in streams.items():
        for rec in recs:
            s = (rec.get("event") or {}).get("session")
            if not s or s not in first or first[s][1] == origin:
                continue
            ts0, o0 = first[s]
            gap = int(rec["ts"]) - ts0
            key = (o0, origin)
            limits[key] = min(limits.get(key, gap), gap)
            pairs += 1
    names = sorted(streams)
    bound = 0
    for i, x in enumerate(names):
        for y in names[i + 1 :]:
            if (x, y) not in limits or (y, x) not in limits:
                return None, pairs
            bound = max(bound, limits[(x, y)], limits[(y, x)], 0)
    return bound / 1e9, pairs


def merged(
    streams: dict[str, list[dict[str, Any]]], *, skew_bound_s: float | None = None
) -> tuple[Ordering, list[tuple[str, dict[str, Any], bool]]]:
    """All origins' records in one order: (origin, record, order-uncertain) each, and how it was made."""
    measured, pairs = measure_skew(streams) if len(streams) > 1 else (0.0, 0)
    if skew_bound_s is not None:
        bound, is_measured = skew_bound_s, False
    elif measured is not None:
        bound, is_measured = measured, len(streams) > 1
    else:
        bound, is_measured = DEFAULT_SKEW_S, False
    ordering = Ordering("timestamp, then origin, then seq", bound, is_measured, pairs, tuple(sorted(streams)))

    def keyed(origin: str, recs: list[dict[str, Any]]) -> Iterator[tuple[int, str, int, dict[str, Any]]]:
        for rec in recs:  # already in seq order: heapq.merge keeps it
            yield int(rec["ts"]), origin, int(rec["seq"]), rec

    rows = [(o, r) for _ts, o, _seq, r in heapq.merge(*(keyed(o, rs) for o, rs in streams.items()))]
    window = int(bound * 1e9)
    uncertain = [False] * len(rows)
    for i, (origin, rec) in enumerate(rows):  # neighbours within the bound from another origin
        ts = int(rec["ts"])
        j = i + 1
        while j < len(rows) and int(rows[j][1]["ts"]) - ts <= window:
            if rows[j][0] != origin:
                uncertain[i] = uncertain[j] = True
            j += 1
    return ordering, [(o, r, u) for (o, r), u in zip(rows, uncertain, strict=True)]


def origin_streams(
    bundles: dict[str, Path],
    trust: OriginsTrust | None,
    read: Callable[[Path, TrustAnchor | None], Iterator[dict[str, Any]]],
) -> dict[str, list[dict[str, Any]]]:
    """Each bundle's records, read through `read` (verified against its origin's anchor unless trust is None)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for prefix, bundle in bundles.items():
        segment_files(bundle)  # UnusableInput if it holds no segments
        origin = _origin_of(bundle)[0] or prefix
        anchor = trust.anchors.get(origin) if trust is not None else None
        if trust is not None and anchor is None:
            raise UnusableInput(f"{bundle}: origin {origin!r} is not in the trust file")
        out[origin] = list(read(bundle, anchor))
    return out


async def discover_url(url: str) -> list[str]:
    """`discover` on the store a URL (or folder) names."""
    store = open_store(url)
    try:
        return await discover(store)
    finally:
        await store.close()
