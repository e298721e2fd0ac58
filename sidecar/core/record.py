"""Records: the canonical bytes of one event, chained to the record before it.

A record body is the JCS encoding of

    {"event": {...}, "prev": "<hex>", "seq": <n>, "ts": "<unix ns, decimal string>", "v": 2}

(`ts` is a string because nanosecond times exceed 2^53, the largest integer
JCS numbers carry exactly; `v` is 1 in kc-ledger/1 segments, 2 in kc-ledger/2.)

Its hash is the Merkle leaf hash SHA-256(0x00 || body), and `prev` is the hash
of the record before it. The first record's `prev` is the genesis hash
SHA-256("kc-ledger/1 genesis\\n" || origin), which ties a log to its origin
(the same in both versions, so a ledger can move from version 1 to 2).

`parse_record` is the one reader of record bytes: the verifier, the writer's
recovery, proofs, timeline, export and the index all call it. It raises
`RecordError` whose `code` is the verifier's finding code (docs/format.md §4).

Invariants: `seq` counts from 0 without gaps; `ts` never goes backwards within
a log; a reader hashes the bytes it read and only then parses them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from sidecar.core.canonical import MAX_SAFE_INT, NotCanonical, canonical_bytes, parse_canonical

FORMAT_VERSION = 2  # what the writer produces
VERSIONS = frozenset({1, 2})
_GENESIS_PREFIX = b"kc-ledger/1 genesis\n"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_MEMBERS = frozenset({"event", "prev", "seq", "ts", "v"})


def genesis_hash(origin: str) -> bytes:
    return hashlib.sha256(_GENESIS_PREFIX + origin.encode()).digest()


def record_hash(body: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + body).digest()


def encode_record(seq: int, ts_ns: int, prev: bytes, event: dict[str, Any], version: int = FORMAT_VERSION) -> bytes:
    return canonical_bytes({"event": event, "prev": prev.hex(), "seq": seq, "ts": str(ts_ns), "v": version})


class RecordError(ValueError):
    """Record bytes that are not a record; `code` is the finding code (`record-not-json`, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Record:
    """A parsed record. `body` is the exact bytes that were hashed."""

    seq: int
    ts_ns: int
    prev: bytes
    event: dict[str, Any]
    body: bytes
    version: int = FORMAT_VERSION

    @property
    def hash(self) -> bytes:
        return record_hash(self.body)

    @property
    def type(self) -> str:
        return str(self.event.get("type", ""))


def parse_record(body: bytes, version: int | None = None) -> Record:
    """Parse record bytes strictly (docs/format.md §3-§4); raises RecordError.

    `version` is the segment's record version (1 or 2) when the caller knows it; a record of
    another version is `record-malformed`.
    """
    try:
        obj = parse_canonical(body)
    except NotCanonical as exc:
        raise RecordError(f"record-{exc.code}", f"record {exc}") from None
    if not isinstance(obj, dict):
        raise RecordError("record-malformed", "record is not a JSON object")
    if obj.keys() != _MEMBERS:
        extra, missing = sorted(obj.keys() - _MEMBERS), sorted(_MEMBERS - obj.keys())
        raise RecordError("record-malformed", f"record members differ: extra {extra}, missing {missing}")
    v, seq, ts, prev, event = obj["v"], obj["seq"], obj["ts"], obj["prev"], obj["event"]
    if type(v) is not int or v not in VERSIONS or (version is not None and v != version):
        raise RecordError("record-malformed", f"record version is {v!r}, expected {version or 'one of 1, 2'}")
    if type(seq) is not int or not 0 <= seq <= MAX_SAFE_INT:
        raise RecordError("record-malformed", f"record seq is {str(seq)[:24]}, expected an integer >= 0")
    if not isinstance(ts, str) or not _DECIMAL.fullmatch(ts):
        raise RecordError("record-malformed", f"record ts {str(ts)[:24]!r} is not a decimal string")
    if not isinstance(prev, str) or not _HEX64.fullmatch(prev):
        raise RecordError("record-malformed", "record prev is not 64 lowercase hex digits")
    if not isinstance(event, dict):
        raise RecordError("record-malformed", "record event is not an object")
    if v >= 2 and not (isinstance(event.get("type"), str) and isinstance(event.get("outcome"), str)):
        raise RecordError("record-malformed", "record event lacks a string type or outcome")
    return Record(seq, int(ts), bytes.fromhex(prev), event, body, v)


def decode_record(body: bytes) -> Record:
    """Alias of parse_record for existing callers (raises RecordError, a ValueError)."""
    return parse_record(body)


def record_object(body: bytes, version: int | None = None) -> dict[str, Any]:
    """The record as a JSON object, after the same strict checks as parse_record (for dict readers)."""
    rec = parse_record(body, version)
    return {"event": rec.event, "prev": rec.prev.hex(), "seq": rec.seq, "ts": str(rec.ts_ns), "v": rec.version}
