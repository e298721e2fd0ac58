"""Build the kc-ledger/2 test vectors from fixed keys and times, or check the committed ones.

    .venv/bin/python -m tests.vectors.generate           # (re)write tests/vectors/
    .venv/bin/python -m tests.vectors.generate --check   # exit 1 if any committed byte differs

The ledger is built with the pure core functions (records, frames, Merkle ranges, signed
notes), not with the writer: keys come from fixed seeds, times are constants, and Ed25519
signatures are deterministic, so every output byte is stable. What the files must contain
(record hashes, roots, the verifier's summary, each negative vector's finding) is computed
here from the construction itself, never by running the verifier; the tests then check that
the reference verifier agrees.

The seeds below are published test keys. Never use them for a real ledger.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import shutil
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from sidecar.core import framing
from sidecar.core.events import EventType, IdentityEvent, Outcome, Party
from sidecar.core.keys import Signer, key_name
from sidecar.core.merkle import EMPTY_ROOT, CompactRange, root
from sidecar.core.note import Checkpoint, Seal, SegmentBytes, sign_note, split_note
from sidecar.core.pii import encrypt_value
from sidecar.core.record import encode_record, genesis_hash, record_hash
from sidecar.core.segment import SegmentHeader, segment_name
from sidecar.core.trust import TrustAnchor

HERE = Path(__file__).resolve().parent
MANAGED = ("README.md", "trust.json", "checkpoint.txt", "expected.json", "segments", "negative")

ORIGIN = "vectors.example.org/kc-ledger"
POLICY = hashlib.sha256(b"kc-ledger/1 test vector policy").hexdigest()
T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z in Unix nanoseconds
SECOND = 1_000_000_000


def _seed(label: str) -> bytes:
    return hashlib.sha256(f"kc-ledger/1 test vector seed: {label}".encode()).digest()


SEEDS = {"epoch 0": _seed("epoch 0"), "epoch 1": _seed("epoch 1"), "attacker": _seed("attacker")}
KEY0 = Signer.from_seed(key_name(ORIGIN, 0), SEEDS["epoch 0"])
KEY1 = Signer.from_seed(key_name(ORIGIN, 1), SEEDS["epoch 1"])
# Someone who never held a ledger key, using the name the next epoch key would have.
ATTACKER = Signer.from_seed(key_name(ORIGIN, 1), SEEDS["attacker"])

ALICE = Party(id="6f1d2c8e-0a4b-4c1e-9d55-2b7f3e8a9c01", username="alice")
ADMIN = Party(id="0b9e7a52-13c4-4f8d-a6e2-77d0c5b4e3f2", username="admin", client="security-admin-console")
BOB = Party(id="c4a8f0e1-5d2b-4e97-8a13-9f6b2d7c0e45", username="bob", kind="user")
SESSION = "a3e5c7d9-1b2f-4a6c-8e0d-4f2a6b8c0d1e"


def _events() -> list[IdentityEvent]:
    """The nine events of the positive ledger, in order (seq 5 is the key rotation)."""
    rotation = {"key": KEY1.public.to_json(), "epoch": 1, "previous": KEY0.public.to_json()}
    target = Party(id=ALICE.id, username="alice", kind="user")
    grant = {"roles": ["auditor"], "count": 1}
    return [
        IdentityEvent(EventType.LEDGER_STARTED, Outcome.SUCCEEDED, details={"policy": POLICY}),
        IdentityEvent(
            EventType.LOGIN_SUCCEEDED,
            Outcome.SUCCEEDED,
            realm="acme",
            actor=ALICE,
            client="portal",
            source_ip="203.0.113.7",
            session=SESSION,
            request_id="req-0001",
            details={"method": "password"},
        ),
        # An attacker-chosen username: non-ASCII, a quote, a backslash, a tab and U+2028 test JCS escaping.
        IdentityEvent(
            EventType.LOGIN_FAILED,
            Outcome.FAILED,
            realm="acme",
            actor=Party(username='zoë "z" \\ \t\u2028', kind="user"),
            client="portal",
            source_ip="198.51.100.23",
            request_id="req-0002",
            error="invalid_user_credentials",
        ),
        # An intent written before forwarding, then its outcome.
        IdentityEvent(
            EventType.ROLE_GRANTED,
            Outcome.PENDING,
            realm="acme",
            actor=ADMIN,
            target=target,
            source_ip="192.0.2.10",
            request_id="req-0003",
            details=grant,
        ),
        IdentityEvent(
            EventType.ROLE_GRANTED,
            Outcome.SUCCEEDED,
            realm="acme",
            actor=ADMIN,
            target=target,
            source_ip="192.0.2.10",
            request_id="req-0003",
            details=grant,
        ),
        IdentityEvent(EventType.KEY_ROTATED, Outcome.SUCCEEDED, details=rotation),
        IdentityEvent(
            EventType.MFA_OTP_VERIFIED,
            Outcome.SUCCEEDED,
            realm="acme",
            actor=ALICE,
            client="portal",
            source_ip="203.0.113.7",
            session=SESSION,
            request_id="req-0004",
        ),
        IdentityEvent(
            EventType.TOKEN_ISSUED,
            Outcome.SUCCEEDED,
            realm="acme",
            actor=ALICE,
            client="portal",
            source_ip="203.0.113.7",
            session=SESSION,
            request_id="req-0005",
            details={"grant": "authorization_code", "expires_in": 300},
        ),
        IdentityEvent(
            EventType.USER_UPDATED,
            Outcome.SUCCEEDED,
            realm="acme",
            actor=ADMIN,
            target=BOB,
            source_ip="192.0.2.10",
            request_id="req-0006",
            details={"fields": ["email"]},
        ),
    ]


CAROL_ID = "e1f2a3b4-c5d6-4e7f-8091-a2b3c4d5e6f7"
SUBJECT_KEY = _seed("subject key: carol")  # a per-subject AES-256-GCM key; erased by record 10
# (field path, plaintext) encrypted in record 9, in this order; nonces are fixed so the bytes are stable.
CAROL_FIELDS = (("actor.username", "carol"), ("actor.name", "Carol Jones"), ("ip", "198.51.100.99"))


def _private_events() -> list[dict[str, Any]]:
    """Record 9: a login whose identifying fields are encrypted under carol's subject key; record 10: erasure."""
    enc = {
        path: encrypt_value(
            SUBJECT_KEY, _seed(f"nonce {path}")[:12], origin=ORIGIN, subject=CAROL_ID, path=path, value=value
        )
        for path, value in CAROL_FIELDS
    }
    login = {
        "type": "login.succeeded",
        "outcome": "succeeded",
        "realm": "acme",
        "client": "portal",
        "actor": {"id": CAROL_ID, "username": enc["actor.username"], "name": enc["actor.name"]},
        "ip": enc["ip"],
        "session": "b7c9d1e3-5f70-4a82-9b4c-6d8e0f1a2b3c",
        "request_id": "req-0007",
        "details": {"method": "password"},
    }
    erased = {
        "type": "subject.erased",
        "outcome": "succeeded",
        "actor": {"username": "dpo", "kind": "operator"},
        "details": {"subject": CAROL_ID, "reason": "GDPR art. 17 request 2026-0042"},
    }
    return [login, erased]


