"""Test helpers: build a small real ledger, then tamper with its segment files. [dev only]

No runtime module imports this module (tests/test_layers.py checks it); only tests do.

`build_ledger` writes a ledger the way the sidecar does (through `Ledger`), with
synthetic identity events appended in concurrent batches, so the files hold
several checkpoints and, with a small `segment_max_bytes`, several sealed
segments (and key rotations with a small `epoch_s`).

The tamper helpers work on frames, `(kind, body)` pairs, and re-encode them
with valid CRCs, so an attack is found by the hash chain, the Merkle roots or
the signatures, not by the framing checksum. `flip_byte` is the exception: it
changes raw bytes and leaves the CRC alone. `forge_segment` is the attacker who
holds some private key: it renumbers and re-chains a segment's records and
re-signs its checkpoints and seal so that the segment is consistent in itself.

Sealed segments are mode 0444; every writer here makes the file writable first
and restores its mode afterwards.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import shutil
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sidecar.clock import Clock, FixedClock
from sidecar.core import framing, merkle
from sidecar.core.events import EventType, IdentityEvent, Outcome, Party
from sidecar.core.keys import PublicKey, Signer
from sidecar.core.merkle import CompactRange
from sidecar.core.note import Checkpoint, Seal, SegmentBytes, checkpoint_of, sign_note
from sidecar.core.record import Record, decode_record, encode_record, record_hash
from sidecar.core.segment import SEGMENT_DIR, SegmentHeader
from sidecar.core.trust import TrustAnchor
from sidecar.ledger.keystore import KeyStore
from sidecar.ledger.writer import Ledger, LedgerConfig

__all__ = [
    "TEST_POLICY_DIGEST",
    "Frame",
    "append_events",
    "build_ledger",
    "checkpoint_notes",
    "copy_ledger",
    "flip_byte",
    "forge_segment",
    "frame_offsets",
    "header_of",
    "latest_checkpoint",
    "leaf_hashes",
    "locate",
    "read_frames",
    "records_of",
    "rewrite_record",
    "segment_paths",
    "synthetic_event",
    "tree_root",
    "write_bytes",
    "write_frames",
]

Frame = tuple[int, bytes]
"""A frame as the helpers see it: (kind, body); kinds are the constants in sidecar.core.framing."""

TEST_POLICY_DIGEST = hashlib.sha256(b"sidecar.testing policy").hexdigest()
"""The policy digest test ledgers put in every segment header and seal."""

DEFAULT_ORIGIN = "test.example/ledger"
_BATCH = 8


# ---------------------------------------------------------------------------------------------- building
def synthetic_event(i: int) -> dict[str, Any]:
    """A deterministic, varied identity event (the i-th of a synthetic workload) as a record payload."""
    user = Party(id=f"u-{i:04d}", username=f"user{i:04d}", kind="user")
    admin = Party(id="u-admin", username="admin", kind="user")
    kind = i % 6
    if kind == 0:
        event = IdentityEvent(
            EventType.LOGIN_SUCCEEDED,
            Outcome.SUCCEEDED,
            realm="acme",
            actor=user,
            client="web",
            source_ip=f"192.0.2.{i % 250 + 1}",
            session=f"s-{i}",
        )
    elif kind == 1:
        event = IdentityEvent(
            EventType.ROLE_GRANTED,
            Outcome.SUCCEEDED,
            realm="acme",
            actor=admin,
            target=user,
            details={"roles": ["viewer", f"team-{i % 3}"]},
        )
    elif kind == 2:
        event = IdentityEvent(EventType.USER_CREATED, Outcome.SUCCEEDED, realm="acme", actor=admin, target=user)
    elif kind == 3:
        event = IdentityEvent(
            EventType.LOGIN_FAILED,
            Outcome.FAILED,
            realm="acme",
            actor=user,
            client="web",
            error="invalid_user_credentials",
        )
    elif kind == 4:
        event = IdentityEvent(
            EventType.GROUP_JOINED,
            Outcome.SUCCEEDED,
            realm="acme",
            actor=admin,
            target=user,
            details={"group": "/staff"},
        )
    else:
        event = IdentityEvent(
            EventType.TOKEN_ISSUED, Outcome.SUCCEEDED, realm="acme", actor=user, client="api", request_id=f"req-{i}"
        )
    return event.to_json()


async def append_events(
    path: Path,
    events: Sequence[dict[str, Any]],
    *,
    clock: Clock,
    segment_max_bytes: int = 4096,
    epoch_s: float = 1e9,
    policy_digest: str = TEST_POLICY_DIGEST,
    batch: int = _BATCH,
) -> None:
    """Open the ledger in `path`, append `events` in concurrent batches of `batch`, and close it.

    Reuse the same `clock` across calls on one ledger: checkpoint times must never go backwards.
    """
    config = LedgerConfig(segment_max_bytes=segment_max_bytes, epoch_s=epoch_s, fsync=False)
    ledger = await Ledger.open(path, config=config, clock=clock, policy_digest=policy_digest)
    try:
        for start in range(0, len(events), batch):
            await asyncio.gather(*(ledger.append(e) for e in events[start : start + batch]))
    finally:
        await ledger.close()


async def build_ledger(
    path: Path,
    *,
    events: int,
    origin: str = DEFAULT_ORIGIN,
    segment_max_bytes: int = 4096,
    epoch_s: float = 1e9,
    clock: Clock | None = None,
    policy_digest: str = TEST_POLICY_DIGEST,
) -> TrustAnchor:
    """Create keys in `path` and write `events` synthetic events; returns the trust anchor.

    The ledger also holds the writer's own records (ledger.started, key.rotated).
    """
    anchor = KeyStore(path).init(origin)
    await append_events(
        path,
        [synthetic_event(i) for i in range(events)],
        clock=clock or FixedClock(),
        segment_max_bytes=segment_max_bytes,
        epoch_s=epoch_s,
        policy_digest=policy_digest,
    )
    return anchor


def copy_ledger(src: Path, dst: Path) -> Path:
    """Copy a ledger directory (segments, keys, trust file), modes included; returns `dst`."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".lock"))
    return dst


