"""Witness protocol bytes: vkeys, the auditor's witness list, add-checkpoint bodies and answers, cosignature counts."""

from __future__ import annotations

import base64
import struct

import orjson
import pytest

from sidecar.core.keys import ED25519_TYPE, Signer
from sidecar.core.note import COSIGNATURE_TYPE, Checkpoint, NoteSignature, cosignature_key_id, parse_note, sign_note
from sidecar.core.witness import (
    LIST_FORMAT,
    MAX_PROOF_LINES,
    Witness,
    WitnessError,
    WitnessView,
    add_checkpoint_body,
    cosignature_lines,
    count_cosignatures,
    log_vkey,
    parse_size_body,
    parse_vkey,
    parse_witness_list,
    vkey,
    witness_list_json,
)

_LOG = Signer.from_seed("ledger.example#0", bytes(32))
_W1 = Signer.from_seed("witness.example/w1", b"\x01" * 32)
_W2 = Signer.from_seed("witness.example/w2", b"\x02" * 32)
_NOTE = sign_note(Checkpoint("ledger.example", 5, bytes(32), 1).body(), _LOG)


def _witness(signer: Signer, url: str | None = None) -> Witness:
    return Witness(signer.name, signer.public.raw, url)


def _cosign(signer: Signer, note: bytes, stamp: int = 1700) -> bytes:
    body = parse_note(note).body
    sig = signer.sign(b"cosignature/v1\ntime %d\n" % stamp + body)
    kid = cosignature_key_id(signer.name, signer.public.raw)
    return NoteSignature(signer.name, kid, struct.pack(">Q", stamp) + sig).line()


def test_vkeys_round_trip_for_both_key_types() -> None:
    """A log vkey (type 0x01) and a witness vkey (type 0x04) parse back to their name and key."""
    assert parse_vkey(log_vkey(_LOG.public), ED25519_TYPE) == (_LOG.name, _LOG.public.raw)
    w = _witness(_W1)
    assert parse_vkey(w.vkey + "\n", COSIGNATURE_TYPE) == (_W1.name, _W1.public.raw)


_GOOD = vkey("w", COSIGNATURE_TYPE, b"\x07" * 32)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nopluses", "is not <name>\\+<id>\\+<key>"),
        ("+abcd+AAAA", "is not <name>\\+<id>\\+<key>"),
        ("w+00000000+!!!", "key is not base64"),
        ("w+00000000+" + base64.b64encode(COSIGNATURE_TYPE + b"\x07" * 31).decode(), "32-byte Ed25519 key"),
        (_GOOD.replace("+BA", "+AQ", 1), "expected type 0x04"),
        ("w+00000000+" + _GOOD.split("+", 2)[2], "key id does not match"),
    ],
)
def test_a_bad_vkey_is_refused_with_the_reason(text: str, message: str) -> None:
    """Missing parts, bad base64, a short key, another key type or a wrong key id: WitnessError."""
    with pytest.raises(WitnessError, match=message):
        parse_vkey(text, COSIGNATURE_TYPE)


def test_a_witness_list_round_trips() -> None:
    """witness_list_json writes what parse_witness_list reads, URLs without a trailing slash."""
    ws = [_witness(_W1, "https://w1.example"), _witness(_W2)]
    assert parse_witness_list(witness_list_json(ws)) == ws
    got = parse_witness_list(
        orjson.dumps(
            {"format": LIST_FORMAT, "witnesses": [{"vkey": ws[0].vkey, "name": _W1.name, "url": "http://w1.example/"}]}
        )
    )
    assert got == [_witness(_W1, "http://w1.example")]


def _list(*items: object, fmt: str = LIST_FORMAT) -> bytes:
    return orjson.dumps({"format": fmt, "witnesses": list(items)})


