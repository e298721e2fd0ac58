"""Witnesses: the C2SP tlog-witness protocol's bytes and the auditor's quorum rule. [pure]

A witness cosigns a checkpoint only if it is consistent with everything it cosigned
before for that origin (docs/format.md §14.1). This module holds what both sides of
the protocol need, with no I/O:

* vkeys (`<name>+<key id hex>+<base64(type || key)>`): the log witness key's (type
  0x01, what a witness is configured with) and a witness's (type 0x04, cosignature/v1);
* the witness list an auditor holds (`kc-ledger-witnesses/1` JSON);
* the `add-checkpoint` request body and the parsing of its answers;
* `count_cosignatures` and `WitnessView`, from which the verifier draws its findings.

The log witness key only lets witnesses know the submitter: it is never a ledger key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from sidecar.core.keys import ED25519_TYPE, PublicKey
from sidecar.core.note import COSIGNATURE_TYPE, Note, NoteError, cosigned_by, parse_note

LIST_FORMAT = "kc-ledger-witnesses/1"
MAX_PROOF_LINES = 63  # C2SP tlog-witness


class WitnessError(ValueError):
    """A witness list, vkey or witness answer that does not parse."""


def vkey(name: str, key_type: bytes, public_key: bytes) -> str:
    kid = hashlib.sha256(name.encode() + b"\n" + key_type + public_key).digest()[:4]
    return f"{name}+{kid.hex()}+{base64.b64encode(key_type + public_key).decode()}"


def log_vkey(key: PublicKey) -> str:
    """What a witness is configured with for the log (signed-note Ed25519 vkey)."""
    return vkey(key.name, ED25519_TYPE, key.raw)


def parse_vkey(text: str, key_type: bytes) -> tuple[str, bytes]:
    """(name, 32-byte public key) of a vkey of the given type; raises WitnessError."""
    parts = text.strip().split("+", 2)  # base64 may contain "+"
    if len(parts) != 3 or not parts[0]:
        raise WitnessError(f"vkey {text[:60]!r} is not <name>+<id>+<key>")
    try:
        raw = base64.b64decode(parts[2], validate=True)
    except binascii.Error as exc:
        raise WitnessError(f"vkey {parts[0]!r}: key is not base64") from exc
    if len(raw) != 33 or raw[:1] != key_type:
        raise WitnessError(f"vkey {parts[0]!r}: expected type 0x{key_type.hex()} and a 32-byte Ed25519 key")
    if vkey(parts[0], key_type, raw[1:]) != text.strip():
        raise WitnessError(f"vkey {parts[0]!r}: key id does not match")
    return parts[0], raw[1:]


@dataclass(frozen=True, slots=True)
class Witness:
    name: str
    public_key: bytes
    url: str | None = None

    @property
    def vkey(self) -> str:
        return vkey(self.name, COSIGNATURE_TYPE, self.public_key)


def parse_witness_list(data: bytes) -> list[Witness]:
    """Parse a witness list file; raises WitnessError naming what is wrong."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise WitnessError(f"witness list is not JSON: {exc}") from exc
    if not isinstance(obj, dict) or obj.get("format") != LIST_FORMAT or not isinstance(obj.get("witnesses"), list):
        raise WitnessError(f'witness list must be {{"format": "{LIST_FORMAT}", "witnesses": [...]}}')
    out: list[Witness] = []
    for i, item in enumerate(obj["witnesses"]):
        if not isinstance(item, dict) or not isinstance(item.get("vkey"), str):
            raise WitnessError(f"witnesses[{i}]: needs a vkey string")
        name, key = parse_vkey(item["vkey"], COSIGNATURE_TYPE)
        if item.get("name", name) != name:
            raise WitnessError(f"witnesses[{i}]: name {item.get('name')!r} differs from the vkey's {name!r}")
        url = item.get("url")
        if url is not None and not (isinstance(url, str) and url.startswith(("http://", "https://"))):
            raise WitnessError(f"witnesses[{i}]: url must be an http(s) URL")
        out.append(Witness(name, key, url.rstrip("/") if url else None))
    if len({w.name for w in out}) != len(out):
        raise WitnessError("witness list names a witness twice")
    return out


def witness_list_json(witnesses: list[Witness]) -> bytes:
    items: list[dict[str, Any]] = [
        {"name": w.name, "vkey": w.vkey, **({"url": w.url} if w.url else {})} for w in witnesses
    ]
    return orjson.dumps({"format": LIST_FORMAT, "witnesses": items}, option=orjson.OPT_INDENT_2) + b"\n"


def add_checkpoint_body(old_size: int, proof: list[bytes], note: bytes) -> bytes:
    """The tlog-witness add-checkpoint request: old size line, proof lines, blank line, checkpoint."""
    if len(proof) > MAX_PROOF_LINES:
        raise ValueError(f"a consistency proof of {len(proof)} hashes is longer than {MAX_PROOF_LINES}")
    lines = [f"old {old_size}"] + [base64.b64encode(h).decode() for h in proof]
    return ("\n".join(lines) + "\n\n").encode() + note


def parse_size_body(body: bytes) -> int:
    """The witness's size in a 409 answer (`text/x.tlog.size`); raises WitnessError."""
    text = body.decode("ascii", "replace")
    if not text.endswith("\n") or not text[:-1].isdigit() or (len(text) > 2 and text[0] == "0"):
        raise WitnessError(f"409 body {text[:30]!r} is not a tree size")
    return int(text[:-1])


def cosignature_lines(body: bytes, witness: Witness, note: bytes) -> bytes:
    """The lines of a 200 answer that are valid cosignatures by `witness` on `note`; raises WitnessError."""
    try:
        parsed = parse_note(note + body)
    except NoteError as exc:
        raise WitnessError(f"{witness.name}: answer is not signature lines: {exc}") from exc
    good = [
        s
        for s in parsed.signatures[len(parse_note(note).signatures) :]
        if s.name == witness.name
        and cosigned_by(Note(parsed.body, parsed.checkpoint, (s,)), witness.name, witness.public_key) is not None
    ]
    if not good:
        raise WitnessError(f"{witness.name}: no valid cosignature in the answer")
    return b"".join(s.line() for s in good)


def count_cosignatures(note: Note, witnesses: list[Witness]) -> dict[str, int]:
    """Witness name -> cosignature timestamp, for each listed witness with a valid cosignature."""
    out = {}
    for w in witnesses:
        stamp = cosigned_by(note, w.name, w.public_key)
        if stamp is not None:
            out[w.name] = stamp
    return out


@dataclass(slots=True)
class WitnessView:
    """What one witness said when an auditor asked (docs/format.md §14.1, step 2)."""

    name: str
    size: int | None = None  # the size it last cosigned, when it said
    outcome: str = "not asked"  # cosigned, ahead, conflict, unknown-log, refused, unreachable, not asked
    detail: str = ""
    cosigned_sizes: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "outcome": self.outcome, "detail": self.detail}
