"""Stand-alone proofs: one record, or two checkpoints, verifiable without the ledger. [pure]

An inclusion bundle (JSON, `"kind": "inclusion"`) carries a record's exact
bytes, its index, a signed checkpoint, the RFC 9162 inclusion proof against
that checkpoint's root, and the key chain needed to trust the checkpoint:
every `key.rotated` record before it, each with its own inclusion proof. A
verifier holding only the trust anchor follows the chain from the root key
and accepts the checkpoint only if the key in force signed it.

A consistency bundle (`"kind": "consistency"`) carries two signed checkpoints
and the RFC 9162 consistency proof between them: the newer tree extends the
older one, so nothing before the older size was rewritten.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from sidecar.core import merkle
from sidecar.core.keys import PublicKey, key_name
from sidecar.core.note import Checkpoint, checkpoint_of, split_note
from sidecar.core.record import decode_record, record_hash
from sidecar.core.trust import TrustAnchor
from sidecar.errors import IntegrityError

BUNDLE_FORMAT = "kc-ledger-proof/1"


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _unb64(s: str) -> bytes:
    return base64.b64decode(s, validate=True)


@dataclass(frozen=True, slots=True)
class Leaf:
    index: int
    body: bytes
    proof: tuple[bytes, ...]

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "record": self.body.decode(), "proof": [_b64(h) for h in self.proof]}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Leaf:
        return cls(int(obj["index"]), str(obj["record"]).encode(), tuple(_unb64(h) for h in obj["proof"]))


def inclusion_bundle(
    leaves: list[bytes], bodies: dict[int, bytes], index: int, checkpoint_note: bytes, rotations: list[int]
) -> dict[str, Any]:
    """Build the bundle for record `index`; `leaves` are all leaf hashes up to the checkpoint's size."""
    cp = checkpoint_of(checkpoint_note)
    tree = leaves[: cp.size]

    def leaf(i: int) -> dict[str, Any]:
        return Leaf(i, bodies[i], tuple(merkle.inclusion_proof(i, tree))).to_json()

    return {
        "format": BUNDLE_FORMAT,
        "kind": "inclusion",
        "checkpoint": checkpoint_note.decode(),
        "leaf": leaf(index),
        "key_chain": [leaf(i) for i in rotations if i < cp.size],
    }


def consistency_bundle(
    leaves: list[bytes], bodies: dict[int, bytes], old_note: bytes, new_note: bytes, rotations: list[int]
) -> dict[str, Any]:
    old = checkpoint_of(old_note)
    new = checkpoint_of(new_note)
    tree = leaves[: new.size]
    proof = merkle.consistency_proof(old.size, tree)
    chain = [Leaf(i, bodies[i], tuple(merkle.inclusion_proof(i, tree))).to_json() for i in rotations if i < new.size]
    return {
        "format": BUNDLE_FORMAT,
        "kind": "consistency",
        "old": old_note.decode(),
        "new": new_note.decode(),
        "proof": [_b64(h) for h in proof],
        "key_chain": chain,
    }


def _key_chain(items: list[dict[str, Any]], cp: Checkpoint, trust: TrustAnchor) -> list[tuple[int, PublicKey]]:
    """[(first tree size the key may sign, key)], proven against `cp` and starting at the trust anchor."""
    chain: list[tuple[int, PublicKey]] = [(0, trust.root_key)]
    for item in items:
        leaf = Leaf.from_json(item)
        merkle.verify_inclusion(leaf.index, cp.size, record_hash(leaf.body), leaf.proof, cp.root)
        rec = decode_record(leaf.body)
        if rec.type != "key.rotated" or rec.seq != leaf.index:
            raise IntegrityError(f"key chain entry at {leaf.index} is a {rec.type} record, not key.rotated")
        new = PublicKey.from_json(rec.event["details"]["key"])
        if new.name != key_name(trust.origin, chain[-1][1].epoch + 1):
            raise IntegrityError(f"key chain skips from {chain[-1][1].name} to {new.name}")
        chain.append((leaf.index + 1, new))
    return chain


def _check_signed(note: bytes, trust: TrustAnchor, chain: list[tuple[int, PublicKey]]) -> Checkpoint:
    """The checkpoint must be signed by a key in force at its size (at a rotation's size, either key)."""
    body, sigs = split_note(note)
    cp = Checkpoint.parse_body(body)
    if cp.origin != trust.origin:
        raise IntegrityError(f"checkpoint is for origin {cp.origin!r}, the trust anchor for {trust.origin!r}")
    valid = [
        k
        for i, (start, k) in enumerate(chain)
        if start <= cp.size and (i + 1 == len(chain) or cp.size <= chain[i + 1][0])
    ]
    if not any(s.name == k.name and s.key_id == k.key_id and k.verify(s.signature, body) for s in sigs for k in valid):
        raise IntegrityError(
            f"checkpoint of size {cp.size} is not signed by {' or '.join(k.name for k in valid)}, "
            f"the key the chain from the trust anchor leads to "
            f"(signed by {', '.join(s.name for s in sigs)})"
        )
    return cp


def verify_bundle(bundle: dict[str, Any], trust: TrustAnchor) -> str:
    """Verify a proof bundle; returns a one-line description, raises IntegrityError with what failed."""
    try:
        if bundle.get("format") != BUNDLE_FORMAT:
            raise IntegrityError(f"not a proof bundle (format {bundle.get('format')!r})")
        if bundle["kind"] == "inclusion":
            return _verify_inclusion(bundle, trust)
        if bundle["kind"] == "consistency":
            return _verify_consistency(bundle, trust)
        raise IntegrityError(f"unknown bundle kind {bundle['kind']!r}")
    except (KeyError, TypeError, ValueError) as exc:  # NoteError and RecordError are ValueErrors; IntegrityError is not
        raise IntegrityError(f"malformed proof bundle: {type(exc).__name__}: {exc}") from exc


def _verify_inclusion(bundle: dict[str, Any], trust: TrustAnchor) -> str:
    note = str(bundle["checkpoint"]).encode()
    cp = checkpoint_of(note)
    chain = _key_chain(bundle["key_chain"], cp, trust)
    _check_signed(note, trust, chain)
    leaf = Leaf.from_json(bundle["leaf"])
    rec = decode_record(leaf.body)
    if rec.seq != leaf.index:
        raise IntegrityError(f"record says seq {rec.seq}, the proof is for index {leaf.index}")
    merkle.verify_inclusion(leaf.index, cp.size, record_hash(leaf.body), leaf.proof, cp.root)
    return f"record {rec.seq} ({rec.type}) is in the ledger of size {cp.size} signed by {chain[-1][1].name}"


def _verify_consistency(bundle: dict[str, Any], trust: TrustAnchor) -> str:
    old_note, new_note = str(bundle["old"]).encode(), str(bundle["new"]).encode()
    old = checkpoint_of(old_note)
    new = checkpoint_of(new_note)
    if old.size > new.size:
        raise IntegrityError(f"old checkpoint size {old.size} is larger than the new one's {new.size}")
    chain = _key_chain(bundle["key_chain"], new, trust)
    _check_signed(new_note, trust, chain)
    _check_signed(old_note, trust, chain)
    merkle.verify_consistency(old.size, new.size, old.root, new.root, [_unb64(h) for h in bundle["proof"]])
    return f"the ledger of size {new.size} extends the ledger of size {old.size} (no rewrite before {old.size})"