# ---------------------------------------------------------------------------------------------- reading
def segment_paths(ledger_dir: Path) -> list[Path]:
    """The ledger's segment files in order."""
    return sorted((ledger_dir / SEGMENT_DIR).glob("*.seg"))


def read_frames(path: Path) -> list[Frame]:
    """All frames of a segment file; raises ValueError if the framing is damaged."""
    frames: list[Frame] = []
    for f in framing.iter_frames(path.read_bytes()):
        if isinstance(f, framing.FrameDamage):
            raise ValueError(f"{path.name}: offset {f.offset}: {f.reason}")
        frames.append((f.kind, f.body))
    return frames


def frame_offsets(path: Path) -> list[int]:
    """The byte offset of every frame in a segment file."""
    return [f.offset for f in framing.iter_frames(path.read_bytes()) if isinstance(f, framing.Frame)]


def header_of(path: Path) -> SegmentHeader:
    kind, body = read_frames(path)[0]
    assert kind == framing.HEADER
    return SegmentHeader.decode(body)


def records_of(path: Path) -> list[Record]:
    """The parsed records of one segment file."""
    return [decode_record(body) for kind, body in read_frames(path) if kind == framing.RECORD]


def checkpoint_notes(path: Path) -> list[bytes]:
    """The signed notes of a segment's checkpoints and seal, in file order."""
    return [body for kind, body in read_frames(path) if kind in (framing.CHECKPOINT, framing.SEAL)]


def latest_checkpoint(ledger_dir: Path) -> bytes:
    """The newest signed checkpoint (or seal) note of the ledger: what a witness would have kept."""
    for path in reversed(segment_paths(ledger_dir)):
        notes = checkpoint_notes(path)
        if notes:
            return notes[-1]
    raise ValueError(f"no checkpoint in {ledger_dir}")


def locate(ledger_dir: Path, seq: int) -> tuple[Path, int]:
    """The segment file holding record `seq` and that record's frame index in it."""
    for path in segment_paths(ledger_dir):
        for i, (kind, body) in enumerate(read_frames(path)):
            if kind == framing.RECORD and decode_record(body).seq == seq:
                return path, i
    raise KeyError(f"no record with seq {seq} in {ledger_dir}")


def leaf_hashes(ledger_dir: Path) -> list[bytes]:
    """Every record's hash (Merkle leaf), in order, across all segments."""
    return [r.hash for path in segment_paths(ledger_dir) for r in records_of(path)]


def tree_root(ledger_dir: Path, size: int) -> bytes:
    """The Merkle root over the first `size` records."""
    return merkle.root(leaf_hashes(ledger_dir)[:size])


