"""Signed notes and checkpoints: they round-trip, signatures and cosignatures check, and the parser is strict."""

from __future__ import annotations

import base64
import struct

import pytest

from sidecar.core.framing import CHECKPOINT, Frame, iter_frames
from sidecar.core.keys import Signer
from sidecar.core.note import (
    Checkpoint,
    NoteError,
    NoteSignature,
    Seal,
    SegmentBytes,
    add_signatures,
    checkpoint_of,
    cosignature_key_id,
    cosigned_by,
    parse_note,
    sign_note,
    signed_by,
    split_note,
    verify_note,
)
from tests.vectors.test_vectors import VECTORS

_NOTE = next(
    f.body
    for f in iter_frames((VECTORS / "segments" / "00000000.seg").read_bytes())
    if isinstance(f, Frame) and f.kind == CHECKPOINT
)
_SIGNER = Signer.from_seed("ledger.example#0", bytes(32))
_OTHER = Signer.from_seed("ledger.example#1", b"\x01" * 32)
_ROOT = bytes(range(32))
_SEAL = Seal(3, 10, 19, b"\x0a" * 32, b"\x0b" * 32, "cd" * 32)
_SEGMENT = SegmentBytes(3, 4096, b"\x0c" * 32)
_SEALED = Checkpoint("ledger.example", 20, _ROOT, 123, seal=_SEAL, segment=_SEGMENT)


def test_a_checkpoint_body_round_trips_with_its_extension_lines() -> None:
    """time, segment and seal lines are written in order and read back; a bare checkpoint has only time."""
    body = _SEALED.body()
    assert body.decode().split("\n")[3:] == ["time 123", _SEGMENT.line(), _SEAL.line(), ""]
    assert Checkpoint.parse_body(body) == _SEALED
    bare = Checkpoint("ledger.example", 0, _ROOT, 0)
    assert Checkpoint.parse_body(bare.body()) == bare


def test_a_signed_note_parses_and_checks_against_its_key_only() -> None:
    """sign_note's output parses; signed_by and verify_note accept the signer and refuse another key."""
    note = sign_note(_SEALED.body(), _SIGNER)
    parsed = parse_note(note)
    assert parsed.checkpoint == checkpoint_of(note) == _SEALED
    assert parsed.signatures[0].signature == parsed.signatures[0].blob and len(parsed.ed25519) == 1
    assert parsed.signatures[0].line() == note[len(parsed.body) + 1 :]
    assert signed_by(parsed, _SIGNER.public) and not signed_by(parsed, _OTHER.public)
    assert verify_note(note, _SIGNER.public) == _SEALED.body()
    with pytest.raises(
        NoteError,
        match=r"no valid signature by ledger.example#1 \(key id [0-9a-f]{8}\); "
        r"signed by: ledger.example#0",
    ):
        verify_note(note, _OTHER.public)


def test_a_cosignature_is_checked_with_its_time() -> None:
    """A cosignature/v1 line verifies for its witness and returns its timestamp; a wrong key gives None."""
    note = sign_note(_SEALED.body(), _SIGNER)
    witness = Signer.from_seed("witness.example/w1", b"\x02" * 32)
    raw = witness.public.raw
    sig = witness.sign(b"cosignature/v1\ntime 1700\n" + _SEALED.body())
    blob = cosignature_key_id(witness.name, raw) + struct.pack(">Q", 1700) + sig
    line = f"— {witness.name} {base64.b64encode(blob).decode()}\n".encode()
    parsed = parse_note(add_signatures(note, line))
    assert len(parsed.signatures) == 2 and len(parsed.ed25519) == 1
    assert cosigned_by(parsed, witness.name, raw) == 1700
    assert cosigned_by(parsed, witness.name, _OTHER.public.raw) is None
    forged = cosignature_key_id(witness.name, raw) + struct.pack(">Q", 1701) + sig
    wrong_time = NoteSignature(witness.name, forged[:4], forged[4:]).line()
    assert cosigned_by(parse_note(note + wrong_time), witness.name, raw) is None
    with pytest.raises(NoteError):
        add_signatures(note, b"not a signature line\n")


