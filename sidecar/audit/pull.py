"""`sidecar pull`: an auditor's copy of a ledger from a store, checked as it arrives.

The output folder is a ledger bundle `sidecar verify` reads:

    <out>/segments/<n>.seg     sealed segments as stored; the open segment rebuilt from its tail chunks
    <out>/checkpoints/*.note   every checkpoint the store holds (the newest finds a cut tail)
    <out>/snapshots/*.json     the drift monitor's state snapshots (each must hash to its name)
    <out>/objects/...          the raw objects, exactly as fetched (resume state and evidence)

Pulling is resumable: objects already in `objects/` with the right size are not
fetched again. Every object must be accounted for by the ledger; anything else
is a `Finding`:

* `remote-unexpected`: a key outside the layout (such a key is never turned into
  a local path unless it is a valid store key);
* `remote-overwritten`: an object with more than one version (written behind
  the replicator's back; the first version is the ledger's);
* `remote-size`: an object whose bytes differ in length from its listing;
* `remote-chunk-gap`: tail chunks of an open segment that leave a gap;
  `remote-chunk-mismatch`: overlapping tail chunks that disagree, or tail
  chunks of a sealed segment that are not that segment's bytes over their
  range (chunks may overlap: a retry ships a longer range from the same start);
* `remote-size` also for a chunk whose bytes are not as long as its key's range;
* `remote-checkpoint-unknown`: a checkpoint object that is not byte for byte a
  checkpoint or seal in the segments, or whose key does not match its body;
* `remote-damaged`: a segment whose frames do not parse;
* `remote-snapshot-mismatch`: a state snapshot whose bytes do not hash to its name.

Signatures, chains and Merkle roots are `sidecar verify`'s job on the bundle.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sidecar.audit.verifier import UnusableInput
from sidecar.core import framing
from sidecar.core.note import NoteError, checkpoint_of
from sidecar.core.verify import Finding
from sidecar.replicate.layout import Parsed, checkpoint_key, parse_key
from sidecar.replicate.store import ObjectInfo, ObjectStore, key_problem


@dataclass
class PullResult:
    objects: int = 0
    fetched: int = 0
    bytes_fetched: int = 0
    segments: int = 0
    checkpoints: list[Path] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def newest_checkpoint(self) -> Path | None:
        return max(self.checkpoints, key=lambda p: p.name) if self.checkpoints else None


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


async def pull(
    store: ObjectStore,
    out: Path,
    *,
    check_versions: bool = True,
    concurrency: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> PullResult:
    """Copy every object of store into out (concurrently, skipping what is already there) and rebuild
    the segments; raises `UnusableInput` if the store holds no object of the ledger's layout at all."""
    result = PullResult()
    add = result.findings.append
    infos = await store.list("")
    result.objects = len(infos)
    sealed: dict[int, ObjectInfo] = {}
    chunks: dict[int, list[tuple[int, int, ObjectInfo]]] = {}
    wanted: list[tuple[ObjectInfo, Parsed | None]] = []
    for info in infos:
        problem = key_problem(info.key)
        parsed = parse_key(info.key) if problem is None else None
        if problem is not None:
            # SECURITY: a key from the remote side never becomes a local path unless it is a valid store key.
            add(Finding("remote-unexpected", f"object {info.key!r} is not a valid key ({problem}); not fetched"))
            continue
        if parsed is None:
            add(Finding("remote-unexpected", f"object {info.key} is not part of the ledger layout"))
        elif parsed.kind == "segment":
            sealed[parsed.segment] = info
        elif parsed.kind == "chunk":
            chunks.setdefault(parsed.segment, []).append((parsed.offset, parsed.end, info))
        wanted.append((info, parsed))
    if not any(parsed is not None for _, parsed in wanted):
        raise UnusableInput(
            f"{store.url} holds no ledger segments"
            + (f" ({len(infos)} other objects)" if infos else " (it is empty or does not exist)")
        )
    try:
        (out / "objects").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UnusableInput(f"cannot write the bundle to {out}: {exc.strerror or exc}") from exc

    gate = asyncio.Semaphore(max(1, concurrency))
    finished = 0

    async def fetch(info: ObjectInfo, want_data: bool) -> tuple[list[Finding], bytes | None, int | None]:
        nonlocal finished
        found: list[Finding] = []
        fetched: int | None = None  # bytes fetched now; None when the copy from an earlier pull was kept
        async with gate:
            local = out / "objects" / info.key
            data: bytes | None = None
            if local.is_file() and local.stat().st_size == info.size:
                data = local.read_bytes() if want_data else None
            else:
                data = await store.get(info.key)
                if len(data) != info.size:
                    found.append(
                        Finding("remote-size", f"object {info.key} listed as {info.size} bytes, fetched {len(data)}")
                    )
                await asyncio.to_thread(_write, local, data)
                fetched = len(data)
            count = info.versions
            if count is None and check_versions:
                count = len(await store.versions(info.key))
            if count is not None and count > 1:
                found.append(
                    Finding(
                        "remote-overwritten",
                        f"object {info.key} has {count} versions: it was "
                        "overwritten after the replicator wrote it; the first version is the ledger's",
                    )
                )
        finished += 1
        if progress:
            progress(finished, len(wanted))
        return found, data if want_data else None, fetched

    fetches = await asyncio.gather(
        *(fetch(info, p is not None and p.kind in ("checkpoint", "snapshot")) for info, p in wanted)
    )
    checkpoints: dict[str, bytes] = {}  # key -> note bytes
    for (info, parsed), (found, data, fetched) in zip(wanted, fetches, strict=True):
        result.findings.extend(found)
        if fetched is not None:
            result.fetched += 1
            result.bytes_fetched += fetched
        if parsed is not None and parsed.kind == "snapshot" and data is not None:
            if hashlib.sha256(data).hexdigest() != parsed.digest:
                add(Finding("remote-snapshot-mismatch", f"object {info.key} does not hash to its name"))
            else:
                _write(out / info.key, data)
        if parsed is not None and parsed.kind == "checkpoint" and data is not None:
            _check_checkpoint_key(info.key, data, result)
            checkpoints[info.key] = data
            dest = out / "checkpoints" / info.key.split("/", 1)[1]
            if not (dest.is_file() and dest.read_bytes() == data):
                _write(dest, data)
            result.checkpoints.append(dest)
    seg_dir = out / "segments"
    seg_dir.mkdir(parents=True, exist_ok=True)
    notes: set[bytes] = set()
    for n in sorted(set(sealed) | set(chunks)):
        name = f"{n:08d}.seg"
        parts = sorted(chunks.get(n, []), key=lambda c: (c[0], c[1]))
        if n in sealed:
            data = (out / "objects" / sealed[n].key).read_bytes()
            if parts:
                _check_history(n, data, parts, out, result)
        else:
            data = _assemble(n, parts, out, result)
        notes.update(_check_frames(name, data, result))
        _write(seg_dir / name, data)
        result.segments += 1
    for key, note in sorted(checkpoints.items()):
        if note not in notes:
            add(
                Finding(
                    "remote-checkpoint-unknown",
                    f"checkpoint object {key} is not a checkpoint or seal in the ledger's segments",
                )
            )
    return result


