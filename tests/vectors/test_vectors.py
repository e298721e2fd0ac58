"""The committed kc-ledger/2 test vectors: stable bytes, and what the reference verifier says of them."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest
import rfc8785
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.audit.verifier import load_trust, verify_directory
from sidecar.cli import main as cli
from sidecar.core import framing
from sidecar.core.canonical import CanonicalError, canonical_bytes
from sidecar.core.keys import PublicKey
from sidecar.core.merkle import root
from sidecar.core.note import verify_note
from tests.vectors import generate

VECTORS = Path(__file__).resolve().parent
NEGATIVE = sorted(p.name for p in (VECTORS / "negative").iterdir() if p.is_dir())

# Vectors on which the reference verifier raises instead of reporting; strict, so a fix shows up here.


def _expected(path: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((path / "expected.json").read_text())
    return result


def _external(path: Path) -> list[bytes]:
    cp = path / "checkpoint.txt"
    return [cp.read_bytes()] if cp.exists() else []


def test_regeneration_is_byte_identical() -> None:
    """Running the generator again reproduces every committed vector file byte for byte."""
    assert generate.differences() == []


def test_records_and_roots_match_the_segment_bytes() -> None:
    """Each listed record body is a record frame in its segment and hashes (and roots) as listed."""
    exp = _expected(VECTORS)
    bodies = []
    for seg in exp["segments"]:
        data = (VECTORS / seg["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == seg["sha256"]
        frames = list(framing.iter_frames(data))
        assert all(isinstance(f, framing.Frame) for f in frames)
        bodies += [
            (Path(seg["file"]).name, f.offset, f.body)
            for f in frames
            if isinstance(f, framing.Frame) and f.kind == framing.RECORD
        ]
    assert [(r["segment"], r["offset"], r["body"].encode()) for r in exp["records"]] == bodies
    leaves = [hashlib.sha256(b"\x00" + body).digest() for _seg, _off, body in bodies]
    assert [r["hash"] for r in exp["records"]] == [h.hex() for h in leaves]
    assert exp["roots"] == {str(n): root(leaves[:n]).hex() for n in range(len(leaves) + 1)}
    assert orjson.loads(bodies[0][2])["prev"] == exp["genesis"]


def test_checkpoint_notes_verify_with_the_listed_keys() -> None:
    """Every checkpoint and seal note in expected.json verifies under the key it names."""
    exp = _expected(VECTORS)
    keys = {k["name"]: PublicKey.from_json(k) for k in exp["test_keys_never_use"] if k["label"] != "attacker"}
    for cp in exp["checkpoints"]:
        verify_note(cp["note"].encode(), keys[cp["signer"]])
    assert (VECTORS / "checkpoint.txt").read_text() == exp["checkpoints"][-1]["note"]


def _spec_frames(data: bytes) -> list[tuple[bytes, bytes]]:
    """Frames read as docs/format.md §10 describes them, without sidecar code."""
    out, pos = [], 0
    while pos < len(data):
        kind, (length,) = data[pos : pos + 1], struct.unpack(">I", data[pos + 1 : pos + 5])
        body = data[pos + 5 : pos + 5 + length]
        (crc,) = struct.unpack(">I", data[pos + 5 + length : pos + 9 + length])
        assert zlib.crc32(data[pos : pos + 5 + length]) == crc
        out.append((kind, body))
        pos += 9 + length
    return out


def _spec_range(leaves: list[bytes], begin: int, end: int) -> list[bytes]:
    """The compact range [begin, end) by the greedy rule of docs/format.md §7."""
    out, i = [], begin
    while i < end:
        size = 1
        while (i == 0 or i % (size * 2) == 0) and i + size * 2 <= end:
            size *= 2
        out.append(root(leaves[i : i + size]))
        i += size
    return out


def test_format_document_rules_reproduce_the_vectors() -> None:
    """Genesis, key ids, frames, header ranges and note signatures follow from docs/format.md alone."""
    trust = json.loads((VECTORS / "trust.json").read_text())
    origin = trust["origin"]
    exp = _expected(VECTORS)
    assert hashlib.sha256(b"kc-ledger/1 genesis\n" + origin.encode()).hexdigest() == exp["genesis"]
    keys = {}
    for k in [trust["root_key"], *(k for k in exp["test_keys_never_use"] if k["label"] == "epoch 1")]:
        raw = base64.b64decode(k["public_key"])
        assert hashlib.sha256(k["name"].encode() + b"\n\x01" + raw).digest()[:4].hex() == k["key_id"]
        keys[k["name"]] = (bytes.fromhex(k["key_id"]), Ed25519PublicKey.from_public_bytes(raw))
    leaves = [bytes.fromhex(r["hash"]) for r in exp["records"]]
    for seg in exp["segments"]:
        frames = _spec_frames((VECTORS / seg["file"]).read_bytes())
        header = json.loads(frames[0][1])
        assert frames[0][0] == b"H" and header["range"] == [
            h.hex() for h in _spec_range(leaves, 0, header["first_seq"])
        ]
        for kind, note in frames[1:]:
            if kind in (b"C", b"S"):
                cut = note.rindex(b"\n\n")
                body, line = note[: cut + 1], note[cut + 2 :].decode()
                assert line.startswith("\u2014 ") and line.endswith("\n")
                name, blob = line[2:-1].split(" ")
                key_id, public = keys[name]
                sig = base64.b64decode(blob)
                assert sig[:4] == key_id
                public.verify(sig[4:], body)  # raises InvalidSignature if the rule were wrong
                size, root_b64 = body.decode().split("\n")[1:3]
                assert base64.b64decode(root_b64).hex() == exp["roots"][size]


def test_positive_vectors_verify_as_expected() -> None:
    """The reference verifier finds the positive ledger intact and reports the summary in expected.json."""
    exp = _expected(VECTORS)
    trust = load_trust(VECTORS / "trust.json")
    assert verify_directory(VECTORS, trust, workers=1).to_json() == exp["report"]
    report = verify_directory(VECTORS, trust, external=_external(VECTORS), workers=1)
    assert report.to_json() == exp["report_with_checkpoint"]


def test_cli_verify_prints_the_expected_report() -> None:
    """`sidecar verify --json` on the vectors exits 0 and prints the report in expected.json."""
    result = CliRunner().invoke(
        cli,
        [
            "verify",
            str(VECTORS),
            "--trust",
            str(VECTORS / "trust.json"),
            "--checkpoint",
            str(VECTORS / "checkpoint.txt"),
            "--workers",
            "1",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == _expected(VECTORS)["report_with_checkpoint"]


@pytest.mark.parametrize("name", NEGATIVE)
def test_negative_vector_gives_its_findings(name: str) -> None:
    """Each negative vector makes the reference verifier report the findings its expected.json names."""
    path = VECTORS / "negative" / name
    exp = _expected(path)
    report = verify_directory(path, load_trust(VECTORS / "trust.json"), external=_external(path), workers=1)
    got = [{"code": f.code, "segment": f.segment, "seq": f.seq} for f in report.findings]
    assert not report.ok
    assert got[0]["code"] == exp["code"]
    assert (got if exp["complete"] else got[: len(exp["findings"])]) == exp["findings"]


def test_split_view_is_invisible_without_the_external_checkpoint() -> None:
    """A rewrite re-signed with the current key verifies clean until the kept checkpoint is supplied."""
    path = VECTORS / "negative" / "split-view"
    assert verify_directory(path, load_trust(VECTORS / "trust.json"), workers=1).ok


# --------------------------------------------------------------------------- canonical bytes

_MAX = 2**53 - 1  # I-JSON (RFC 7493 §2.2): the integers a double holds exactly, both ends excluded
_keys = st.text(st.characters(max_codepoint=0x7F), max_size=6)
_strings = st.text(st.characters(codec="utf-8"), max_size=12) | st.sampled_from(
    ["", "\x00\x1f\x7f", '"\\/', "\u2028\u2029", "é\u0301", "\U0001f600", "\ufeff"]
)
_scalars = st.none() | st.booleans() | st.integers(-_MAX, _MAX) | _strings
_values = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=5), max_leaves=24
)


@settings(max_examples=400)
@given(_values)
def test_orjson_canonical_bytes_equal_rfc8785(value: Any) -> None:
    """For every value in the allowed subset, canonical_bytes gives exactly the rfc8785 package's bytes."""
    assert canonical_bytes(value) == rfc8785.dumps(value)


