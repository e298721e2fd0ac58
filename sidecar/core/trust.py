"""The trust anchor an auditor pins: the ledger's origin and its first public key.

A trust file is JSON:

    {"format": "kc-ledger-trust/1", "origin": "<origin>",
     "root_key": {"name": ..., "public_key": <base64>, "key_id": <hex>}}

Later epoch keys are not listed: the verifier learns them from `key.rotated`
records, each covered by a checkpoint signed by the key before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from sidecar.core.keys import PublicKey

TRUST_FORMAT = "kc-ledger-trust/1"


@dataclass(frozen=True, slots=True)
class TrustAnchor:
    origin: str
    root_key: PublicKey

    def to_json(self) -> dict[str, Any]:
        return {"format": TRUST_FORMAT, "origin": self.origin, "root_key": self.root_key.to_json()}

    def encode(self) -> bytes:
        return orjson.dumps(self.to_json(), option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"

    @classmethod
    def decode(cls, data: bytes) -> TrustAnchor:
        try:
            obj = orjson.loads(data)
            if obj.get("format") != TRUST_FORMAT:
                raise ValueError(f"format is {obj.get('format')!r}, expected {TRUST_FORMAT!r}")
            # PublicKey.from_json refuses a key_id that is not the key's own.
            return cls(str(obj["origin"]), PublicKey.from_json(obj["root_key"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"trust file is unusable: {exc}") from exc
