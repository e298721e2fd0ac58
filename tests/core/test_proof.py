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
