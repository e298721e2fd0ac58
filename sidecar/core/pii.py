"""Encrypted field values: identifying data under a per-subject key (crypto-shredding).

An identifying value (a username, an e-mail address, an IP address...) is stored in a
record as an object in place of the value (docs/format.md §5.2):

    {"ct": "<base64 ciphertext || tag>", "kc-enc": 1, "n": "<base64 12-byte nonce>", "sub": "<subject id>"}

encrypted with AES-256-GCM under the subject's 32-byte key, the plaintext being the
canonical JSON of the value and the associated data `kc-enc/1 <origin> <subject> <path>`
(the path names the field, such as `actor.username`), so a ciphertext cannot be moved to
another ledger, subject or field. The object is inside the signed record like any value:
verification never needs a key. Destroying a subject's key (recorded by a `subject.erased`
record) makes every value encrypted under it unreadable, while every hash and signature
stays valid.

Pure: keys and nonces are passed in; nothing here stores a key.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sidecar.core.canonical import NotCanonical, canonical_bytes, parse_canonical

MARK = "kc-enc"
VERSION = 1
KEY_BYTES = 32
NONCE_BYTES = 12


class DecryptError(ValueError):
    """An encrypted value cannot be opened with the key given (wrong key, subject, field, or damage)."""


def is_encrypted(value: Any) -> bool:
    return isinstance(value, dict) and value.get(MARK) == VERSION and isinstance(value.get("sub"), str)


def _aad(origin: str, subject: str, path: str) -> bytes:
    return f"kc-enc/1 {origin} {subject} {path}".encode()


def encrypt_value(key: bytes, nonce: bytes, *, origin: str, subject: str, path: str, value: Any) -> dict[str, Any]:
    """The encrypted form of `value` (a canonical-subset value) for field `path` of `subject`."""
    if len(key) != KEY_BYTES or len(nonce) != NONCE_BYTES:
        raise ValueError("a subject key is 32 bytes and a nonce 12")
    ct = AESGCM(key).encrypt(nonce, canonical_bytes(value), _aad(origin, subject, path))
    return {"ct": base64.b64encode(ct).decode(), MARK: VERSION, "n": base64.b64encode(nonce).decode(),
            "sub": subject}


def decrypt_value(key: bytes, enc: dict[str, Any], *, origin: str, path: str) -> Any:
    """The plaintext value of an encrypted field; raises DecryptError."""
    if not is_encrypted(enc):
        raise DecryptError(f"{path}: not an encrypted value")
    try:
        nonce = base64.b64decode(enc["n"], validate=True)
        ct = base64.b64decode(enc["ct"], validate=True)
        plain = AESGCM(key).decrypt(nonce, ct, _aad(origin, enc["sub"], path))
        return parse_canonical(plain)
    except (KeyError, TypeError, binascii.Error, InvalidTag, NotCanonical, ValueError) as exc:
        raise DecryptError(f"{path}: the value does not open with this subject's key") from exc