# ---------------------------------------------------------------------------------------------- writing
def write_bytes(path: Path, data: bytes) -> None:
    """Replace a file's bytes, making a read-only (sealed) file writable first and keeping its mode."""
    mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o644
    if path.exists():
        os.chmod(path, mode | stat.S_IWUSR)
    path.write_bytes(data)
    os.chmod(path, mode)


def write_frames(path: Path, frames: Sequence[Frame]) -> None:
    """Write `frames` as the whole segment file, each with a valid CRC."""
    write_bytes(path, b"".join(framing.encode_frame(kind, body) for kind, body in frames))


def damage(raw: bytes, at: int, how: str, chunk: bytes) -> bytes:
    """`raw` with `chunk` written over ("set"), put in ("insert") or as many bytes cut out ("delete") at `at`."""
    out = bytearray(raw)
    if how == "set":
        out[at : at + len(chunk)] = chunk
    elif how == "insert":
        out[at:at] = chunk
    elif how == "delete":
        del out[at : at + len(chunk)]
    else:
        raise ValueError(f"unknown damage {how!r}")
    return bytes(out)


def flip_byte(path: Path, offset: int, value: int | None = None) -> tuple[int, int]:
    """Set the byte at `offset` to `value` (default: its bitwise complement), CRC untouched; returns (old, new)."""
    data = bytearray(path.read_bytes())
    old = data[offset]
    new = (old ^ 0xFF) if value is None else value
    if new == old:
        raise ValueError(f"byte {offset} of {path.name} already is 0x{old:02x}")
    data[offset] = new
    write_bytes(path, bytes(data))
    return old, new


def rewrite_record(path: Path, index: int, change: Callable[[bytes], bytes]) -> tuple[bytes, bytes]:
    """Replace the body of frame `index` (a record) by `change(body)`, CRC fixed up; returns (old, new)."""
    frames = read_frames(path)
    kind, old = frames[index]
    assert kind == framing.RECORD, f"frame {index} of {path.name} is not a record"
    new = change(old)
    frames[index] = (kind, new)
    write_frames(path, frames)
    return old, new


def forge_segment(
    path: Path,
    signer: Signer,
    *,
    header_key: PublicKey | None = None,
    change: Callable[[int, dict[str, Any]], dict[str, Any] | None] | None = None,
) -> None:
    """Rewrite a segment consistently, as an attacker holding `signer` would.

    `change(seq, event)` may return a replacement event (or None to drop the record); records are
    then renumbered and re-chained from the header's `prev`, and every checkpoint and the seal get
    the new size and root (over the header's Merkle range plus these records) and are signed by
    `signer`. `header_key`, if given, replaces the key the header names. Earlier and later segments
    are left alone, so what links segments still shows the rewrite.
    """
    frames = read_frames(path)
    header = SegmentHeader.decode(frames[0][1])
    if header_key is not None:
        header = dataclasses.replace(header, key=header_key)
    out: list[Frame] = [(framing.HEADER, header.encode())]
    written = bytearray(framing.encode_frame(framing.HEADER, out[0][1]))
    seq, prev = header.first_seq, header.prev
    crange = CompactRange(0, header.first_seq, header.range)
    first_hash: bytes | None = None
    for kind, body in frames[1:]:
        if kind == framing.RECORD:
            rec = decode_record(body)
            event = change(rec.seq, rec.event) if change is not None else rec.event
            if event is None:
                continue
            new_body = encode_record(seq, rec.ts_ns, prev, event, header.version)
            prev = record_hash(new_body)
            first_hash = first_hash or prev
            crange.append(prev)
            seq += 1
            out.append((kind, new_body))
        elif kind in (framing.CHECKPOINT, framing.SEAL):
            old = checkpoint_of(body)
            seal = None
            if old.seal is not None:
                assert first_hash is not None
                seal = Seal(old.seal.segment, header.first_seq, seq - 1, first_hash, prev, old.seal.policy_digest)
            # kc-ledger/2: the checkpoint signs the segment's bytes before it, as the writer's do.
            segment = (
                SegmentBytes(header.segment, len(written), hashlib.sha256(written).digest())
                if header.version >= 2
                else None
            )
            cp = Checkpoint(old.origin, seq, crange.root(), old.time_ns, seal, segment)
            out.append((kind, sign_note(cp.body(), signer)))
        else:
            out.append((kind, body))
        written += framing.encode_frame(*out[-1])
    write_frames(path, out)
