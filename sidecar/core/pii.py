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
from collections.abc import Callable
from dataclasses import dataclass
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
    return {"ct": base64.b64encode(ct).decode(), MARK: VERSION, "n": base64.b64encode(nonce).decode(), "sub": subject}


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


# ------------------------------------------------------------------ which values, under whose key
Path = tuple[str, ...]


def _user_id(party: Any) -> str | None:
    if isinstance(party, dict) and party.get("kind") in ("user", None) and isinstance(party.get("id"), str):
        return party["id"] or None
    return None


def identifying_values(
    event: dict[str, Any],
    *,
    party_fields: tuple[str, ...],
    event_fields: tuple[str, ...],
    detail_fields: tuple[str, ...],
    fallback: str,
) -> list[tuple[Path, str]]:
    """The (path, subject) of every identifying value in a record's event, not yet encrypted.

    The subject is the Keycloak user id the value identifies: a user party's own id for its
    `username`/`name`; the acting user's id for the source IP; for a value in `details`, the
    `user_id` of the object holding it (a Keycloak event quoted by drift), else the acting user,
    else the target user. A value no user id backs goes under `fallback` (docs/format.md §5.2).
    Parties that are not users (clients, groups, roles, an operator) are never personal data here.
    """
    out: list[tuple[Path, str]] = []
    actor_id, target_id = _user_id(event.get("actor")), _user_id(event.get("target"))
    for side in ("actor", "target"):
        party = event.get(side)
        if not isinstance(party, dict) or party.get("kind") not in ("user", None):
            continue
        subject = _user_id(party) or fallback
        out += [((side, f), subject) for f in party_fields if party.get(f) is not None and not is_encrypted(party[f])]
    for f in event_fields:
        if event.get(f) is not None and not is_encrypted(event[f]):
            out.append(((f,), actor_id or fallback))

    def walk(obj: dict[str, Any], path: Path, subject: str) -> None:
        user_id = obj.get("user_id")
        here = user_id if isinstance(user_id, str) and user_id else subject
        for key, value in obj.items():
            if value is None or is_encrypted(value):
                continue
            if key in detail_fields:
                out.append(((*path, key), here))
            elif isinstance(value, dict):
                walk(value, (*path, key), here)

    details = event.get("details")
    if isinstance(details, dict) and detail_fields:
        walk(details, ("details",), actor_id or target_id or fallback)
    if isinstance(details, dict) and details.get("field") in party_fields and target_id:
        # A drift record about a user's username (renamed around the sidecar) quotes the old and new value.
        out += [
            (("details", k), target_id)
            for k in ("expected", "live")
            if details.get(k) is not None and not is_encrypted(details[k])
        ]
    return out


def get_path(event: dict[str, Any], path: Path) -> Any:
    obj: Any = event
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


def set_path(event: dict[str, Any], path: Path, value: Any) -> None:
    """Replace one value (copying the objects on the way, so the caller's dicts stay as they were)."""
    key = path[0]
    if len(path) == 1:
        event[key] = value
        return
    child = dict(event[key])
    set_path(child, path[1:], value)
    event[key] = child


def delete_path(event: dict[str, Any], path: Path) -> None:
    key = path[0]
    if len(path) == 1:
        event.pop(key, None)
        return
    child = dict(event[key])
    delete_path(child, path[1:])
    event[key] = child


def encrypted_values(event: Any, path: Path = ()) -> list[tuple[Path, dict[str, Any]]]:
    """Every encrypted value in an event, with its path."""
    if is_encrypted(event):
        return [(path, event)]
    if isinstance(event, dict):
        return [found for k, v in event.items() for found in encrypted_values(v, (*path, k))]
    return []


@dataclass(frozen=True, slots=True)
class Opened:
    """A record's event with what could be decrypted in place, and what could not."""

    event: dict[str, Any]
    erased: tuple[Path, ...]  # paths whose subject's key was destroyed (still ciphertext in `event`)
    sealed: tuple[Path, ...]  # paths left encrypted: no key store given, or its key unknown there


def open_event(
    event: dict[str, Any], *, origin: str, key_of: Callable[[str], bytes | None] | None, erased: Callable[[str], bool]
) -> Opened:
    """Decrypt what `key_of` can; an erased subject's values stay ciphertext and are named in `erased`.

    Without a key store (`key_of` None) every encrypted value stays as it is (a pseudonym).
    A value that does not open with its subject's key is left sealed, never guessed.
    """
    found = encrypted_values(event)
    if not found:
        return Opened(event, (), ())
    out = dict(event)
    gone: list[Path] = []
    sealed: list[Path] = []
    for path, enc in found:
        if erased(enc["sub"]):
            gone.append(path)
            continue
        key = key_of(enc["sub"]) if key_of is not None else None
        if key is None:
            sealed.append(path)
            continue
        try:
            set_path(out, path, decrypt_value(key, enc, origin=origin, path=".".join(path)))
        except DecryptError:
            sealed.append(path)
    return Opened(out, tuple(gone), tuple(sealed))
