"""Segment framing: how records, checkpoints and seals sit in a segment file.

A segment file is a sequence of frames:

    kind (1 byte) | length (4 bytes, big-endian) | body (length bytes) | crc32 (4 bytes, big-endian)

The CRC-32 (zlib polynomial) covers kind, length and body. It is not a security
mechanism (hashes and signatures are); it tells a torn or half-written tail
after a crash from tampering, and finds damage fast.

Kinds: `H` segment header (JCS JSON), `R` record, `C` checkpoint (signed note),
`S` seal (signed note; always the last frame of a sealed segment).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

HEADER = 0x48  # 'H'
RECORD = 0x52  # 'R'
CHECKPOINT = 0x43  # 'C'
SEAL = 0x53  # 'S'
KINDS = frozenset({HEADER, RECORD, CHECKPOINT, SEAL})
KIND_NAMES = {HEADER: "header", RECORD: "record", CHECKPOINT: "checkpoint", SEAL: "seal"}

MAX_FRAME = 16 * 1024 * 1024
_HEAD = struct.Struct(">BI")
_CRC = struct.Struct(">I")
OVERHEAD = _HEAD.size + _CRC.size


def encode_frame(kind: int, body: bytes) -> bytes:
    head = _HEAD.pack(kind, len(body))
    return head + body + _CRC.pack(zlib.crc32(body, zlib.crc32(head)))


@dataclass(frozen=True, slots=True)
class Frame:
    kind: int
    offset: int
    body: bytes


@dataclass(frozen=True, slots=True)
class FrameDamage:
    """Why reading stopped before the end of the data."""

    offset: int
    reason: str
    torn: bool  # True if this looks like an interrupted write at the tail


def _valid_frame_after(view: memoryview, start: int) -> bool:
    """Whether a whole, CRC-valid frame starts anywhere at or after `start`.

    A torn write only damages the end of a file: if an intact frame follows the damage, the
    damage is in the middle (tampering or media error), never a crash. Only called on damage.
    """
    end = len(view)
    crc32 = zlib.crc32
    data = bytes(view[start:])
    for kind in KINDS:
        pos = data.find(bytes([kind]))
        while pos >= 0:
            at = start + pos
            if end - at >= OVERHEAD:
                _, length = _HEAD.unpack_from(view, at)
                stop = at + _HEAD.size + length
                if length <= MAX_FRAME and stop + _CRC.size <= end:
                    (crc,) = _CRC.unpack_from(view, stop)
                    if crc32(view[at + _HEAD.size : stop], crc32(view[at : at + _HEAD.size])) == crc:
                        return True
            pos = data.find(bytes([kind]), pos + 1)
    return False


def iter_frames(data: bytes | memoryview) -> Iterator[Frame | FrameDamage]:
    """Yield frames in order; on the first damaged frame yield FrameDamage and stop."""
    view = memoryview(data)
    end = len(view)
    pos = 0
    unpack_head = _HEAD.unpack_from
    unpack_crc = _CRC.unpack_from
    crc32 = zlib.crc32
    while pos < end:
        if end - pos < _HEAD.size:
            yield FrameDamage(pos, f"{end - pos} stray bytes at the end, too short for a frame header", True)
            return
        kind, length = unpack_head(view, pos)
        if kind == 0 and length == 0 and not any(view[pos:]):
            yield FrameDamage(pos, f"{end - pos} zero bytes at the end", True)
            return
        if kind not in KINDS:
            # Zeros (preallocated blocks) or garbage after a torn frame are still a torn tail.
            yield FrameDamage(pos, f"unknown frame kind 0x{kind:02x}", not _valid_frame_after(view, pos + 1))
            return
        if length > MAX_FRAME:
            yield FrameDamage(pos, f"frame length {length} exceeds the maximum {MAX_FRAME}", False)
            return
        stop = pos + _HEAD.size + length
        if stop + _CRC.size > end:
            yield FrameDamage(
                pos, f"frame of {length} bytes runs past the end of the data", not _valid_frame_after(view, pos + 1)
            )
            return
        body = view[pos + _HEAD.size : stop]
        (crc,) = unpack_crc(view, stop)
        if crc32(body, crc32(view[pos : pos + _HEAD.size])) != crc:
            yield FrameDamage(pos, "frame checksum mismatch", not _valid_frame_after(view, pos + 1))
            return
        yield Frame(kind, pos, bytes(body))
        pos = stop + _CRC.size
