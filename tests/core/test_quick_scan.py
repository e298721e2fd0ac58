"""The quick scan (the default) and the thorough scan agree; findings always come from the thorough one."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sidecar.audit.verifier import verify_directory
from sidecar.testing import build_ledger, flip_byte, segment_paths


def test_quick_and_thorough_reports_agree_on_an_intact_ledger(tmp_path: Path) -> None:
    """Both modes report the same records, event types, time span, keys and root on an intact ledger."""
    trust = asyncio.run(build_ledger(tmp_path, events=300, segment_max_bytes=8192))
    quick = verify_directory(tmp_path, trust, workers=1)
    thorough = verify_directory(tmp_path, trust, workers=1, thorough=True)
    assert quick.ok and thorough.ok
    assert (quick.mode, thorough.mode) == ("quick", "thorough")
    q, t = quick.to_json(), thorough.to_json()
    q.pop("mode"), t.pop("mode")
    assert q == t


def test_a_change_found_by_the_quick_scan_is_reported_by_the_thorough_rescan(tmp_path: Path) -> None:
    """A damaged byte makes the default verification rescan thoroughly and name the exact frame."""
    trust = asyncio.run(build_ledger(tmp_path, events=300, segment_max_bytes=8192))
    seg = segment_paths(tmp_path)[1]
    flip_byte(seg, 300)
    report = verify_directory(tmp_path, trust, workers=1)
    assert not report.ok and report.mode == "thorough"
    assert report.findings[0].segment == seg.name
