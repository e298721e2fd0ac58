"""The reference verifier at the core: segment scans and the linking phase, on the committed vectors.

The attack matrix (tests/attacks) drives the same functions through a real writer's ledger; here
they get only bytes, so every finding code a vector names is reached without any file or process.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sidecar.core.trust import TrustAnchor
from sidecar.core.verify import Report, external_sizes, scan_segment, verify_scans

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
NEGATIVE = sorted(p for p in (VECTORS / "negative").iterdir() if p.is_dir())
TRUST = TrustAnchor.decode((VECTORS / "trust.json").read_bytes())


def _verify(path: Path, trust: TrustAnchor = TRUST, *, external: bool = True) -> Report:
    notes = [(path / "checkpoint.txt").read_bytes()] if external and (path / "checkpoint.txt").exists() else []
    sizes = external_sizes(notes)
    scans = [scan_segment(p.name, p.read_bytes(), sizes) for p in sorted((path / "segments").glob("*.seg"))]
    return verify_scans(scans, trust, notes)


def _expected(path: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((path / "expected.json").read_text())
    return result


def test_the_positive_vectors_verify_with_the_expected_report() -> None:
    """The vectors verify clean, alone and with the kept checkpoint, with the reports expected.json names."""
    exp = _expected(VECTORS)
    assert _verify(VECTORS, external=False).to_json() == exp["report"]
    assert _verify(VECTORS).to_json() == exp["report_with_checkpoint"]


def test_a_kc_ledger_1_ledger_still_verifies() -> None:
    """The kc-ledger/1 vectors (records v1, no segment digests) verify clean with their own trust anchor."""
    trust = TrustAnchor.decode((VECTORS / "v1" / "trust.json").read_bytes())
    report = _verify(VECTORS / "v1", trust)
    assert report.ok, report.findings


@pytest.mark.parametrize("path", NEGATIVE, ids=[p.name for p in NEGATIVE])
def test_each_negative_vector_gives_its_findings(path: Path) -> None:
    """Each negative vector gives the finding codes, segments and sequence numbers its expected.json names."""
    exp = _expected(path)
    report = _verify(path)
    got = [{"code": f.code, "segment": f.segment, "seq": f.seq} for f in report.findings]
    assert not report.ok
    assert got[0]["code"] == exp["code"]
    assert (got if exp["complete"] else got[: len(exp["findings"])]) == exp["findings"]


def test_arbitrary_bytes_are_findings_not_errors() -> None:
    """A segment of garbage or with a wrong name gives findings, never a raise; no segments is an empty tree.

    (Refusing a source without segments is the audit layer's job: sidecar.audit.verifier.segment_files.)
    """
    empty = verify_scans([], TRUST)
    assert empty.ok and empty.size == 0
    garbage = scan_segment("00000000.seg", b"\x00garbage")
    assert garbage.findings
    assert not verify_scans([garbage], TRUST).ok
    data = (VECTORS / "segments" / "00000000.seg").read_bytes()
    assert not verify_scans([scan_segment("not-a-segment.seg", data)], TRUST).ok


def test_a_segment_without_a_usable_header_is_named() -> None:
    """An empty file, a first frame that is not a header, a malformed header, a header for another number."""
    from sidecar.core import framing

    data = (VECTORS / "segments" / "00000000.seg").read_bytes()
    frames = [f for f in framing.iter_frames(data) if isinstance(f, framing.Frame)]
    assert [f.code for f in scan_segment("00000000.seg", b"").findings] == ["segment-empty"]
    record_first = framing.encode_frame(framing.RECORD, frames[1].body)
    assert [f.code for f in scan_segment("00000000.seg", record_first).findings] == ["header-missing"]
    bad_header = framing.encode_frame(framing.HEADER, b"{}")
    assert [f.code for f in scan_segment("00000000.seg", bad_header).findings] == ["header-malformed"]
    assert "header-mismatch" in [f.code for f in scan_segment("00000007.seg", data).findings]


def test_a_finding_reads_as_where_what_and_code() -> None:
    """str(finding) names segment and seq when known, then the message and the code; to_json keeps all four."""
    report = _verify(VECTORS / "negative" / "record-edited")
    finding = report.findings[0]
    assert str(finding).startswith(f"segment {finding.segment} seq {finding.seq}: ")
    assert str(finding).endswith(f"{finding.message} [{finding.code}]")
    assert report.to_json()["findings"][0] == {
        "code": finding.code,
        "message": finding.message,
        "segment": finding.segment,
        "seq": finding.seq,
    }
    from sidecar.core.verify import Finding

    assert str(Finding("x", "no place")) == "no place [x]"