def _ts(seq: int) -> int:
    """Record time: one second apart, with a sub-second part so all nine digits matter."""
    return T0 + (seq + 1) * SECOND + 123_456_789


# --------------------------------------------------------------------------- building


@dataclass
class _Builder:
    """Appends frames exactly as the writer would, and remembers what a verifier must find."""

    origin: str
    seq: int = 0
    prev: bytes = b""
    crange: CompactRange = field(default_factory=CompactRange.empty)
    segments: list[bytearray] = field(default_factory=list)
    seg_first: list[int] = field(default_factory=list)
    seg_first_hash: list[bytes | None] = field(default_factory=list)
    leaves: list[bytes] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    last_note: bytes = b""

    def __post_init__(self) -> None:
        self.prev = genesis_hash(self.origin)

    def _frame(self, kind: int, body: bytes) -> int:
        seg = self.segments[-1]
        offset = len(seg)
        seg += framing.encode_frame(kind, body)
        return offset

    def open_segment(self, created_ns: int, signer: Signer) -> None:
        """Header, then the opening checkpoint that signs it (as the writer does)."""
        number = len(self.segments)
        header = SegmentHeader(
            self.origin, number, self.seq, self.prev, self.crange.hashes, signer.public, POLICY, created_ns
        )
        self.segments.append(bytearray())
        self.seg_first.append(self.seq)
        self.seg_first_hash.append(None)
        self._frame(framing.HEADER, header.encode())
        self.checkpoint(created_ns, signer)

    def record(self, ts_ns: int, event: dict[str, Any]) -> None:
        body = encode_record(self.seq, ts_ns, self.prev, event)
        leaf = record_hash(body)
        offset = self._frame(framing.RECORD, body)
        self.records.append(
            {
                "seq": self.seq,
                "segment": segment_name(len(self.segments) - 1),
                "offset": offset,
                "ts": str(ts_ns),
                "body": body.decode(),
                "hash": leaf.hex(),
            }
        )
        if self.seg_first_hash[-1] is None:
            self.seg_first_hash[-1] = leaf
        self.crange.append(leaf)
        self.leaves.append(leaf)
        self.prev = leaf
        self.seq += 1

    def _note(self, kind: int, cp: Checkpoint, signer: Signer) -> None:
        seg = self.segments[-1]
        cp = dataclasses.replace(cp, segment=_segment_line(len(self.segments) - 1, bytes(seg)))
        note = sign_note(cp.body(), signer)
        offset = self._frame(kind, note)
        self.checkpoints.append(
            {
                "segment": segment_name(len(self.segments) - 1),
                "offset": offset,
                "kind": framing.KIND_NAMES[kind],
                "size": cp.size,
                "signer": signer.name,
                "note": note.decode(),
            }
        )
        self.last_note = note

    def checkpoint(self, time_ns: int, signer: Signer) -> None:
        self._note(framing.CHECKPOINT, Checkpoint(self.origin, self.seq, self.crange.root(), time_ns), signer)

    def seal(self, time_ns: int, signer: Signer) -> None:
        first_hash = self.seg_first_hash[-1]
        assert first_hash is not None, "an empty segment is never sealed"
        line = Seal(len(self.segments) - 1, self.seg_first[-1], self.seq - 1, first_hash, self.prev, POLICY)
        self._note(framing.SEAL, Checkpoint(self.origin, self.seq, self.crange.root(), time_ns, line), signer)


