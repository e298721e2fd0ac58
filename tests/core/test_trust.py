"""The trust anchor file: it round-trips, and anything else is refused with the reason."""

from __future__ import annotations

import orjson
import pytest

from sidecar.core.keys import Signer
from sidecar.core.trust import TRUST_FORMAT, TrustAnchor

_KEY = Signer.from_seed("ledger.example#0", bytes(32)).public
_ANCHOR = TrustAnchor("ledger.example", _KEY)


def test_a_trust_file_round_trips() -> None:
    """encode writes sorted, indented JSON ending in a newline; decode reads it back."""
    data = _ANCHOR.encode()
    assert data.endswith(b"}\n") and orjson.loads(data) == _ANCHOR.to_json()
    assert _ANCHOR.to_json()["format"] == TRUST_FORMAT
    assert TrustAnchor.decode(data) == _ANCHOR


def test_the_key_id_may_be_left_out() -> None:
    """A root key without key_id is accepted; the id is computed from name and key."""
    obj = _ANCHOR.to_json()
    del obj["root_key"]["key_id"]
    assert TrustAnchor.decode(orjson.dumps(obj)) == _ANCHOR


def _with(**change: object) -> bytes:
    obj = _ANCHOR.to_json()
    obj.update(change)
    return orjson.dumps(obj)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{not json", "unexpected character|Key name must be"),
        (b"[]", "'list' object has no attribute 'get'"),
        (_with(format="kc-ledger-trust/2"), "format is 'kc-ledger-trust/2', expected 'kc-ledger-trust/1'"),
        (_with(origin=None, root_key=None), "public key is not an object"),
        (orjson.dumps({"format": TRUST_FORMAT, "root_key": _KEY.to_json()}), "'origin'"),
        (_with(root_key={**_KEY.to_json(), "key_id": "deadbeef"}), "key_id 'deadbeef' is not"),
    ],
)
def test_an_unusable_trust_file_is_refused_with_the_reason(data: bytes, reason: str) -> None:
    """Not JSON, not an object, another format, no key, no origin, a wrong key id: ValueError naming why."""
    with pytest.raises(ValueError, match=f"trust file is unusable: .*({reason})"):
        TrustAnchor.decode(data)