@pytest.mark.parametrize(
    "value",
    [
        1.0,
        0.5,
        {"a": [1, 2.5]},
        2**53 + 1,
        -(2**53) - 1,
        2**64,
        {"é": 1},
        {"a": {"ключ": None}},
        "\ud800",
        {1: "x"},
        b"bytes",
    ],
)
def test_canonical_bytes_rejects_values_outside_the_subset(value: Any) -> None:
    """Floats, integers beyond 2^53, non-ASCII or non-string keys, lone surrogates and bytes are refused."""
    with pytest.raises(CanonicalError):
        canonical_bytes(value)


def test_encrypted_fields_open_with_the_subject_key_and_only_for_their_field() -> None:
    """Record 9's encrypted values decrypt to the listed plaintexts with the test subject key, and fail elsewhere."""
    from sidecar.core.pii import DecryptError, decrypt_value

    exp = _expected(VECTORS)
    enc = exp["encrypted_fields"]
    event = orjson.loads(exp["records"][enc["seq"]]["body"])["event"]
    key = bytes.fromhex(enc["subject_key_hex_never_use"])
    for item in enc["fields"]:
        value: Any = event
        for part in item["path"].split("."):
            value = value[part]
        assert value["sub"] == enc["subject"]
        assert decrypt_value(key, value, origin=exp["origin"], path=item["path"]) == item["plaintext"]
        with pytest.raises(DecryptError):
            decrypt_value(key, value, origin=exp["origin"], path="target.username")
        with pytest.raises(DecryptError):
            decrypt_value(bytes(32), value, origin=exp["origin"], path=item["path"])
    assert orjson.loads(exp["records"][enc["seq"] + 1]["body"])["event"]["details"]["subject"] == enc["subject"]