def _check_checkpoint_key(key: str, note: bytes, result: PullResult) -> None:
    try:
        cp = checkpoint_of(note)
    except NoteError as exc:
        result.findings.append(Finding("remote-checkpoint-unknown", f"checkpoint object {key} does not parse: {exc}"))
        return
    if checkpoint_key(cp.size, cp.time_ns) != key:
        result.findings.append(
            Finding(
                "remote-checkpoint-unknown",
                f"checkpoint object {key} holds the checkpoint of size {cp.size} "
                f"at time {cp.time_ns}, which its key does not name",
            )
        )


def _chunk_bytes(n: int, info: ObjectInfo, start: int, end: int, out: Path, result: PullResult) -> bytes | None:
    data = (out / "objects" / info.key).read_bytes()
    if len(data) != end - start:
        result.findings.append(
            Finding(
                "remote-size",
                f"tail chunk {info.key} names {end - start} bytes [{start}, {end}) but holds {len(data)}",
                f"{n:08d}.seg",
            )
        )
        return None
    return data


def _assemble(n: int, parts: list[tuple[int, int, ObjectInfo]], out: Path, result: PullResult) -> bytes:
    """The open segment from its chunks, swept in start order: overlaps must agree, gaps end it."""
    buf = bytearray()
    for start, end, info in parts:
        data = _chunk_bytes(n, info, start, end, out, result)
        if data is None:
            continue
        if start > len(buf):
            result.findings.append(
                Finding(
                    "remote-chunk-gap",
                    f"tail chunk {info.key} starts at {start}, the chunks before it end at {len(buf)}",
                    f"{n:08d}.seg",
                )
            )
            break
        overlap = bytes(buf[start:end])
        if data[: len(overlap)] != overlap:
            result.findings.append(
                Finding(
                    "remote-chunk-mismatch",
                    f"tail chunk {info.key} disagrees with the chunks before it over [{start}, {start + len(overlap)})",
                    f"{n:08d}.seg",
                )
            )
            break
        if end > len(buf):
            buf.extend(data[len(buf) - start :])
    return bytes(buf)


def _check_history(
    n: int, segment: bytes, parts: list[tuple[int, int, ObjectInfo]], out: Path, result: PullResult
) -> None:
    """The tail chunks a sealed segment was shipped in must be its bytes over their ranges."""
    for start, end, info in parts:
        data = _chunk_bytes(n, info, start, end, out, result)
        if data is not None and segment[start:end] != data:
            result.findings.append(
                Finding(
                    "remote-chunk-mismatch",
                    f"tail chunk {info.key} ({len(data)} bytes at offset {start}) "
                    "differs from the sealed segment's bytes there",
                    f"{n:08d}.seg",
                )
            )


def _check_frames(name: str, data: bytes, result: PullResult) -> set[bytes]:
    """Report damage; return the checkpoint and seal notes the segment holds."""
    notes: set[bytes] = set()
    for frame in framing.iter_frames(data):
        if isinstance(frame, framing.FrameDamage):
            result.findings.append(Finding("remote-damaged", f"offset {frame.offset}: {frame.reason}", name))
            break
        if frame.kind in (framing.CHECKPOINT, framing.SEAL):
            notes.add(frame.body)
    return notes
