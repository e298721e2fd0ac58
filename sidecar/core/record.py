"""Records: the canonical bytes of one event, chained to the record before it.

A record body is the JCS encoding of

    {"event": {...}, "prev": "<hex>", "seq": <n>, "ts": "<unix ns, decimal string>", "v": 1}

(`ts` is a string because nanosecond times exceed 2^53, the largest integer
JCS numbers carry exactly.)

Its hash is the Merkle leaf hash SHA-256(0x00 || body), and `prev` is the hash
of the record before it. The first record's `prev` is the genesis hash
SHA-256("kc-ledger/1 genesis\\n" || origin), which ties a log to its origin.

Invariants: `seq` counts from 0 without gaps; `ts` never goes backwards within
a log; the verifier hashes the bytes it read and only then parses them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from sidecar.core.canonical import canonical_bytes, parse

FORMAT_VERSION = 1
_GENESIS_PREFIX = b"kc-ledger/1 genesis\n"


def genesis_hash(origin: str) -> bytes:
    return hashlib.sha256(_GENESIS_PREFIX + origin.encode()).digest()


def record_hash(body: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + body).digest()


def encode_record(seq: int, ts_ns: int, prev: bytes, event: dict[str, Any]) -> bytes:
    return canonical_bytes({"event": event, "prev": prev.hex(), "seq": seq, "ts": str(ts_ns), "v": FORMAT_VERSION})


@dataclass(frozen=True, slots=True)
class Record:
    """A parsed record. `body` is the exact bytes that were hashed."""

    seq: int
    ts_ns: int
    prev: bytes
    event: dict[str, Any]
    body: bytes

    @property
    def hash(self) -> bytes:
        return record_hash(self.body)

    @property
    def type(self) -> str:
        return str(self.event.get("type", ""))


def decode_record(body: bytes) -> Record:
    """Parse record bytes; raises ValueError with the reason when malformed."""
    try:
        obj = parse(body)
    except ValueError as exc:
        raise ValueError(f"record is not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ValueError("record is not a JSON object")
    if obj.get("v") != FORMAT_VERSION:
        raise ValueError(f"record format version is {obj.get('v')!r}, expected {FORMAT_VERSION}")
    seq, ts, prev, event = obj.get("seq"), obj.get("ts"), obj.get("prev"), obj.get("event")
    if not isinstance(seq, int) or not isinstance(ts, str) or not ts.isdigit() or not isinstance(event, dict):
        raise ValueError("record lacks an integer seq, a decimal ts string or an event object")
    if not isinstance(prev, str) or len(prev) != 64:
        raise ValueError("record prev is not a 64-character hex hash")
    if set(obj) != {"event", "prev", "seq", "ts", "v"}:
        raise ValueError(f"record has unexpected fields {sorted(set(obj) - {'event', 'prev', 'seq', 'ts', 'v'})}")
    return Record(seq, int(ts), bytes.fromhex(prev), event, body)