def _segment_line(number: int, before: bytes) -> SegmentBytes:
    """kc-ledger/2: what a checkpoint at the end of `before` signs about its segment."""
    return SegmentBytes(number, len(before), hashlib.sha256(before).digest())


def _build() -> _Builder:
    """The positive ledger: segment 0 (epoch 0, rotated and sealed) and segment 1 (epoch 1, open)."""
    b = _Builder(ORIGIN)
    events = [e.to_json() for e in _events()] + _private_events()
    b.open_segment(T0, KEY0)
    b.record(_ts(0), events[0])
    b.checkpoint(_ts(0) + 1_000_000, KEY0)
    b.record(_ts(1), events[1])
    b.record(_ts(2), events[2])
    b.checkpoint(_ts(2) + 1_000_000, KEY0)
    for seq in (3, 4, 5):
        b.record(_ts(seq), events[seq])
    # kc-ledger/2: a key.rotated record is the last record of its segment. The outgoing key signs
    # the checkpoint after it and the seal; the incoming key signs the next segment from its header.
    sealed_at = _ts(5) + 1_000_000
    b.checkpoint(sealed_at, KEY0)
    b.seal(sealed_at, KEY0)
    b.open_segment(sealed_at, KEY1)
    b.record(_ts(6), events[6])
    b.record(_ts(7), events[7])
    b.checkpoint(_ts(7) + 1_000_000, KEY1)
    b.record(_ts(8), events[8])
    b.checkpoint(_ts(8) + 1_000_000, KEY1)
    b.record(_ts(9), events[9])
    b.record(_ts(10), events[10])
    b.checkpoint(_ts(10) + 1_000_000, KEY1)
    return b


# --------------------------------------------------------------------------- negative vectors

Frames = list[tuple[int, bytes]]
_FRAME_HEAD = framing.OVERHEAD - 4  # kind (1 byte) + length (4 bytes); the CRC is the other 4


def _frames(data: bytes) -> Frames:
    out: Frames = []
    for f in framing.iter_frames(data):
        assert isinstance(f, framing.Frame)
        out.append((f.kind, f.body))
    return out


def _join(frames: Frames) -> bytes:
    return b"".join(framing.encode_frame(kind, body) for kind, body in frames)


def _record_index(frames: Frames, seq: int) -> int:
    for i, (kind, body) in enumerate(frames):
        if kind == framing.RECORD and orjson.loads(body)["seq"] == seq:
            return i
    raise LookupError(f"no record {seq}")


def _note_index(frames: Frames, kind: int, size: int) -> int:
    for i, (k, body) in enumerate(frames):
        if k == kind and Checkpoint.parse_body(split_note(body)[0]).size == size:
            return i
    raise LookupError(f"no {framing.KIND_NAMES[kind]} of size {size}")


def _resign(note: bytes, signer: Signer) -> bytes:
    return sign_note(split_note(note)[0], signer)


@dataclass(frozen=True)
class Negative:
    """A damaged copy of the positive ledger and the findings the reference verifier must give."""

    name: str
    description: str
    findings: tuple[tuple[str, str | None, int | None], ...]  # (code, segment file, seq)
    segments: dict[str, bytes]
    external: bytes | None = None  # an external checkpoint, written as checkpoint.txt
    complete: bool = True  # False: only the leading findings are pinned

    def expected(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "code": self.findings[0][0],
            "complete": self.complete,
            "external_checkpoint": "checkpoint.txt" if self.external is not None else None,
            "findings": [{"code": c, "segment": s, "seq": q} for c, s, q in self.findings],
        }