_V1 = _witness(_W1).vkey


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{", "witness list is not JSON"),
        (b"[]", "witness list must be"),
        (_list(fmt="other/1"), "witness list must be"),
        (orjson.dumps({"format": LIST_FORMAT, "witnesses": {}}), "witness list must be"),
        (_list("w"), "witnesses\\[0\\]: needs a vkey string"),
        (_list({"vkey": 1}), "witnesses\\[0\\]: needs a vkey string"),
        (_list({"vkey": _V1, "name": "other"}), "witnesses\\[0\\]: name 'other' differs from the vkey's"),
        (_list({"vkey": _V1, "url": "ftp://x"}), "witnesses\\[0\\]: url must be an http\\(s\\) URL"),
        (_list({"vkey": _V1, "url": 5}), "url must be"),
        (_list({"vkey": _V1}, {"vkey": _V1}), "names a witness twice"),
        (_list({"vkey": "bad"}), "is not <name>"),
    ],
)
def test_a_bad_witness_list_is_refused_naming_what_is_wrong(data: bytes, message: str) -> None:
    """Not JSON, another shape, an entry without a vkey, a wrong name or URL, a duplicate: WitnessError."""
    with pytest.raises(WitnessError, match=message):
        parse_witness_list(data)


def test_the_add_checkpoint_body_is_old_size_proof_blank_line_note() -> None:
    """The request body is `old N`, one base64 line per proof hash, an empty line, then the note."""
    body = add_checkpoint_body(3, [b"\x00" * 32, b"\x01" * 32], _NOTE)
    lines = body.split(b"\n")
    assert lines[0] == b"old 3" and lines[1] == base64.b64encode(b"\x00" * 32) and lines[3] == b""
    assert body.endswith(b"\n\n" + _NOTE)
    assert add_checkpoint_body(0, [], _NOTE) == b"old 0\n\n" + _NOTE
    with pytest.raises(ValueError, match=f"longer than {MAX_PROOF_LINES}"):
        add_checkpoint_body(0, [b"\x00" * 32] * (MAX_PROOF_LINES + 1), _NOTE)


@pytest.mark.parametrize(("body", "size"), [(b"0\n", 0), (b"7\n", 7), (b"1234\n", 1234)])
def test_a_409_answer_gives_the_witness_size(body: bytes, size: int) -> None:
    """A `text/x.tlog.size` body is a decimal and a newline."""
    assert parse_size_body(body) == size


@pytest.mark.parametrize("body", [b"7", b"07\n", b"-1\n", b"x\n", b"\n", b"\xff\n"])
def test_a_malformed_409_answer_is_refused(body: bytes) -> None:
    """No newline, a leading zero, a sign, letters, nothing or non-ASCII: WitnessError."""
    with pytest.raises(WitnessError, match="is not a tree size"):
        parse_size_body(body)


def test_only_valid_cosignatures_of_the_asked_witness_are_kept() -> None:
    """From a 200 answer, the lines that are this witness's valid cosignatures on the note are returned."""
    w1 = _witness(_W1)
    good = _cosign(_W1, _NOTE)
    assert cosignature_lines(good, w1, _NOTE) == good
    assert cosignature_lines(_cosign(_W2, _NOTE) + good, w1, _NOTE) == good
    with pytest.raises(WitnessError, match="no valid cosignature in the answer"):
        cosignature_lines(_cosign(_W2, _NOTE), w1, _NOTE)
    with pytest.raises(WitnessError, match="answer is not signature lines"):
        cosignature_lines(b"garbage\n", w1, _NOTE)


def test_cosignatures_are_counted_per_listed_witness() -> None:
    """count_cosignatures maps each listed witness with a valid cosignature to its timestamp."""
    note = parse_note(_NOTE + _cosign(_W1, _NOTE, 11) + _cosign(_W2, _NOTE, 22))
    assert count_cosignatures(note, [_witness(_W1), _witness(_W2)]) == {_W1.name: 11, _W2.name: 22}
    stranger = Signer.from_seed("witness.example/w3", b"\x03" * 32)
    assert count_cosignatures(note, [_witness(stranger)]) == {}


def test_a_witness_view_reports_what_the_witness_said() -> None:
    """The view's JSON holds name, size, outcome and detail; a witness not asked says so."""
    assert WitnessView("w").to_json() == {"name": "w", "size": None, "outcome": "not asked", "detail": ""}
    view = WitnessView("w", 9, "ahead", "cosigned 9, we have 5", [9])
    assert view.to_json() == {"name": "w", "size": 9, "outcome": "ahead", "detail": "cosigned 9, we have 5"}
