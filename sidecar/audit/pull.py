"""`sidecar pull`: an auditor's copy of a ledger from a store, checked as it arrives.

The output folder is a ledger bundle `sidecar verify` reads:

    <out>/segments/<n>.seg     sealed segments as stored; the open segment rebuilt from its tail chunks
    <out>/checkpoints/*.note   every checkpoint the store holds (the newest finds a cut tail)
    <out>/objects/...          the raw objects, exactly as fetched (resume state and evidence)

Pulling is resumable: objects already in `objects/` with the right size are not
fetched again. Anything in the store that the layout does not account for, any
object with more than one version (overwritten behind the replicator's back),
and any gap or overlap in an open segment's chunks is a `Finding`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sidecar.core import framing
from sidecar.core.verify import Finding
from sidecar.replicate.layout import parse_key
from sidecar.replicate.store import ObjectInfo, ObjectStore


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


async def pull(store: ObjectStore, out: Path, *, check_versions: bool = True,
               progress: Callable[[int, int], None] | None = None) -> PullResult:
    result = PullResult()
    infos = await store.list("")
    result.objects = len(infos)
    sealed: dict[int, ObjectInfo] = {}
    chunks: dict[int, list[tuple[int, ObjectInfo]]] = {}
    for info in infos:
        parsed = parse_key(info.key)
        if parsed is None:
            result.findings.append(Finding("remote-unexpected", f"object {info.key} is not part of the ledger layout"))
        elif parsed.kind == "segment":
            sealed[parsed.segment] = info
        elif parsed.kind == "chunk":
            chunks.setdefault(parsed.segment, []).append((parsed.offset, info))
    for done, info in enumerate(infos, start=1):
        local = out / "objects" / info.key
        if not (local.exists() and local.stat().st_size == info.size):
            data = await store.get(info.key)
            if len(data) != info.size:
                result.findings.append(Finding("remote-size", f"object {info.key} listed as {info.size} bytes, "
                                               f"fetched {len(data)}"))
            _write(local, data)
            result.fetched += 1
            result.bytes_fetched += len(data)
        if check_versions:
            versions = await store.versions(info.key)
            if len(versions) > 1:
                result.findings.append(Finding(
                    "remote-overwritten", f"object {info.key} has {len(versions)} versions: it was overwritten "
                    "after the replicator wrote it; the first version is the ledger's"))
        parsed = parse_key(info.key)
        if parsed is not None and parsed.kind == "checkpoint":
            dest = out / "checkpoints" / info.key.split("/", 1)[1]
            if not dest.exists():
                _write(dest, local.read_bytes())
            result.checkpoints.append(dest)
        if progress:
            progress(done, len(infos))
    seg_dir = out / "segments"
    seg_dir.mkdir(parents=True, exist_ok=True)
    for n in sorted(set(sealed) | set(chunks)):
        name = f"{n:08d}.seg"
        if n in sealed:
            data = (out / "objects" / sealed[n].key).read_bytes()
        else:
            data = _assemble(n, sorted(chunks[n], key=lambda c: c[0]), out, result)
        _check_frames(name, data, result)
        _write(seg_dir / name, data)
        result.segments += 1
    return result


def _assemble(n: int, parts: list[tuple[int, ObjectInfo]], out: Path, result: PullResult) -> bytes:
    buf = bytearray()
    for offset, info in parts:
        if offset != len(buf):
            kind = "gap" if offset > len(buf) else "overlap"
            result.findings.append(Finding("remote-chunk-" + kind, f"tail chunk {info.key} starts at {offset}, "
                                           f"the chunks before it end at {len(buf)}", f"{n:08d}.seg"))
            break
        buf.extend((out / "objects" / info.key).read_bytes())
    return bytes(buf)


def _check_frames(name: str, data: bytes, result: PullResult) -> None:
    for frame in framing.iter_frames(data):
        if isinstance(frame, framing.FrameDamage):
            result.findings.append(Finding("remote-damaged", f"offset {frame.offset}: {frame.reason}", name))
            return