def _resign_all(frames: Frames, number: int, signer: Signer) -> bytes:
    """Join frames, re-making every checkpoint's segment line and signature (what a key holder can do)."""
    out = bytearray()
    for kind, body in frames:
        if kind in (framing.CHECKPOINT, framing.SEAL):
            cp = dataclasses.replace(
                Checkpoint.parse_body(split_note(body)[0]), segment=_segment_line(number, bytes(out))
            )
            body = sign_note(cp.body(), signer)
        out += framing.encode_frame(kind, body)
    return bytes(out)


def _negatives(b: _Builder) -> list[Negative]:
    seg0, seg1 = bytes(b.segments[0]), bytes(b.segments[1])
    n0, n1 = segment_name(0), segment_name(1)
    last = b.seq - 1  # seq of the newest record
    out: list[Negative] = []

    def add(
        name: str,
        description: str,
        findings: tuple[tuple[str, str | None, int | None], ...],
        *,
        s0: bytes | None = seg0,
        s1: bytes | None = seg1,
        external: bytes | None = None,
        complete: bool = True,
    ) -> None:
        segs = {n: data for n, data in ((n0, s0), (n1, s1)) if data is not None}
        out.append(Negative(name, description, findings, segs, external, complete))

    def edit1(change: Callable[[Frames], None]) -> bytes:
        frames = _frames(seg1)
        change(frames)
        return _join(frames)

    # Damage that the CRC finds: one byte of record 8's body changes, its CRC does not.
    i8 = b.records[8]["offset"] + _FRAME_HEAD + 10
    add(
        "frame-damaged",
        "one byte inside record 8 is changed and the frame CRC is left as it was",
        (("frame-damaged", n1, 8),),
        s1=seg1[:i8] + bytes([seg1[i8] ^ 0x01]) + seg1[i8 + 1 :],
    )

    torn = b.checkpoints[-1]["offset"] + 20
    add(
        "torn-tail",
        "segment 1 ends in the middle of its last checkpoint frame, as after a crash",
        (("frame-damaged", n1, b.seq),),
        s1=seg1[:torn],
    )

    def outcome_of_last(frames: Frames) -> None:
        i = _record_index(frames, last)
        frames[i] = (framing.RECORD, frames[i][1].replace(b'"outcome":"succeeded"', b'"outcome":"failed"'))

    add(
        "record-edited",
        f"record {last}'s outcome is rewritten (frame CRC recomputed); the checkpoint after it "
        "no longer matches its bytes or its root",
        (("segment-digest", n1, last), ("root-mismatch", n1, last)),
        s1=edit1(outcome_of_last),
    )

    def client_of_6(frames: Frames) -> None:
        i = _record_index(frames, 6)
        frames[i] = (framing.RECORD, frames[i][1].replace(b'"client":"portal"', b'"client":"portaL"'))

    add(
        "record-edited-chain",
        "record 6 is edited (frame CRC recomputed); record 7's prev no longer matches",
        (("chain-broken", n1, 7),),
        s1=edit1(client_of_6),
    )

    def delete_7(frames: Frames) -> None:
        del frames[_record_index(frames, 7)]

    # The size-8 checkpoint now follows 7 records, and record 8 sits where record 7 should be.
    add(
        "record-deleted",
        "record 7 is removed from segment 1",
        (("checkpoint-size", n1, 6), ("segment-digest", n1, 6), ("seq-mismatch", n1, 7)),
        s1=edit1(delete_7),
    )

    def delete_6_7(frames: Frames) -> None:
        del frames[_record_index(frames, 7)]
        del frames[_record_index(frames, 6)]

    add(
        "records-deleted-before-checkpoint",
        "records 6 and 7 are removed, so the size-8 checkpoint directly follows segment 1's opening checkpoint",
        (("checkpoint-size", n1, 5), ("segment-digest", n1, 5), ("seq-mismatch", n1, 6)),
        s1=edit1(delete_6_7),
    )

    frames0 = _frames(seg0)
    del frames0[_record_index(frames0, 1)]
    add(
        "sealed-record-deleted",
        "record 1 is removed from the sealed segment 0",
        (("seq-mismatch", n0, 1), ("not-sealed", n0, None), ("seq-gap", n1, 6), ("untrusted-key", n1, 6)),
        s0=_join(frames0),
    )

    add(
        "segment-deleted",
        "the whole of segment 0 is removed",
        (("segment-missing", n1, None), ("seq-gap", n1, 6), ("untrusted-key", n1, 6)),
        s0=None,
    )

    def swap(frames: Frames) -> None:
        i, j = _record_index(frames, 6), _record_index(frames, 7)
        frames[i], frames[j] = frames[j], frames[i]

    add("records-reordered", "records 6 and 7 swap places", (("seq-mismatch", n1, 6),), s1=edit1(swap))

    def flip_signature(frames: Frames) -> None:
        i = _note_index(frames, framing.CHECKPOINT, 9)
        body, sigs = split_note(frames[i][1])
        sig = bytearray(sigs[0].signature)
        sig[0] ^= 0x01
        blob = base64.b64encode(sigs[0].key_id + bytes(sig)).decode()
        frames[i] = (framing.CHECKPOINT, body + f"\n— {sigs[0].name} {blob}\n".encode())

    add(
        "bad-signature",
        "one bit of the Ed25519 signature on the size-9 checkpoint is flipped",
        (("bad-signature", n1, 8), ("segment-digest", n1, last)),
        s1=edit1(flip_signature),
    )

    frames0 = _frames(seg0)
    i6 = _note_index(frames0, framing.CHECKPOINT, 6)
    frames0[i6] = (framing.CHECKPOINT, _resign(frames0[i6][1], KEY1))
    add(
        "rotation-signed-by-new-key",
        "the checkpoint that follows the key.rotated record is signed by the "
        "incoming epoch 1 key instead of the outgoing epoch 0 key",
        (("bad-signature", n0, 5), ("segment-digest", n0, 5)),
        s0=_join(frames0),
    )

    frames1 = _frames(seg1)
    header = SegmentHeader.decode(frames1[0][1])
    frames1[0] = (framing.HEADER, dataclasses.replace(header, key=ATTACKER.public).encode())
    add(
        "untrusted-key",
        "segment 1 names a key that no key.rotated record introduced, and every checkpoint in it is signed by that key",
        (("untrusted-key", n1, 6),),
        s1=_resign_all(frames1, 1, ATTACKER),
    )

    frames0 = _frames(seg0)
    i_seal = _note_index(frames0, framing.SEAL, 6)
    first_hash = b.seg_first_hash[0]
    assert first_hash is not None
    wrong = Seal(0, 0, 4, first_hash, bytes.fromhex(b.records[4]["hash"]), POLICY)
    cp = Checkpoint.parse_body(split_note(frames0[i_seal][1])[0])
    frames0[i_seal] = (framing.SEAL, sign_note(dataclasses.replace(cp, seal=wrong).body(), KEY0))
    add(
        "seal-mismatch",
        "segment 0's seal (validly signed) claims the segment ends at seq 4",
        (("seal-mismatch", n0, 5),),
        s0=_join(frames0),
    )

    seal_offset = next(c["offset"] for c in b.checkpoints if c["kind"] == "seal")
    add(
        "seal-removed",
        "the seal frame is cut off segment 0, which is followed by segment 1",
        (("not-sealed", n0, None),),
        s0=seg0[:seal_offset],
    )

    copy6 = framing.encode_frame(framing.RECORD, b.records[6]["body"].encode())
    add(
        "after-seal",
        "a copy of record 6 is appended to segment 0 after its seal",
        (("after-seal", n0, 6),),
        s0=seg0 + copy6,
    )

    cut = b.records[9]["offset"]
    add(
        "tail-cut",
        f"records 9 and 10 and the checkpoint after them are cut off; the auditor holds the size-{b.seq} checkpoint",
        (("tail-cut", None, 9),),
        s1=seg1[:cut],
        external=b.last_note,
    )

    # Someone holding the current (epoch 1) key rewrites the newest record and re-signs the checkpoint.
    # The ledger alone verifies; only the checkpoint the auditor kept shows the rewrite.
    frames1 = _frames(seg1)
    i_last = _record_index(frames1, last)
    rec = orjson.loads(frames1[i_last][1])
    rec["event"]["details"]["reason"] = "no reason"
    forged = encode_record(last, int(rec["ts"]), bytes.fromhex(rec["prev"]), rec["event"])
    frames1[i_last] = (framing.RECORD, forged)
    frames1[-1] = (
        framing.CHECKPOINT,
        sign_note(
            dataclasses.replace(
                Checkpoint.parse_body(split_note(frames1[-1][1])[0]), root=root([*b.leaves[:last], record_hash(forged)])
            ).body(),
            KEY1,
        ),
    )
    add(
        "split-view",
        "the newest record is rewritten and re-signed with the current key; the auditor holds "
        f"the original size-{b.seq} checkpoint",
        (("split-view", None, last),),
        s1=_resign_all(frames1, 1, KEY1),
        external=b.last_note,
    )

    old_key_cp = sign_note(split_note(b.last_note)[0], KEY0)
    add(
        "external-old-key",
        f"the auditor is handed a size-{b.seq} checkpoint signed by the retired epoch 0 key "
        "(as a thief of that key could)",
        (("external-signature", None, None),),
        external=old_key_cp,
    )

    # ---- the corners kc-ledger/2 closes (docs/format.md §16 lists what kc-ledger/1 accepted)

    # A thief of the retired epoch 0 key appends after the key.rotated record and signs over it.
    frames0 = _frames(seg0)[:-1]  # without the seal
    i_rot = _record_index(frames0, 5)
    rec5 = frames0[i_rot][1]
    forged6 = encode_record(
        6,
        _ts(6),
        record_hash(rec5),
        IdentityEvent(
            EventType.ROLE_GRANTED,
            Outcome.SUCCEEDED,
            realm="acme",
            actor=ADMIN,
            target=BOB,
            source_ip="192.0.2.10",
            request_id="req-0666",
            details={"roles": ["realm-admin"]},
        ).to_json(),
    )
    leaves7 = [*b.leaves[:6], record_hash(forged6)]
    frames0.append((framing.RECORD, forged6))
    frames0.append((framing.CHECKPOINT, sign_note(Checkpoint(ORIGIN, 7, root(leaves7), _ts(6) + 1).body(), KEY0)))
    add(
        "retired-key-window",
        "segment 1 is gone; after segment 0's key.rotated record (and the checkpoint "
        "after it) the retired epoch 0 key's holder appends a record and signs a checkpoint over it",
        (("rotation-window", n0, 6),),
        s0=_resign_all(frames0, 0, KEY0),
        s1=None,
    )

    # The current (epoch 1) key holder rewrites segment 0's policy in its header and seal and re-signs the seal.
    other = hashlib.sha256(b"a weaker policy").hexdigest()
    frames0 = _frames(seg0)
    h0 = SegmentHeader.decode(frames0[0][1])
    frames0[0] = (framing.HEADER, dataclasses.replace(h0, policy=other).encode())
    i_seal = _note_index(frames0, framing.SEAL, 6)
    cp = Checkpoint.parse_body(split_note(frames0[i_seal][1])[0])
    assert cp.seal is not None
    before = _join(frames0[:i_seal])
    frames0[i_seal] = (
        framing.SEAL,
        sign_note(
            dataclasses.replace(
                cp, seal=dataclasses.replace(cp.seal, policy_digest=other), segment=_segment_line(0, before)
            ).body(),
            KEY1,
        ),
    )
    add(
        "rewritten-seal-policy",
        "the epoch 1 key holder rewrites the policy in segment 0's header and seal "
        "and re-signs the seal with the epoch 1 key",
        (
            ("segment-digest", n0, None),
            ("segment-digest", n0, 0),
            ("segment-digest", n0, 2),
            ("segment-digest", n0, 5),
            ("bad-signature", n0, 5),
        ),
        s0=_join(frames0),
    )

    frames1 = _frames(seg1)
    h1 = SegmentHeader.decode(frames1[0][1])
    frames1[0] = (framing.HEADER, dataclasses.replace(h1, created_ns=h1.created_ns + 1).encode())
    add(
        "header-rewritten",
        "segment 1's header `created` time is changed (same length)",
        tuple(("segment-digest", n1, c["size"] - 1) for c in b.checkpoints if c["segment"] == n1),
        s1=_join(frames1),
    )

    def body_of_8(new: Callable[[bytes], bytes]) -> Callable[[Frames], None]:
        def change(frames: Frames) -> None:
            i = _record_index(frames, 8)
            frames[i] = (framing.RECORD, new(frames[i][1]))

        return change

    add(
        "record-not-json",
        "record 8's body is replaced by bytes that are not JSON (frame CRC recomputed)",
        (("record-not-json", n1, 8),),
        s1=edit1(body_of_8(lambda body: b"not json: " + body[:20])),
    )
    add(
        "record-duplicate-key",
        "record 8 repeats its seq member (frame CRC recomputed)",
        (("record-duplicate-key", n1, 8),),
        s1=edit1(body_of_8(lambda body: body.replace(b'"seq":8,', b'"seq":8,"seq":8,'))),
    )
    add(
        "record-not-canonical",
        "record 8 has a space after its first brace (frame CRC recomputed)",
        (("record-not-canonical", n1, 8),),
        s1=edit1(body_of_8(lambda body: b"{ " + body[1:])),
    )

    rec3 = b.records[3]["offset"]
    add(
        "tail-cut-across-rotation",
        "segment 1 is gone and segment 0 is cut back to its size-3 checkpoint, "
        f"before the key.rotated record; the auditor holds the size-{b.seq} checkpoint, signed by the epoch 1 key "
        "the cut ledger no longer introduces",
        (("tail-cut", None, 3),),
        s0=seg0[:rec3],
        s1=None,
        external=b.last_note,
    )
    return out


