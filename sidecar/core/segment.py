"""Segment headers and file names.

Segment `n` lives in `segments/<n as 8 digits>.seg`. Its first frame is a
header (JCS JSON):

    {"created": "<ns>", "first_seq": <seq of its first record>, "format": "kc-ledger/2",
     "key": {<public key in force at first_seq>}, "origin": "<origin>",
     "policy": "<policy digest>", "prev": "<hash of the record before first_seq>",
     "range": ["<hex>", ...], "segment": <n>}

`range` is the compact Merkle range [0, first_seq): the roots of the perfect
subtrees that cover every earlier record. With it a segment can be checked on
its own (in parallel with the others), and the writer can resume without
reading earlier segments. Nothing in the header is trusted on its own: the
verifier checks `prev`, `range` and `key` against what earlier segments prove,
and in kc-ledger/2 every checkpoint of the segment signs a digest of all the
segment's bytes before it, header included (docs/format.md §10).

`SegmentHeader.decode` is the one reader of header bytes (strict: canonical
JSON, exact members, key id checked); it raises HeaderError.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sidecar.core.canonical import NotCanonical, canonical_bytes, parse_canonical
from sidecar.core.keys import PublicKey

FORMAT = "kc-ledger/2"  # what the writer produces
FORMATS = {"kc-ledger/1": 1, "kc-ledger/2": 2}
_MEMBERS = frozenset({"created", "first_seq", "format", "key", "origin", "policy", "prev", "range", "segment"})
_HEX64 = re.compile(r"[0-9a-f]{64}")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
SEGMENT_DIR = "segments"
_NAME = re.compile(r"^(\d{8})\.seg$")


def segment_name(n: int) -> str:
    return f"{n:08d}.seg"


def segment_number(name: str) -> int | None:
    m = _NAME.match(name)
    return int(m.group(1)) if m else None


class HeaderError(ValueError):
    """Header bytes that are not a segment header."""


@dataclass(frozen=True, slots=True)
class SegmentHeader:
    origin: str
    segment: int
    first_seq: int
    prev: bytes
    range: tuple[bytes, ...]
    key: PublicKey
    policy: str
    created_ns: int
    version: int = 2  # 1 for kc-ledger/1, 2 for kc-ledger/2

    @property
    def format(self) -> str:
        return f"kc-ledger/{self.version}"

    def encode(self) -> bytes:
        return canonical_bytes(
            {
                "created": str(self.created_ns),
                "first_seq": self.first_seq,
                "format": self.format,
                "key": self.key.to_json(),
                "origin": self.origin,
                "policy": self.policy,
                "prev": self.prev.hex(),
                "range": [h.hex() for h in self.range],
                "segment": self.segment,
            }
        )

    @classmethod
    def decode(cls, body: bytes) -> SegmentHeader:
        """Parse header bytes strictly (docs/format.md §10); raises HeaderError."""
        try:
            obj: Any = parse_canonical(body)
        except NotCanonical as exc:
            raise HeaderError(f"segment header is malformed: {exc}") from None
        try:
            if not isinstance(obj, dict) or obj.keys() != _MEMBERS:
                raise ValueError("members differ from those of §10")
            version = FORMATS.get(obj["format"]) if isinstance(obj["format"], str) else None
            if version is None:
                raise ValueError(f"format is {str(obj['format'])[:40]!r}, expected one of {sorted(FORMATS)}")
            seg, first, created = obj["segment"], obj["first_seq"], obj["created"]
            if type(seg) is not int or type(first) is not int or seg < 0 or first < 0:
                raise ValueError("segment and first_seq must be integers >= 0")
            if not isinstance(created, str) or not _DECIMAL.fullmatch(created):
                raise ValueError("created is not a decimal string")
            prev, rng, origin, policy = obj["prev"], obj["range"], obj["origin"], obj["policy"]
            if not isinstance(prev, str) or not _HEX64.fullmatch(prev):
                raise ValueError("prev is not 64 lowercase hex digits")
            if not isinstance(rng, list) or not all(isinstance(h, str) and _HEX64.fullmatch(h) for h in rng):
                raise ValueError("range is not a list of 64-digit lowercase hex hashes")
            if not isinstance(origin, str) or not origin or not isinstance(policy, str):
                raise ValueError("origin or policy is not a string")
            return cls(
                origin=origin,
                segment=seg,
                first_seq=first,
                prev=bytes.fromhex(prev),
                range=tuple(bytes.fromhex(h) for h in rng),
                key=PublicKey.from_json(obj["key"], require_key_id=True),
                policy=policy,
                created_ns=int(created),
                version=version,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise HeaderError(f"segment header is malformed: {exc}") from exc
