"""Ed25519 keys: names, key ids, signatures, and the strict public-key object parser."""

from __future__ import annotations

import base64
import hashlib

import pytest

from sidecar.core.keys import PublicKey, Signer, key_id, key_name

_SIGNER = Signer.from_seed("ledger.example#0", bytes(range(32)))


def test_a_key_name_joins_origin_and_epoch() -> None:
    """`<origin>#<epoch>` with the epoch in decimal."""
    assert key_name("ledger.example", 3) == "ledger.example#3"


def test_the_key_id_is_the_c2sp_signed_note_id() -> None:
    """The id is the first 4 bytes of SHA-256(name, newline, 0x01, public key)."""
    raw = _SIGNER.public.raw
    want = hashlib.sha256(b"ledger.example#0\n\x01" + raw).digest()[:4]
    assert key_id("ledger.example#0", raw) == want == _SIGNER.public.key_id


@pytest.mark.parametrize(
    ("name", "epoch"),
    [
        ("ledger.example#0", 0),
        ("a#b#12", 12),
        ("ledger.example", -1),
        ("x#", -1),
        ("x#1a", -1),
        ("x#١", -1),
    ],
)
def test_the_epoch_comes_from_the_name(name: str, epoch: int) -> None:
    """The decimal ASCII digits after the last '#', else -1 (no '#', empty, non-digit, non-ASCII digit)."""
    assert PublicKey(name, b"\x00" * 32).epoch == epoch


def test_a_signature_verifies_only_for_its_message_and_key() -> None:
    """verify is True for the signed message, False for another message, a bad signature or a bad key."""
    sig = _SIGNER.sign(b"message")
    pub = _SIGNER.public
    assert pub.verify(sig, b"message")
    assert not pub.verify(sig, b"other")
    assert not pub.verify(b"\x00" * 64, b"message")
    assert not pub.verify(b"short", b"message")
    assert not PublicKey(pub.name, b"\x01" * 31).verify(sig, b"message")


def test_a_signer_exposes_its_name_seed_and_public_key() -> None:
    """from_seed round-trips its seed; generate makes a fresh key with the given name."""
    assert _SIGNER.seed() == bytes(range(32)) and _SIGNER.name == "ledger.example#0"
    fresh = Signer.generate("other#1")
    assert fresh.name == "other#1" and fresh.public.raw != _SIGNER.public.raw
    assert Signer.from_seed("other#1", fresh.seed()).public == fresh.public


def test_a_public_key_object_round_trips() -> None:
    """to_json then from_json (with the key id required) gives the same key."""
    obj = _SIGNER.public.to_json()
    assert obj == {
        "name": "ledger.example#0",
        "public_key": base64.b64encode(_SIGNER.public.raw).decode(),
        "key_id": _SIGNER.public.key_id.hex(),
    }
    assert PublicKey.from_json(obj, require_key_id=True) == _SIGNER.public
    assert PublicKey.from_json({"name": obj["name"], "public_key": obj["public_key"]}) == _SIGNER.public


_GOOD = _SIGNER.public.to_json()
_B64 = _GOOD["public_key"]


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ("not an object", "public key is not an object"),
        ({"public_key": _B64}, "public key lacks a name or a public_key string"),
        ({"name": "", "public_key": _B64}, "public key lacks a name or a public_key string"),
        ({"name": "k#0", "public_key": 5}, "public key lacks a name or a public_key string"),
        ({"name": "k#0", "public_key": base64.b64encode(b"\x00" * 31).decode()}, "is not the base64 of 32 bytes"),
        ({"name": "k#0", "public_key": _B64[:-1] + "B"}, "is not the base64 of 32 bytes"),  # spare bits set
        ({**_GOOD, "key_id": "00000000"}, "key_id '00000000' is not"),
        ({**_GOOD, "extra": "x"}, "has unexpected members"),
        ({"name": _GOOD["name"], "public_key": _B64}, "has no key_id"),
    ],
)
def test_the_public_key_parser_refuses_each_deviation(obj: object, message: str) -> None:
    """Not an object, no name, a non-string key, 31 bytes, non-canonical base64, a wrong id, extras, no id."""
    with pytest.raises(ValueError, match=message):
        PublicKey.from_json(obj, require_key_id=True)  # type: ignore[arg-type]


def test_invalid_base64_is_a_value_error() -> None:
    """Characters outside the base64 alphabet are refused (binascii.Error is a ValueError)."""
    with pytest.raises(ValueError):
        PublicKey.from_json({"name": "k#0", "public_key": "!!!!"})
