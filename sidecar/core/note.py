"""Checkpoints and seals as C2SP signed notes; witness cosignatures.

A signed note is a text body ending in a newline, an empty line, then one
signature line per signer:

    <body text>\n
    \n
    — <key name> <base64(key id || signature)>\n

A checkpoint body (C2SP tlog-checkpoint) is:

    <origin>\n<tree size>\n<base64 root hash>\n[extension lines]

Extension lines used here, in this order: `time <unix nanoseconds>` on every
checkpoint; in kc-ledger/2 `segment <number> <offset> <sha256 hex>` on every
checkpoint and seal in a segment (the digest of the segment file's bytes before
the frame, which signs the header and every frame before it); on a seal, `seal
<segment> <first seq> <last seq> <first hash hex> <last hash hex> <policy>`.
A seal is therefore a checkpoint at a segment's end, and verifying it reuses the
checkpoint path.

`parse_note` is the one reader of note bytes and `signed_by` the one "signed
by this key" check; witness cosignatures (C2SP tlog-cosignature, Ed25519
`cosignature/v1`) are checked by `cosigned_by`. Parsing is strict: any
deviation is a NoteError naming the line.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
import struct
from dataclasses import dataclass, field

from sidecar.core.keys import PublicKey, Signer

SIG_PREFIX = "— "  # U+2014 EM DASH then a space, as in the signed-note spec
COSIGNATURE_TYPE = b"\x04"  # C2SP tlog-cosignature: Ed25519 cosignature/v1
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_POLICY = re.compile(r"[0-9a-f]*")
_NAME = re.compile(r"[^\s+]+")
_B64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


class NoteError(ValueError):
    """A note or checkpoint does not parse."""


def _decimal(text: str, what: str) -> int:
    if not _DECIMAL.fullmatch(text):
        raise NoteError(f"{what} {text[:24]!r} is not a decimal number")
    return int(text)


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line. `blob` is the decoded bytes after the 4-byte key id."""

    name: str
    key_id: bytes
    blob: bytes

    @property
    def signature(self) -> bytes:
        return self.blob

    def line(self) -> bytes:
        return f"{SIG_PREFIX}{self.name} {base64.b64encode(self.key_id + self.blob).decode()}\n".encode()


@dataclass(frozen=True, slots=True)
class Seal:
    segment: int
    first_seq: int
    last_seq: int
    first_hash: bytes
    last_hash: bytes
    policy_digest: str

    def line(self) -> str:
        return (
            f"seal {self.segment} {self.first_seq} {self.last_seq} {self.first_hash.hex()} "
            f"{self.last_hash.hex()} {self.policy_digest}"
        )