# --------------------------------------------------------------------------- outputs


def _json(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def _report(b: _Builder, external: int) -> dict[str, Any]:
    """The reference verifier's summary, derived from the construction."""
    types = Counter(orjson.loads(r["body"])["event"]["type"] for r in b.records)
    return {
        "verdict": "intact",
        "segments": len(b.segments),
        "records": len(b.records),
        "bytes": sum(len(s) for s in b.segments),
        "checkpoints": len(b.checkpoints),
        "external_checkpoints": external,
        "tree_size": b.seq,
        "root": b.crange.root().hex(),
        "first_time_ns": int(b.records[0]["ts"]),
        "last_time_ns": int(b.records[-1]["ts"]),
        "keys": [KEY0.name, KEY1.name],
        "event_types": dict(sorted(types.items())),
        "formats": {"kc-ledger/2": len(b.segments)},
        "limitations": [],
        "encrypted_records": 1,
        "erased_records": 1,
        "withheld_records": 0,
        "erased_subjects": 1,
        "mode": "full",
        "findings": [],
    }


def _key_json(label: str, signer: Signer) -> dict[str, Any]:
    return {"label": label, "seed_hex": signer.seed().hex(), **signer.public.to_json()}


def _expected(b: _Builder) -> dict[str, Any]:
    roots = {str(n): (root(b.leaves[:n]) if n else EMPTY_ROOT).hex() for n in range(len(b.leaves) + 1)}
    return {
        "format": "kc-ledger/2",
        "origin": ORIGIN,
        "genesis": genesis_hash(ORIGIN).hex(),
        "test_keys_never_use": [
            _key_json("epoch 0", KEY0),
            _key_json("epoch 1", KEY1),
            _key_json("attacker", ATTACKER),
        ],
        # Record 9's encrypted fields and the subject key they open with (erased by record 10: a real
        # ledger no longer has it; it is published here so a reader's decryption can be tested).
        "encrypted_fields": {
            "seq": 9,
            "subject": CAROL_ID,
            "subject_key_hex_never_use": SUBJECT_KEY.hex(),
            "fields": [{"path": p, "plaintext": v} for p, v in CAROL_FIELDS],
        },
        "segments": [
            {"file": f"segments/{segment_name(i)}", "bytes": len(s), "sha256": hashlib.sha256(s).hexdigest()}
            for i, s in enumerate(b.segments)
        ],
        "records": b.records,
        "roots": roots,
        "checkpoints": b.checkpoints,
        "report": _report(b, 0),
        "report_with_checkpoint": _report(b, 1),
    }


def build() -> dict[str, bytes]:
    """Every generated file, by path relative to tests/vectors/."""
    b = _build()
    files: dict[str, bytes] = {
        "trust.json": TrustAnchor(ORIGIN, KEY0.public).encode(),
        "checkpoint.txt": b.last_note,
        "expected.json": _json(_expected(b)),
    }
    for i, seg in enumerate(b.segments):
        files[f"segments/{segment_name(i)}"] = bytes(seg)
    negatives = _negatives(b)
    for neg in negatives:
        for name, data in neg.segments.items():
            files[f"negative/{neg.name}/segments/{name}"] = data
        if neg.external is not None:
            files[f"negative/{neg.name}/checkpoint.txt"] = neg.external
        files[f"negative/{neg.name}/expected.json"] = _json(neg.expected())
    files["README.md"] = _readme(negatives).encode()
    return files


def _readme(negatives: list[Negative]) -> str:
    rows = "\n".join(
        f"| `{n.name}` | {n.description} | "
        + ", ".join(
            f"`{c}`" + (f" ({s or 'ledger'}, seq {q})" if q is not None else f" ({s or 'ledger'})")
            for c, s, q in n.findings
        )
        + ("" if n.complete else ", …")
        + (" | yes |" if n.external is not None else " | |")
        for n in negatives
    )
    seg0_row = (
        "| `segments/00000000.seg` | segment 0, epoch 0, sealed: its opening checkpoint (size 0), records 0-5 "
        "(seq 5 is `key.rotated` to epoch 1, the segment's last record), checkpoints at sizes 1, 3 and 6 and "
        "the seal at size 6, all signed by the epoch 0 key |"
    )
    seg1_row = (
        "| `segments/00000001.seg` | segment 1, epoch 1, open: its opening checkpoint (size 6), records 6-10 "
        "(record 9 has encrypted fields, record 10 erases their subject), checkpoints at sizes 8, 9 and 11 |"
    )
    return f"""# kc-ledger/2 test vectors

Generated by `generate.py` (do not edit by hand); `python -m tests.vectors.generate --check`
fails if a committed byte differs from what the script produces. The format is specified in
[docs/format.md](../../docs/format.md); these files let you test a verifier written from it.

Keys are derived from fixed seeds and every time is a constant, so the bytes are stable
(Ed25519 signatures are deterministic; the AES-GCM nonces are fixed). The seeds are listed in
`expected.json` under `test_keys_never_use`: they are public, so never use them for a real ledger.

`v1/` holds the kc-ledger/1 vectors of the previous format version, frozen as they were
published (not regenerated): a verifier must still find them intact, and the reference verifier
reports the weaker guarantees of version 1 (docs/format.md §16).

## The positive ledger

Origin `{ORIGIN}`, 11 records (seq 0-10), two segments, one key rotation, one
record with encrypted fields and the erasure of their subject.

| file | what it is |
|---|---|
| `trust.json` | the trust anchor: origin and the epoch 0 public key |
{seg0_row}
{seg1_row}
| `checkpoint.txt` | the latest checkpoint (size 11, epoch 1 key), as an auditor or a witness would keep it |
| `expected.json` | what a verifier must compute, see below |

`expected.json` holds:

* `genesis`: the `prev` of record 0, hex;
* `records`: for each record its `seq`, segment file, frame `offset`, `ts`, `body` (the exact record
  bytes as UTF-8 text) and `hash` (SHA-256(0x00 || body), hex);
* `roots`: the Merkle tree root for every tree size 0-11, hex;
* `checkpoints`: each checkpoint and seal frame: segment, offset, kind, tree size, signing key name
  and the whole signed note (each signs its segment's bytes before it, docs/format.md §9);
* `segments`: each file's length and SHA-256;
* `encrypted_fields`: record 9's encrypted fields (path and plaintext) and the subject key they open
  with (docs/format.md §5.2); a real ledger would no longer have that key after record 10;
* `report`: the reference verifier's summary for `sidecar verify vectors --trust trust.json --json`,
  and `report_with_checkpoint` for the same with `--checkpoint checkpoint.txt`.

Suggested use: parse each frame, check that your record hashes and roots equal the lists, then
check that your verifier accepts the ledger (with and without `checkpoint.txt` as an external
checkpoint) and reaches the same tree size, root, key names and counts.

## Negative vectors

Each folder under `negative/` is a damaged copy of the ledger: a `segments/` folder (the
segment files, one of them changed or missing), sometimes a `checkpoint.txt` to pass as an
external checkpoint, and an `expected.json` with the first finding's `code` and the list of
`findings` (code, segment file, seq; `null` where the reference verifier names none), in the
order docs/format.md §15 gives them. All of them use the top-level `trust.json`. A verifier
passes a negative vector if it rejects the ledger; matching the finding codes, segments and
seqs is a check on its precision.

| vector | what was done | findings | external checkpoint |
|---|---|---|---|
{rows}

`split-view` verifies clean without its `checkpoint.txt`: a holder of the current key can rewrite
records since the last checkpoint kept outside the ledger (docs/format.md, "What this format does
not protect against"). `retired-key-window`, `rewritten-seal-policy`, `header-rewritten`,
`record-not-json`, `record-duplicate-key`, `record-not-canonical` and `tail-cut-across-rotation`
are the corners kc-ledger/1 left open (docs/format.md §16).
"""


# --------------------------------------------------------------------------- writing and checking


def differences(directory: Path = HERE) -> list[str]:
    """Paths (relative to `directory`) whose committed bytes differ from a fresh build."""
    built = build()
    present = {
        str(p.relative_to(directory))
        for top in MANAGED
        for p in ([directory / top] if (directory / top).is_file() else sorted((directory / top).rglob("*")))
        if p.is_file()
    }
    diffs = [f"{path}: missing" for path in sorted(set(built) - present)]
    diffs += [f"{path}: not generated (stale)" for path in sorted(present - set(built))]
    diffs += [
        f"{path}: differs" for path in sorted(set(built) & present) if (directory / path).read_bytes() != built[path]
    ]
    return diffs


def write(directory: Path = HERE) -> int:
    """Replace the generated files in `directory`; return how many were written."""
    for top in MANAGED:
        path = directory / top
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    files = build()
    for rel, data in files.items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return len(files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.vectors.generate", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--check", action="store_true", help="compare with the committed files and write nothing")
    args = parser.parse_args(argv)
    if args.check:
        diffs = differences()
        for line in diffs:
            print(line, file=sys.stderr)
        return 1 if diffs else 0
    print(f"wrote {write()} files to {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
