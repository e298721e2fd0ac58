"""Segment headers and file names.

Segment `n` lives in `segments/<n as 8 digits>.seg`. Its first frame is a
header (JCS JSON):

    {"created": "<ns>", "first_seq": <seq of its first record>, "format": "kc-ledger/1",
     "key": {<public key in force at first_seq>}, "origin": "<origin>",
     "policy": "<policy digest>", "prev": "<hash of the record before first_seq>",
     "range": ["<hex>", ...], "segment": <n>}

`range` is the compact Merkle range [0, first_seq): the roots of the perfect
subtrees that cover every earlier record. With it a segment can be checked on
its own (in parallel with the others), and the writer can resume without
reading earlier segments. Nothing in the header is trusted on its own: the
verifier checks `prev`, `range` and `key` against what earlier segments prove.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sidecar.core.canonical import canonical_bytes, parse
from sidecar.core.keys import PublicKey

FORMAT = "kc-ledger/1"
SEGMENT_DIR = "segments"
_NAME = re.compile(r"^(\d{8})\.seg$")


def segment_name(n: int) -> str:
    return f"{n:08d}.seg"


def segment_number(name: str) -> int | None:
    m = _NAME.match(name)
    return int(m.group(1)) if m else None


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

    def encode(self) -> bytes:
        return canonical_bytes({
            "created": str(self.created_ns), "first_seq": self.first_seq, "format": FORMAT,
            "key": self.key.to_json(), "origin": self.origin, "policy": self.policy,
            "prev": self.prev.hex(), "range": [h.hex() for h in self.range], "segment": self.segment,
        })

    @classmethod
    def decode(cls, body: bytes) -> SegmentHeader:
        try:
            obj: Any = parse(body)
            if obj["format"] != FORMAT:
                raise ValueError(f"format is {obj['format']!r}, expected {FORMAT!r}")
            return cls(
                origin=str(obj["origin"]), segment=int(obj["segment"]), first_seq=int(obj["first_seq"]),
                prev=bytes.fromhex(obj["prev"]), range=tuple(bytes.fromhex(h) for h in obj["range"]),
                key=PublicKey.from_json(obj["key"]), policy=str(obj["policy"]), created_ns=int(obj["created"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"segment header is malformed: {exc}") from exc