@dataclass(frozen=True, slots=True)
class SegmentBytes:
    """kc-ledger/2: the checkpoint signs the segment's first `offset` bytes (header, frames before it)."""

    segment: int
    offset: int
    digest: bytes

    def line(self) -> str:
        return f"segment {self.segment} {self.offset} {self.digest.hex()}"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    time_ns: int
    seal: Seal | None = None
    segment: SegmentBytes | None = None

    def body(self) -> bytes:
        # One format call: the writer builds a body per commit, on the path an append waits on.
        text = f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\ntime {self.time_ns}\n"
        if self.segment is not None:
            text += self.segment.line() + "\n"
        if self.seal is not None:
            text += self.seal.line() + "\n"
        return text.encode()

    @classmethod
    def parse_body(cls, body: bytes) -> Checkpoint:
        """Parse a checkpoint body strictly (docs/format.md §9); raises NoteError."""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NoteError("checkpoint is not UTF-8") from exc
        if not text.endswith("\n"):
            raise NoteError("checkpoint body does not end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 4:
            raise NoteError(f"checkpoint has {len(lines)} lines, expected at least 4")
        origin, size_s, root_s, time_s, *ext = lines
        if not origin or not _NAME.fullmatch(origin):
            raise NoteError("line 1: the origin is empty or has whitespace or '+'")
        size = _decimal(size_s, "line 2: tree size")
        if not _B64.fullmatch(root_s):
            raise NoteError("line 3: root hash is not base64")
        try:
            root = base64.b64decode(root_s, validate=True)
        except binascii.Error as exc:
            raise NoteError("line 3: root hash is not base64") from exc
        if len(root) != 32 or base64.b64encode(root).decode() != root_s:
            raise NoteError("line 3: root hash is not the base64 of 32 bytes")
        if not time_s.startswith("time "):
            raise NoteError(f"line 4: expected 'time <ns>', got {time_s[:40]!r}")
        time_ns = _decimal(time_s[5:], "line 4: time")
        segment = seal = None
        for i, line in enumerate(ext, start=5):
            fields = line.split(" ")
            if fields[0] == "segment" and len(fields) == 4 and segment is None and seal is None:
                if not _HEX64.fullmatch(fields[3]):
                    raise NoteError(f"line {i}: segment digest is not 64 lowercase hex digits")
                segment = SegmentBytes(
                    _decimal(fields[1], f"line {i}: segment"),
                    _decimal(fields[2], f"line {i}: offset"),
                    bytes.fromhex(fields[3]),
                )
            elif fields[0] == "seal" and len(fields) == 7 and seal is None:
                if not (_HEX64.fullmatch(fields[4]) and _HEX64.fullmatch(fields[5]) and _POLICY.fullmatch(fields[6])):
                    raise NoteError(f"line {i}: seal hashes or policy are not lowercase hex")
                seal = Seal(
                    _decimal(fields[1], f"line {i}: seal segment"),
                    _decimal(fields[2], f"line {i}: seal first seq"),
                    _decimal(fields[3], f"line {i}: seal last seq"),
                    bytes.fromhex(fields[4]),
                    bytes.fromhex(fields[5]),
                    fields[6],
                )
            else:
                raise NoteError(f"line {i}: unknown or misplaced extension line {line[:40]!r}")
        return cls(origin, size, root, time_ns, seal, segment)


@dataclass(frozen=True, slots=True)
class Note:
    """A parsed signed note: the exact body bytes, its checkpoint, and every signature line."""

    body: bytes
    checkpoint: Checkpoint
    signatures: tuple[NoteSignature, ...] = field(default=())

    @property
    def ed25519(self) -> tuple[NoteSignature, ...]:
        """Signature lines shaped like Ed25519 note signatures (4-byte id + 64 bytes)."""
        return tuple(s for s in self.signatures if len(s.blob) == 64)


def sign_note(body: bytes, signer: Signer) -> bytes:
    """Return the signed note: body, blank line, one signature line."""
    head, kid = _signature_head(signer.public)
    return b"".join((body, head, base64.b64encode(kid + signer.sign(body)), b"\n"))


@functools.lru_cache(maxsize=64)
def _signature_head(key: PublicKey) -> tuple[bytes, bytes]:
    """The blank line and `— <name> ` that start a signature line by `key`, and its key id.

    Cached: the writer signs one note per commit with the same key, and the key id is a SHA-256.
    """
    return f"\n{SIG_PREFIX}{key.name} ".encode(), key.key_id


def split_note(note: bytes) -> tuple[bytes, list[NoteSignature]]:
    """Split a signed note into its body and signature lines; raises NoteError.

    Every signature line must be well formed (em dash, name, base64 of a 4-byte key id and at
    least one more byte); lines of any length are kept, so witness cosignatures (76 bytes,
    104 base64 characters) are returned with the Ed25519 signatures (68 bytes, 92 characters).
    """
    cut = note.rfind(b"\n\n")
    if cut < 0:
        raise NoteError("note has no blank line before its signatures")
    body, sig_block = note[: cut + 1], note[cut + 2 :]
    if not sig_block.endswith(b"\n"):
        raise NoteError("signature block does not end with a newline")
    try:
        text = sig_block[:-1].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NoteError("signature lines are not UTF-8") from exc
    sigs = []
    for line in text.split("\n"):
        if not line.startswith(SIG_PREFIX):
            raise NoteError(f"signature line does not start with an em dash: {line[:40]!r}")
        parts = line[len(SIG_PREFIX) :].split(" ")
        if len(parts) != 2 or not _NAME.fullmatch(parts[0]) or not _B64.fullmatch(parts[1]):
            raise NoteError(f"malformed signature line {line[:60]!r}")
        try:
            raw = base64.b64decode(parts[1], validate=True)
        except binascii.Error as exc:
            raise NoteError(f"malformed signature line {line[:60]!r}") from exc
        if len(raw) < 5:
            raise NoteError(f"signature line {line[:60]!r} is too short")
        if base64.b64encode(raw).decode() != parts[1]:  # SECURITY: one encoding per signature (no spare bits)
            raise NoteError(f"signature line {line[:60]!r} is not canonical base64")
        sigs.append(NoteSignature(parts[0], raw[:4], raw[4:]))
    return body, sigs  # never empty: the block ends with a newline, so it holds at least one line


def parse_note(note: bytes) -> Note:
    """Split and parse a signed checkpoint note; raises NoteError. The one note reader."""
    body, sigs = split_note(note)
    return Note(body, Checkpoint.parse_body(body), tuple(sigs))


def checkpoint_of(note: bytes) -> Checkpoint:
    """The checkpoint of a signed note (no signature checked); raises NoteError."""
    return parse_note(note).checkpoint


def signed_by(note: Note, key: PublicKey) -> bool:
    """Whether some signature line is a valid Ed25519 signature by `key` over the body."""
    kid = key.key_id
    return any(
        s.name == key.name and s.key_id == kid and len(s.blob) == 64 and key.verify(s.blob, note.body)
        for s in note.signatures
    )


def verify_note(note: bytes, key: PublicKey) -> bytes:
    """Return the body if `key` signed the note; raise NoteError otherwise."""
    parsed = parse_note(note)
    if signed_by(parsed, key):
        return parsed.body
    names = ", ".join(s.name for s in parsed.signatures)
    raise NoteError(f"no valid signature by {key.name} (key id {key.key_id.hex()}); signed by: {names}")


def cosignature_key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + COSIGNATURE_TYPE + public_key).digest()[:4]


def cosigned_by(note: Note, name: str, public_key: bytes) -> int | None:
    """The timestamp of a valid cosignature/v1 by witness `name`, or None.

    The cosigned message is `cosignature/v1\\ntime <seconds>\\n` followed by the note body
    (C2SP tlog-cosignature); the blob is an 8-byte big-endian timestamp and 64 signature bytes.
    """
    kid = cosignature_key_id(name, public_key)
    witness = PublicKey(name, public_key)
    for s in note.signatures:
        if s.name == name and s.key_id == kid and len(s.blob) == 72:
            (stamp,) = struct.unpack(">Q", s.blob[:8])
            if witness.verify(s.blob[8:], b"cosignature/v1\ntime %d\n" % stamp + note.body):
                return int(stamp)
    return None


def add_signatures(note: bytes, lines: bytes) -> bytes:
    """The note with further signature lines appended (each `— name blob\\n`); raises NoteError."""
    parse_note(note + lines)
    return note + lines