def _body(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


_R = base64.b64encode(_ROOT).decode()
_HEX = "ab" * 32


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\xff\n", "checkpoint is not UTF-8"),
        (b"o\n1\n" + _R.encode() + b"\ntime 1", "does not end with a newline"),
        (_body("o", "1", _R), "checkpoint has 3 lines, expected at least 4"),
        (_body("", "1", _R, "time 1"), "line 1: the origin is empty"),
        (_body("o o", "1", _R, "time 1"), "line 1: the origin is empty or has whitespace"),
        (_body("o+", "1", _R, "time 1"), r"line 1: .*'\+'"),
        (_body("o", "01", _R, "time 1"), "line 2: tree size '01' is not a decimal number"),
        (_body("o", "-1", _R, "time 1"), "line 2: tree size '-1' is not a decimal number"),
        (_body("o", "1", "not base64!", "time 1"), "line 3: root hash is not base64"),
        (_body("o", "1", "AAAAA", "time 1"), "line 3: root hash is not base64"),
        (_body("o", "1", "AAAA", "time 1"), "line 3: root hash is not the base64 of 32 bytes"),
        (_body("o", "1", _R[:-2] + "B=", "time 1"), "line 3: root hash is not the base64 of 32 bytes"),
        (_body("o", "1", _R, "timing 1"), "line 4: expected 'time <ns>'"),
        (_body("o", "1", _R, "time x"), "line 4: time 'x' is not a decimal number"),
        (_body("o", "1", _R, "time 1", "segment 1 2 " + "AB" * 32), "line 5: segment digest is not 64 lowercase hex"),
        (_body("o", "1", _R, "time 1", "segment 1 02 " + _HEX), "line 5: offset '02' is not a decimal"),
        (_body("o", "1", _R, "time 1", "segment 1 2 " + _HEX, "segment 1 2 " + _HEX), "line 6: unknown or misplaced"),
        (_body("o", "1", _R, "time 1", _SEAL.line(), "segment 1 2 " + _HEX), "line 6: unknown or misplaced"),
        (_body("o", "1", _R, "time 1", _SEAL.line(), _SEAL.line()), "line 6: unknown or misplaced"),
        (_body("o", "1", _R, "time 1", _SEAL.line().replace("cd" * 32, "CD")), "line 5: seal hashes or policy"),
        (_body("o", "1", _R, "time 1", f"seal 1 2 x {_HEX} {_HEX} cd"), "line 5: seal last seq 'x'"),
        (_body("o", "1", _R, "time 1", "seal 1 2 3"), "line 5: unknown or misplaced extension line"),
        (_body("o", "1", _R, "time 1", "witness x"), "line 5: unknown or misplaced extension line 'witness x'"),
    ],
)
def test_the_checkpoint_parser_refuses_each_deviation(body: bytes, message: str) -> None:
    """Each line's grammar, the order and uniqueness of extension lines: NoteError naming the line."""
    with pytest.raises(NoteError, match=message):
        Checkpoint.parse_body(body)


_SIG = sign_note(_body("o", "1", _R, "time 1"), _SIGNER)
_LINE = _SIG[_SIG.index(b"\n\n") + 2 :]


@pytest.mark.parametrize(
    ("note", "message"),
    [
        (b"o\n1\n", "note has no blank line before its signatures"),
        (_SIG[:-1], "signature block does not end with a newline"),
        (_SIG[: _SIG.index(b"\n\n") + 2] + b"\xff\n", "signature lines are not UTF-8"),
        (_SIG + b"\n", "signature block does not end with a newline"),
        (_SIG.replace("— ".encode(), b"- "), "signature line does not start with an em dash"),
        (_SIG.replace(b"ledger.example#0 ", b"ledger.example#0  "), "malformed signature line"),
        (_SIG.replace(b"ledger.example#0 ", b"ledger example#0 "), "malformed signature line"),
        (_SIG.replace(_LINE.split(b" ")[-1], b"AAAAA\n"), "malformed signature line"),
        (_SIG.replace(_LINE.split(b" ")[-1], b"AAAA\n"), "is too short"),
        (_SIG.replace(_LINE.split(b" ")[-1], b"AAAAAAB=\n"), "is not canonical base64"),
    ],
)
def test_the_note_splitter_refuses_each_deviation(note: bytes, message: str) -> None:
    """No blank line, no final newline, non-UTF-8, no em dash, extra fields, bad base64, short or padded blobs."""
    with pytest.raises(NoteError, match=message):
        split_note(note)


def test_a_note_without_signature_lines_is_refused() -> None:
    """A body and a blank line with nothing after it is refused; split_note keeps body and lines exact."""
    body, sigs = split_note(_SIG)
    assert body + b"\n" + b"".join(s.line() for s in sigs) == _SIG
    with pytest.raises(NoteError, match="signature block does not end with a newline"):
        split_note(body + b"\n")


@pytest.mark.parametrize(
    "change",
    [
        (b"\ntime ", b"\ntime 0"),  # leading zero
        (b"\n\n", b"\nextra line\n\n"),  # unknown extension
        (b"\xe2\x80\x94 ", b"- "),  # not an em dash
    ],
)
def test_the_note_parser_is_strict(change: tuple[bytes, bytes]) -> None:
    """A leading zero, an unknown extension line or a signature line without an em dash is a NoteError."""
    assert parse_note(_NOTE).checkpoint.segment is not None
    with pytest.raises(NoteError):
        parse_note(_NOTE.replace(*change, 1))


def test_a_witness_cosignature_line_is_kept_beside_the_log_signature() -> None:
    """A 104-character cosignature line (4-byte id, 8-byte time, 64-byte signature) parses and is not Ed25519."""
    line = "— witness.example/w1 " + "A" * 104 + "\n"
    note = parse_note(_NOTE + line.encode())
    assert len(note.signatures) == 2 and len(note.ed25519) == 1
