"""Ed25519 keys, key names and key ids, with no file I/O.

A key is named `<origin>#<epoch>` (epoch as a decimal number). Its key id is the
C2SP signed-note id: the first 4 bytes of SHA-256(name || 0x0A || 0x01 || pub),
where 0x01 is the Ed25519 signature type. Key ids only help pick a key; the
verifier always compares the full public key, because 4 bytes can be forced.

`Signer` is the seam the ledger signs through; tests pin it with fixed seeds.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

ED25519_TYPE = b"\x01"


def key_name(origin: str, epoch: int) -> str:
    return f"{origin}#{epoch}"


def key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ED25519_TYPE + public_key).digest()[:4]


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A named Ed25519 public key."""

    name: str
    raw: bytes

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.raw)

    @property
    def epoch(self) -> int:
        """The epoch number from the name `<origin>#<epoch>`; -1 if the name does not have one."""
        _, sep, tail = self.name.rpartition("#")
        return int(tail) if sep and tail.isascii() and tail.isdigit() else -1

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "public_key": base64.b64encode(self.raw).decode(), "key_id": self.key_id.hex()}

    @classmethod
    def from_json(cls, obj: dict[str, str], *, require_key_id: bool = False) -> PublicKey:
        """Parse a public key object (docs/format.md §8); raises ValueError.

        `key_id`, when present, must be the id computed from name and key; headers and
        `key.rotated` records must carry it (`require_key_id`), the trust file may leave it out.
        """
        if not isinstance(obj, dict):
            raise ValueError("public key is not an object")
        name, b64 = obj.get("name"), obj.get("public_key")
        if not isinstance(name, str) or not name or not isinstance(b64, str):
            raise ValueError("public key lacks a name or a public_key string")
        raw = base64.b64decode(b64, validate=True)
        if len(raw) != 32 or base64.b64encode(raw).decode() != b64:
            raise ValueError(f"public key {name!r} is not the base64 of 32 bytes")
        key = cls(name, raw)
        kid = obj.get("key_id")
        if kid is None and require_key_id:
            raise ValueError(f"public key {name!r} has no key_id")
        if kid is not None and kid != key.key_id.hex():
            raise ValueError(f"public key {name!r}: key_id {str(kid)[:16]!r} is not {key.key_id.hex()}")
        if require_key_id and set(obj) - {"name", "public_key", "key_id"}:
            raise ValueError(f"public key {name!r} has unexpected members")
        return key


class Signer:
    """An Ed25519 private key with its name. The only object that can sign."""

    __slots__ = ("_key", "public")

    def __init__(self, name: str, private: Ed25519PrivateKey) -> None:
        self._key = private
        raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.public = PublicKey(name, raw)

    @classmethod
    def generate(cls, name: str) -> Signer:
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, name: str, seed: bytes) -> Signer:
        return cls(name, Ed25519PrivateKey.from_private_bytes(seed))

    def seed(self) -> bytes:
        return self._key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    @property
    def name(self) -> str:
        return self.public.name

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)
