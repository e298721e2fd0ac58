"""Checkpoints and seals as C2SP signed notes.

A signed note is a text body ending in a newline, an empty line, then one
signature line per signer:

    <body text>\n
    \n
    — <key name> <base64(key id || Ed25519 signature over the body)>\n

A checkpoint body (C2SP tlog-checkpoint) is:

    <origin>\n<tree size>\n<base64 root hash>\n[extension lines]

Extension lines used here: `time <unix nanoseconds>` on every checkpoint, and on
a seal, `seal <segment> <first seq> <last seq> <first hash hex> <last hash hex>
<policy digest hex>`. A seal is therefore a checkpoint at a segment's end, and
verifying it reuses the checkpoint path. Parsing is strict: any deviation is a
NoteError naming the line.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from sidecar.core.keys import PublicKey, Signer

SIG_PREFIX = "— "  # U+2014 EM DASH then a space, as in the signed-note spec


class NoteError(ValueError):
    """A note or checkpoint does not parse."""


@dataclass(frozen=True, slots=True)
class NoteSignature:
    name: str
    key_id: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class Seal:
    segment: int
    first_seq: int
    last_seq: int
    first_hash: bytes
    last_hash: bytes
    policy_digest: str

    def line(self) -> str:
        return (f"seal {self.segment} {self.first_seq} {self.last_seq} {self.first_hash.hex()} "
                f"{self.last_hash.hex()} {self.policy_digest}")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    time_ns: int
    seal: Seal | None = None

    def body(self) -> bytes:
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode(), f"time {self.time_ns}"]
        if self.seal is not None:
            lines.append(self.seal.line())
        return ("\n".join(lines) + "\n").encode()

    @classmethod
    def parse_body(cls, body: bytes) -> Checkpoint:
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
        if not origin:
            raise NoteError("line 1: empty origin")
        if not (size_s.isascii() and size_s.isdigit()) or (size_s != "0" and size_s.startswith("0")):
            raise NoteError(f"line 2: tree size {size_s!r} is not a decimal number")
        try:
            root = base64.b64decode(root_s, validate=True)
        except binascii.Error as exc:
            raise NoteError("line 3: root hash is not base64") from exc
        if len(root) != 32:
            raise NoteError(f"line 3: root hash is {len(root)} bytes, expected 32")
        parts = time_s.split(" ")
        if len(parts) != 2 or parts[0] != "time" or not (parts[1].isascii() and parts[1].isdigit()):
            raise NoteError(f"line 4: expected 'time <ns>', got {time_s!r}")
        seal = None
        for i, line in enumerate(ext, start=5):
            fields = line.split(" ")
            if fields[0] == "seal" and len(fields) == 7 and seal is None:
                try:
                    seal = Seal(int(fields[1]), int(fields[2]), int(fields[3]), bytes.fromhex(fields[4]),
                                bytes.fromhex(fields[5]), fields[6])
                except ValueError as exc:
                    raise NoteError(f"line {i}: malformed seal line") from exc
            else:
                raise NoteError(f"line {i}: unknown extension line {line[:40]!r}")
        return cls(origin, int(size_s), root, int(parts[1]), seal)


def sign_note(body: bytes, signer: Signer) -> bytes:
    """Return the signed note: body, blank line, one signature line."""
    sig = signer.sign(body)
    blob = base64.b64encode(signer.public.key_id + sig).decode()
    return body + b"\n" + f"{SIG_PREFIX}{signer.name} {blob}\n".encode()


def split_note(note: bytes) -> tuple[bytes, list[NoteSignature]]:
    """Split a signed note into its body and signatures; raises NoteError."""
    cut = note.rfind(b"\n\n")
    if cut < 0:
        raise NoteError("note has no blank line before its signatures")
    body, sig_block = note[: cut + 1], note[cut + 2:]
    if not sig_block.endswith(b"\n"):
        raise NoteError("signature block does not end with a newline")
    sigs = []
    for line in sig_block[:-1].decode("utf-8", "replace").split("\n"):
        if not line.startswith(SIG_PREFIX):
            raise NoteError(f"signature line does not start with an em dash: {line[:40]!r}")
        try:
            name, blob = line[len(SIG_PREFIX):].split(" ")
            raw = base64.b64decode(blob, validate=True)
        except (ValueError, binascii.Error) as exc:
            raise NoteError(f"malformed signature line {line[:60]!r}") from exc
        if len(raw) != 4 + 64:
            continue  # not an Ed25519 note signature (e.g. a witness cosignature): ignored, as C2SP says
        sigs.append(NoteSignature(name, raw[:4], raw[4:]))
    if not sigs:
        raise NoteError("note has no signatures")
    return body, sigs


def verify_note(note: bytes, key: PublicKey) -> bytes:
    """Return the body if `key` signed the note; raise NoteError otherwise."""
    body, sigs = split_note(note)
    for sig in sigs:
        if sig.name == key.name and sig.key_id == key.key_id and key.verify(sig.signature, body):
            return body
    names = ", ".join(s.name for s in sigs)
    raise NoteError(f"no valid signature by {key.name} (key id {key.key_id.hex()}); signed by: {names}")
