"""Encrypted field values: they open only with their key, origin, subject and field; which values are personal."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.core import pii
from sidecar.core.pii import DecryptError, decrypt_value, encrypt_value, identifying_values, is_encrypted, open_event

_KEY, _OTHER = b"\x01" * 32, b"\x02" * 32
_NONCE = b"\x03" * 12


def _enc(value: Any, subject: str = "u1", path: str = "actor.username", key: bytes = _KEY) -> dict[str, Any]:
    return encrypt_value(key, _NONCE, origin="o", subject=subject, path=path, value=value)


def test_a_value_round_trips_under_its_key_origin_subject_and_field() -> None:
    """decrypt(encrypt(v)) == v; the object names its subject and carries nonce and ciphertext."""
    enc = _enc({"name": "alice", "n": [1, 2]})
    assert is_encrypted(enc) and enc["sub"] == "u1" and enc["kc-enc"] == 1
    assert decrypt_value(_KEY, enc, origin="o", path="actor.username") == {"name": "alice", "n": [1, 2]}


@pytest.mark.parametrize(
    ("key", "origin", "path", "change"),
    [
        (_OTHER, "o", "actor.username", {}),
        (_KEY, "elsewhere", "actor.username", {}),
        (_KEY, "o", "target.username", {}),
        (_KEY, "o", "actor.username", {"sub": "u2"}),
        (_KEY, "o", "actor.username", {"n": "!!"}),
        (_KEY, "o", "actor.username", {"ct": "AAAA"}),
    ],
)
def test_a_value_does_not_open_elsewhere(key: bytes, origin: str, path: str, change: dict[str, str]) -> None:
    """Another key, ledger, field or subject, or damaged bytes: DecryptError, never a guess."""
    with pytest.raises(DecryptError, match="does not open with this subject's key"):
        decrypt_value(key, {**_enc("alice"), **change}, origin=origin, path=path)


def test_only_an_encrypted_value_is_decrypted() -> None:
    """A plain value, or an object without the mark, is refused as not encrypted."""
    for value in ("alice", {"sub": "u1"}, {"kc-enc": 2, "sub": "u1"}, {"kc-enc": 1, "sub": 5}):
        assert not is_encrypted(value)
        with pytest.raises(DecryptError, match="not an encrypted value"):
            decrypt_value(_KEY, value, origin="o", path="p")  # type: ignore[arg-type]


def test_a_bad_key_or_nonce_length_is_refused() -> None:
    """Keys are 32 bytes and nonces 12."""
    with pytest.raises(ValueError, match="32 bytes and a nonce 12"):
        encrypt_value(b"short", _NONCE, origin="o", subject="s", path="p", value="v")
    with pytest.raises(ValueError, match="32 bytes and a nonce 12"):
        encrypt_value(_KEY, b"short", origin="o", subject="s", path="p", value="v")


_FIELDS = {"party_fields": ("username", "name"), "event_fields": ("ip",), "detail_fields": ("email", "ip")}


def test_identifying_values_name_their_subject() -> None:
    """User parties' names go under their own id, the IP under the actor's, details under the nearest user id."""
    event = {
        "actor": {"id": "a1", "username": "admin", "kind": "user"},
        "ip": "192.0.2.1",
        "target": {"id": "t1", "username": "bob", "name": "Bob"},
        "details": {
            "email": "x@example.org",
            "event": {"user_id": "k9", "ip": "198.51.100.2", "n": 1},
            "plain": "kept",
        },
    }
    got = identifying_values(event, fallback="anon", **_FIELDS)
    assert sorted(got) == sorted(
        [
            (("actor", "username"), "a1"),
            (("target", "username"), "t1"),
            (("target", "name"), "t1"),
            (("ip",), "a1"),
            (("details", "email"), "a1"),
            (("details", "event", "ip"), "k9"),
        ]
    )


def test_values_no_user_backs_go_under_the_fallback_and_non_users_are_skipped() -> None:
    """A client actor is not personal data; a user without an id, and its IP, go under the fallback."""
    event = {
        "actor": {"client": "svc", "kind": "client", "username": "x"},
        "target": {"username": "typed"},
        "ip": "192.0.2.9",
        "details": {"email": "e@example.org", "already": _enc("v"), "z": None},
    }
    got = identifying_values(event, fallback="anon", **_FIELDS)
    assert sorted(got) == sorted([(("target", "username"), "anon"), (("ip",), "anon"), (("details", "email"), "anon")])
    assert (
        identifying_values(
            {"details": {"email": "e"}}, fallback="f", party_fields=(), event_fields=(), detail_fields=()
        )
        == []
    )


def test_a_drift_record_about_a_username_encrypts_both_values_under_the_target() -> None:
    """details.expected and details.live of a username drift go under the target user's key."""
    event = {"target": {"id": "t1", "kind": "user"}, "details": {"field": "username", "expected": "old", "live": "new"}}
    got = identifying_values(event, fallback="f", **_FIELDS)
    assert sorted(got) == [(("details", "expected"), "t1"), (("details", "live"), "t1")]


def test_paths_are_read_set_and_deleted_without_changing_the_callers_objects() -> None:
    """set_path and delete_path copy the objects on their way; get_path reads through missing parts as None."""
    inner = {"b": 1}
    event: dict[str, Any] = {"a": inner}
    pii.set_path(event, ("a", "b"), 2)
    assert event == {"a": {"b": 2}} and inner == {"b": 1}
    pii.set_path(event, ("top",), 3)
    assert pii.get_path(event, ("a", "b")) == 2 and pii.get_path(event, ("a", "x", "y")) is None
    pii.delete_path(event, ("a", "b"))
    pii.delete_path(event, ("top",))
    assert event == {"a": {}}


def test_open_event_decrypts_what_it_can_and_names_the_rest() -> None:
    """Known keys decrypt in place; an erased subject's value stays and is named erased; the rest stays sealed."""
    event: dict[str, Any] = {
        "actor": {"id": "u1", "username": _enc("alice")},
        "target": {"id": "u2", "username": _enc("bob", subject="u2", path="target.username")},
        "details": {
            "email": _enc("c@x", subject="u3", path="details.email"),
            "bad": _enc("d", subject="u1", path="elsewhere"),
        },
    }
    keys = {"u1": _KEY}
    opened = open_event(event, origin="o", key_of=keys.get, erased=lambda s: s == "u2")
    assert opened.event["actor"]["username"] == "alice"
    assert opened.erased == (("target", "username"),)
    assert sorted(opened.sealed) == [("details", "bad"), ("details", "email")]
    assert event["actor"]["username"] != "alice"  # the caller's event is unchanged
    plain = {"actor": {"id": "u1"}}
    assert open_event(plain, origin="o", key_of=None, erased=lambda s: False) == pii.Opened(plain, (), ())
    none = open_event(event, origin="o", key_of=None, erased=lambda s: False)
    assert len(none.sealed) == 4 and none.erased == ()
