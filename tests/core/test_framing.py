"""Segment framing: frames round-trip, and every kind of damage is named, torn tails told from tampering."""

from __future__ import annotations

import pytest

from sidecar.core import framing
from sidecar.core.framing import CHECKPOINT, HEADER, RECORD, SEAL, Frame, FrameDamage, encode_frame, iter_frames

_TWO = encode_frame(HEADER, b'{"h":1}') + encode_frame(RECORD, b"record body")


def _damage(data: bytes) -> FrameDamage:
    *_, last = iter_frames(data)
    assert isinstance(last, FrameDamage)
    return last


def test_frames_round_trip_with_their_offsets() -> None:
    """Encoded frames of every kind read back in order, each with its kind, offset and body."""
    data = b"".join(encode_frame(k, bytes([k]) * 3) for k in (HEADER, RECORD, CHECKPOINT, SEAL))
    frames = list(iter_frames(data))
    assert frames == [
        Frame(k, i * (framing.OVERHEAD + 3), bytes([k]) * 3) for i, k in enumerate((HEADER, RECORD, CHECKPOINT, SEAL))
    ]
    assert list(iter_frames(memoryview(data))) == frames
    assert list(iter_frames(b"")) == []


def test_an_empty_body_is_a_frame() -> None:
    """A frame with a zero-length body is valid (its CRC covers kind and length)."""
    assert list(iter_frames(encode_frame(RECORD, b""))) == [Frame(RECORD, 0, b"")]


def test_a_few_stray_bytes_at_the_end_are_a_torn_tail() -> None:
    """Fewer bytes than a frame head after the last frame is a torn write at the tail."""
    d = _damage(_TWO + b"R\x00")
    assert (d.offset, d.torn) == (len(_TWO), True)
    assert d.reason == "2 stray bytes at the end, too short for a frame header"


def test_zero_bytes_at_the_end_are_a_torn_tail() -> None:
    """Preallocated zeros after the last frame are a torn tail, not tampering."""
    d = _damage(_TWO + bytes(64))
    assert (d.offset, d.reason, d.torn) == (len(_TWO), "64 zero bytes at the end", True)


def test_an_unknown_kind_followed_by_garbage_is_torn() -> None:
    """An unknown kind byte with no intact frame after it is a torn tail."""
    d = _damage(_TWO + b"\x01\x00\x00\x00\x05junkjunk")
    assert (d.offset, d.reason, d.torn) == (len(_TWO), "unknown frame kind 0x01", True)


def test_an_unknown_kind_before_an_intact_frame_is_not_torn() -> None:
    """Damage followed by a whole, CRC-valid frame is in the middle of the file: not a crash."""
    d = _damage(encode_frame(HEADER, b"h") + b"\x01\x00\x00\x00\x00" + encode_frame(RECORD, b"later"))
    assert d.reason == "unknown frame kind 0x01" and d.torn is False


def test_a_frame_longer_than_the_maximum_is_refused() -> None:
    """A length over MAX_FRAME is damage and never looks like a torn write."""
    d = _damage(bytes([RECORD]) + (framing.MAX_FRAME + 1).to_bytes(4, "big") + b"xxxx")
    assert d.reason == f"frame length {framing.MAX_FRAME + 1} exceeds the maximum {framing.MAX_FRAME}"
    assert d.torn is False


def test_a_frame_cut_short_is_torn_at_the_tail() -> None:
    """A frame whose body runs past the end of the data is a torn tail when nothing intact follows."""
    whole = encode_frame(RECORD, b"0123456789")
    d = _damage(_TWO + whole[:-3])
    assert (d.offset, d.reason, d.torn) == (len(_TWO), "frame of 10 bytes runs past the end of the data", True)


def test_a_checksum_mismatch_is_named() -> None:
    """One changed body byte fails the CRC; with nothing intact after it, it reads as a torn tail."""
    bad = bytearray(encode_frame(RECORD, b"0123456789"))
    bad[7] ^= 0xFF
    d = _damage(_TWO + bytes(bad))
    assert (d.offset, d.reason, d.torn) == (len(_TWO), "frame checksum mismatch", True)


def test_a_checksum_mismatch_before_an_intact_frame_is_tampering() -> None:
    """A bad CRC with a valid frame after it cannot come from a crash."""
    bad = bytearray(encode_frame(RECORD, b"0123456789"))
    bad[7] ^= 0xFF
    d = _damage(bytes(bad) + encode_frame(SEAL, b"seal"))
    assert (d.offset, d.torn) == (0, False)


@pytest.mark.parametrize(
    "tail",
    [
        bytes([RECORD]) + (framing.MAX_FRAME + 1).to_bytes(4, "big") + bytes(8),  # candidate too long
        bytes([RECORD]) + (50).to_bytes(4, "big") + bytes(8),  # candidate runs past the end
        bytes([RECORD]) + (0).to_bytes(4, "big") + b"\x00\x00\x00\x01",  # candidate with a bad CRC
        bytes([RECORD]),  # candidate too short to hold a frame
    ],
)
def test_only_a_whole_crc_valid_frame_after_damage_proves_tampering(tail: bytes) -> None:
    """Kind bytes after damage that do not start a whole, CRC-valid frame leave the damage torn."""
    d = _damage(b"\x01\x00\x00\x00\x00" + tail)
    assert d.torn is True
