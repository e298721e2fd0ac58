"""Stand-alone proof bundles: a record or two checkpoints verified with only the trust anchor."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sidecar.audit.proofs import prove_consistency, prove_inclusion
from sidecar.cli import main
from sidecar.clock import FixedClock
from sidecar.core.proof import verify_bundle
from sidecar.core.trust import TrustAnchor
from sidecar.errors import IntegrityError
from sidecar.testing import build_ledger


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TrustAnchor]:
    import asyncio

    path = tmp_path_factory.mktemp("proofs")
    # a FixedClock stepping 1 ms and a 50 ms epoch: several key rotations inside the ledger
    trust = asyncio.run(build_ledger(path, events=120, epoch_s=0.05, clock=FixedClock(step_ns=1_000_000)))
    return path, trust


def test_inclusion_bundle_verifies_across_key_rotations(ledger: tuple[Path, TrustAnchor]) -> None:
    """A record's bundle verifies with only the trust anchor, following the key chain to the signing key."""
    path, trust = ledger
    bundle = prove_inclusion(path, 17)
    assert bundle["key_chain"], "the fixture should include key rotations"
    statement = verify_bundle(bundle, trust)
    assert statement.startswith("record 17 ")


@pytest.mark.parametrize("mutate", ["record", "proof", "checkpoint", "chain", "index"])
def test_inclusion_bundle_tampering_is_found(ledger: tuple[Path, TrustAnchor], mutate: str) -> None:
    """Changing the record, a proof hash, the checkpoint, the key chain or the index makes the bundle fail."""
    path, trust = ledger
    bundle = copy.deepcopy(prove_inclusion(path, 17))
    if mutate == "record":
        bundle["leaf"]["record"] = bundle["leaf"]["record"].replace('"succeeded"', '"failed"', 1)
    elif mutate == "proof":
        bundle["leaf"]["proof"][0] = bundle["leaf"]["proof"][1]
    elif mutate == "checkpoint":
        bundle["checkpoint"] = bundle["checkpoint"].replace("\n", "\n", 1)[:-10] + "AAAAAAAAA\n"
    elif mutate == "chain":
        bundle["key_chain"] = bundle["key_chain"][:-1]
    else:
        bundle["leaf"]["index"] = 18
    with pytest.raises(IntegrityError):
        verify_bundle(bundle, trust)


def test_consistency_bundle_verifies_and_detects_a_fork(ledger: tuple[Path, TrustAnchor]) -> None:
    """The newest checkpoint provably extends an older one; a proof for another size fails."""
    path, trust = ledger
    from sidecar.core.note import Checkpoint, split_note
    from sidecar.testing import checkpoint_notes, segment_paths

    sizes = [Checkpoint.parse_body(split_note(n)[0]).size for p in segment_paths(path) for n in checkpoint_notes(p)]
    old = sizes[len(sizes) // 3]
    bundle = prove_consistency(path, old)
    assert "extends" in verify_bundle(bundle, trust)
    bad = copy.deepcopy(bundle)
    bad["proof"] = bad["proof"][::-1] if len(bad["proof"]) > 1 else ["AAAA" + bad["proof"][0][4:]]
    with pytest.raises(IntegrityError):
        verify_bundle(bad, trust)


def test_cli_exports_and_verifies_a_bundle(ledger: tuple[Path, TrustAnchor], tmp_path: Path) -> None:
    """`sidecar proof inclusion` writes a bundle that `sidecar verify BUNDLE --trust` accepts (exit 0) and rejects once edited (exit 1)."""
    path, trust = ledger
    trust_file = tmp_path / "trust.json"
    trust_file.write_bytes(trust.encode())
    bundle_file = tmp_path / "r5.json"
    runner = CliRunner()
    out = runner.invoke(main, ["proof", "inclusion", str(path), "--seq", "5", "--out", str(bundle_file)])
    assert out.exit_code == 0, out.output
    ok = runner.invoke(main, ["verify", str(bundle_file), "--trust", str(trust_file)])
    assert ok.exit_code == 0 and "VALID PROOF" in ok.output
    data = json.loads(bundle_file.read_text())
    data["leaf"]["record"] = data["leaf"]["record"].replace('"seq":5', '"seq":6')
    bundle_file.write_text(json.dumps(data))
    bad = runner.invoke(main, ["verify", str(bundle_file), "--trust", str(trust_file)])
    assert bad.exit_code == 1 and "INVALID PROOF" in bad.output


def test_a_key_chain_entry_that_is_not_a_rotation_is_refused(ledger: tuple[Path, TrustAnchor]) -> None:
    """A proven record in the key chain that is not key.rotated (or sits at another index) fails the bundle."""
    path, trust = ledger
    bundle = copy.deepcopy(prove_inclusion(path, 17))
    bundle["key_chain"][0] = bundle["leaf"]
    with pytest.raises(IntegrityError, match=r"key chain entry at 17 is a [a-z.]+ record, not key.rotated"):
        verify_bundle(bundle, trust)


def test_a_key_chain_that_skips_an_epoch_is_refused(ledger: tuple[Path, TrustAnchor]) -> None:
    """Leaving out the first rotation makes the next key not follow the root key."""
    path, trust = ledger
    bundle = copy.deepcopy(prove_inclusion(path, 100))
    assert len(bundle["key_chain"]) >= 2, "the fixture should rotate at least twice before record 100"
    del bundle["key_chain"][0]
    with pytest.raises(IntegrityError, match=r"key chain skips from \S+#0 to \S+#2"):
        verify_bundle(bundle, trust)


def test_a_checkpoint_of_another_origin_is_refused(ledger: tuple[Path, TrustAnchor]) -> None:
    """A trust anchor for another origin does not accept the ledger's checkpoints."""
    path, trust = ledger
    other = TrustAnchor("elsewhere.example", trust.root_key)
    bundle = {**prove_inclusion(path, 3), "key_chain": []}
    with pytest.raises(IntegrityError, match=r"checkpoint is for origin .*, the trust anchor for 'elsewhere.example'"):
        verify_bundle(bundle, other)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "other/1"}, "not a proof bundle \\(format 'other/1'\\)"),
        ({"kind": "exclusion"}, "unknown bundle kind 'exclusion'"),
        ({"checkpoint": "no note"}, "malformed proof bundle: NoteError: note has no blank line"),
        ({"leaf": {"index": 1}}, "malformed proof bundle: KeyError: 'record'"),
    ],
)
def test_a_malformed_bundle_is_an_integrity_error_naming_the_cause(
    ledger: tuple[Path, TrustAnchor], change: dict[str, object], message: str
) -> None:
    """Another format, an unknown kind, a broken note or a missing member: IntegrityError saying what."""
    path, trust = ledger
    bundle = {**prove_inclusion(path, 3), **change}
    with pytest.raises(IntegrityError, match=message):
        verify_bundle(bundle, trust)


def test_a_consistency_bundle_going_backwards_is_refused(ledger: tuple[Path, TrustAnchor]) -> None:
    """A bundle whose old checkpoint is larger than its new one fails before any proof is checked."""
    path, trust = ledger
    from sidecar.core.note import checkpoint_of
    from sidecar.testing import checkpoint_notes, segment_paths

    notes = [n for p in segment_paths(path) for n in checkpoint_notes(p)]
    bundle = prove_consistency(path, checkpoint_of(notes[1]).size)
    bundle["old"], bundle["new"] = bundle["new"], bundle["old"]
    with pytest.raises(IntegrityError, match=r"old checkpoint size [0-9]+ is larger than the new one's"):
        verify_bundle(bundle, trust)
