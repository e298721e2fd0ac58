"""`sidecar verify` run as a real process: exit codes, the summary, findings, and unusable input.

The contract (sidecar/cli.py): exit 0 intact, 1 findings, 2 unusable input; errors are one line on
stderr starting with "error: "; never a Python traceback. Each test runs the installed entry point
(`.venv/bin/sidecar`) in a subprocess, so the process pool, click and rich are exercised as in use.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from sidecar.clock import FixedClock
from sidecar.core import framing
from sidecar.core.record import record_hash
from sidecar.core.trust import TrustAnchor
from sidecar.testing import (
    append_events,
    build_ledger,
    copy_ledger,
    frame_offsets,
    latest_checkpoint,
    leaf_hashes,
    read_frames,
    rewrite_record,
    segment_paths,
    synthetic_event,
    write_bytes,
    write_frames,
)

ORIGIN = "test.example/ledger"
SIDECAR = Path(sys.executable).with_name("sidecar")
MIDDLE_SEGMENT_CRASH = (
    "verify.py verify_scans: a damaged or missing segment before the newest one makes _root_at()/prefix.merge() "
    "raise ValueError (CompactRange must start at prefix.end); the CLI does not catch it and prints a traceback"
)


@dataclass
class Run:
    code: int
    out: str
    err: str


def sidecar_verify(*args: str | Path) -> Run:
    env = {k: v for k, v in os.environ.items() if k != "SIDECAR_DEBUG"}
    env["COLUMNS"] = "200"
    proc = subprocess.run(
        [str(SIDECAR), "verify", *map(str, args)], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return Run(proc.returncode, proc.stdout, proc.stderr)


def assert_unusable(run: Run, message: str) -> None:
    """Exit 2, nothing on stdout, and exactly one stderr line: 'error: ' + the message (a prefix of it)."""
    assert run.code == 2, run
    assert run.out == ""
    lines = run.err.splitlines()
    assert len(lines) == 1, run.err
    assert lines[0].startswith(f"error: {message}"), lines[0]


@dataclass
class Ledger:
    dir: Path
    trust_file: Path
    trust: TrustAnchor


@pytest.fixture
async def ledger(tmp_path: Path) -> Ledger:
    """A fresh 3-segment ledger (0 and 1 sealed, 2 the newest with several checkpointed batches)."""
    clock = FixedClock()
    d = tmp_path / "ledger"
    trust = await build_ledger(d, events=32, clock=clock)
    await append_events(d, [synthetic_event(i) for i in range(32, 56)], clock=clock, segment_max_bytes=1 << 20)
    assert len(segment_paths(d)) == 3
    return Ledger(d, d / "trust.json", trust)


def bundle_with(tmp_path: Path, data: bytes, name: str = "00000000.seg") -> Path:
    """A pulled-bundle folder holding just one segment file with `data`."""
    folder = tmp_path / "bundle"
    folder.mkdir()
    (folder / name).write_bytes(data)
    return folder


# ---------------------------------------------------------------------------------------------- intact
def test_intact_ledger_exits_0_with_a_summary(ledger: Ledger) -> None:
    """An intact ledger exits 0 and the summary lists segments, records, keys and the verdict."""
    records = len(leaf_hashes(ledger.dir))
    run = sidecar_verify(ledger.dir, "--trust", ledger.trust_file)
    assert run.code == 0, run
    assert run.err == ""
    lines = run.out.splitlines()
    assert lines[0] == f"ledger: {ledger.dir}"
    assert lines[1].startswith(f"checked: 3 segments, {records} records, ")
    assert lines[1].endswith(" signed checkpoints/seals, 0 external checkpoints")
    assert f"keys: {ORIGIN}#0" in lines
    assert any(line.startswith(f"tree: size {records}, root ") for line in lines)
    assert lines[-1].startswith("verdict: INTACT")


def test_intact_ledger_json_says_intact(ledger: Ledger) -> None:
    """With --json an intact ledger prints one JSON object with verdict intact and the counts."""
    run = sidecar_verify(ledger.dir, "--trust", ledger.trust_file, "--json", "--workers", "1")
    assert run.code == 0, run
    report = orjson.loads(run.out)
    assert report["verdict"] == "intact"
    assert (report["segments"], report["records"], report["tree_size"]) == (
        3,
        len(leaf_hashes(ledger.dir)),
        report["records"],
    )
    assert report["keys"] == [f"{ORIGIN}#0"] and report["findings"] == []
    assert report["event_types"]["role.granted"] > 0


def test_segments_folder_is_accepted_as_a_bundle(ledger: Ledger) -> None:
    """The segments/ folder itself (a pulled bundle of *.seg files) verifies like the data directory."""
    run = sidecar_verify(ledger.dir / "segments", "--trust", ledger.trust_file)
    assert run.code == 0, run


# ---------------------------------------------------------------------------------------------- findings
def _tamper(ledger: Ledger) -> tuple[str, int, str]:
    """Change one username in the newest segment (CRC fixed); returns (segment, seq, message) expected."""
    path = segment_paths(ledger.dir)[-1]
    frames = read_frames(path)
    i = next(
        j
        for j in range(2, len(frames) - 1)
        if frames[j - 1][0] == frames[j][0] == frames[j + 1][0] == framing.RECORD and b'"username"' in frames[j][1]
    )
    old, new = rewrite_record(path, i, lambda b: b.replace(b'"username":"', b'"username":"X', 1))
    seq = orjson.loads(old)["seq"]
    message = (
        f"previous hash is {record_hash(old).hex()[:16]}..., the record before it hashes to "
        f"{record_hash(new).hex()[:16]}..."
    )
    return path.name, seq + 1, message


def test_tampered_ledger_exits_1_naming_segment_and_seq(ledger: Ledger) -> None:
    """A tampered ledger exits 1 and prints the finding with its segment, seq, message and code."""
    segment, seq, message = _tamper(ledger)
    run = sidecar_verify(ledger.dir, "--trust", ledger.trust_file)
    assert run.code == 1, run
    assert "verdict: TAMPERED OR INCOMPLETE (1 findings)" in run.out
    assert f"  - segment {segment} seq {seq}: {message} [chain-broken]" in run.out.splitlines()


def test_tampered_ledger_json_lists_the_finding(ledger: Ledger) -> None:
    """With --json a tampered ledger exits 1 and lists the finding with code, segment, seq and message."""
    segment, seq, message = _tamper(ledger)
    run = sidecar_verify(ledger.dir, "--trust", ledger.trust_file, "--json")
    assert run.code == 1, run
    report = orjson.loads(run.out)
    assert report["verdict"] == "tampered-or-incomplete"
    assert report["findings"] == [{"code": "chain-broken", "segment": segment, "seq": seq, "message": message}]


def test_external_checkpoint_finds_a_cut_tail(ledger: Ledger, tmp_path: Path) -> None:
    """A checkpoint file kept from before a tail cut makes verify exit 1 with tail-cut."""
    witness = tmp_path / "checkpoint.txt"
    witness.write_bytes(latest_checkpoint(ledger.dir))
    path = segment_paths(ledger.dir)[-1]
    frames = read_frames(path)
    last_cp = max(j for j, (k, _) in enumerate(frames[:-3]) if k == framing.CHECKPOINT)
    write_frames(path, frames[: last_cp + 1])
    assert sidecar_verify(ledger.dir, "--trust", ledger.trust_file).code == 0
    run = sidecar_verify(ledger.dir, "--trust", ledger.trust_file, "--checkpoint", witness)
    assert run.code == 1, run
    assert "1 external checkpoints" in run.out
    assert "the tail was cut or the ledger rolled back [tail-cut]" in run.out


def test_truncated_newest_segment_is_a_torn_tail_finding(ledger: Ledger) -> None:
    """The newest segment cut mid-frame exits 1 with frame-damaged (a torn tail), no traceback."""
    path = segment_paths(ledger.dir)[-1]
    cut = frame_offsets(path)[-2] + 7
    write_bytes(path, path.read_bytes()[:cut])
    run = sidecar_verify(ledger.dir, "--trust", ledger.trust_file)
    assert run.code == 1, run
    assert f"segment {path.name} seq " in run.out and "(a torn tail) [frame-damaged]" in run.out


def test_directory_named_like_a_segment_is_unreadable_finding(ledger: Ledger) -> None:
    """A directory named 00000003.seg among the segments exits 1 with segment-unreadable, no traceback."""
    (ledger.dir / "segments" / "00000003.seg").mkdir()
    run = sidecar_verify(ledger.dir, "--trust", ledger.trust_file)
    assert run.code == 1, run
    assert "segment 00000003.seg: cannot read: Is a directory [segment-unreadable]" in run.out


def test_truncated_middle_segment_is_a_finding_not_a_traceback(ledger: Ledger) -> None:
    """A sealed middle segment cut mid-frame exits 1 with frame-damaged, not a traceback."""
    path = segment_paths(ledger.dir)[1]
    write_bytes(path, path.read_bytes()[: frame_offsets(path)[3] + 7])
    run = sidecar_verify(ledger.dir, "--trust", ledger.trust_file)
    assert run.code == 1, run
    assert f"segment {path.name} seq " in run.out and "[frame-damaged]" in run.out


# ---------------------------------------------------------------------------------------------- bad segment files
def _garbage(size: int) -> bytes:
    return random.Random(size).randbytes(size)


@pytest.mark.parametrize(
    ("make", "code", "detail"),
    [
        pytest.param(lambda: b"", "segment-empty", "segment file is empty", id="empty"),
        pytest.param(
            lambda: bytes(4096), "header-missing", "no segment header: 4096 zero bytes at the end", id="zero-filled"
        ),
        pytest.param(
            lambda: b"H\x00\x00", "header-missing", "no segment header: 3 stray bytes at the end", id="three-bytes"
        ),
        pytest.param(lambda: _garbage(4096), "header-missing", "no segment header: ", id="garbage"),
        pytest.param(
            lambda: _garbage(20 * 1024 * 1024), "header-missing", "no segment header: ", id="oversized-garbage-20MB"
        ),
        pytest.param(
            lambda: b"H\x7f\xff\xff\xff" + bytes(64),
            "header-missing",
            f"no segment header: frame length {0x7FFFFFFF} exceeds the maximum {framing.MAX_FRAME}",
            id="huge-length",
        ),
    ],
)
def test_bad_segment_file_is_a_finding(
    tmp_path: Path, ledger: Ledger, make: Callable[[], bytes], code: str, detail: str
) -> None:
    """A bundle whose only segment file is empty, zero-filled or garbage exits 1 with one clear finding."""
    folder = bundle_with(tmp_path, make())
    run = sidecar_verify(folder, "--trust", ledger.trust_file)
    assert run.code == 1, run
    assert run.err == ""
    findings = [line for line in run.out.splitlines() if line.startswith("  - ")]
    assert len(findings) == 1, run.out
    assert findings[0].startswith(f"  - segment 00000000.seg: {detail}")
    assert findings[0].endswith(f"[{code}]")


def test_truncated_segment_alone_is_a_torn_tail_finding(tmp_path: Path, ledger: Ledger) -> None:
    """A bundle holding only a first segment cut mid-frame exits 1 with frame-damaged (a torn tail)."""
    seg0 = segment_paths(ledger.dir)[0]
    cut = frame_offsets(seg0)[4] + 11
    folder = bundle_with(tmp_path, seg0.read_bytes()[:cut])
    run = sidecar_verify(folder, "--trust", ledger.trust_file, "--json")
    assert run.code == 1, run
    report = orjson.loads(run.out)
    assert [(f["code"], f["segment"]) for f in report["findings"]] == [("frame-damaged", "00000000.seg")]
    assert report["findings"][0]["message"] == (
        f"offset {frame_offsets(seg0)[4]}: frame of "
        f"{len(read_frames(seg0)[4][1])} bytes runs past the end of the "
        "data (a torn tail)"
    )


def test_badly_named_segment_file_is_a_finding(tmp_path: Path, ledger: Ledger) -> None:
    """A *.seg file whose name is not 8 digits exits 1 with segment-name."""
    folder = bundle_with(tmp_path, segment_paths(ledger.dir)[0].read_bytes(), name="first.seg")
    run = sidecar_verify(folder, "--trust", ledger.trust_file)
    assert run.code == 1, run
    assert "segment first.seg: file name is not <8 digits>.seg [segment-name]" in run.out


def test_trust_anchor_of_another_ledger_is_a_finding(tmp_path: Path, ledger: Ledger) -> None:
    """A well-formed trust file for another origin exits 1 with origin-mismatch for every segment."""
    other = TrustAnchor("other.example/ledger", ledger.trust.root_key)
    trust_file = tmp_path / "other-trust.json"
    trust_file.write_bytes(other.encode())
    run = sidecar_verify(ledger.dir, "--trust", trust_file, "--json")
    assert run.code == 1, run
    assert {f["code"] for f in orjson.loads(run.out)["findings"]} == {"origin-mismatch"}


# ---------------------------------------------------------------------------------------------- unusable input (exit 2)
def test_missing_directory_is_unusable(tmp_path: Path, ledger: Ledger) -> None:
    """A source that does not exist exits 2 with one error line."""
    missing = tmp_path / "nowhere"
    assert_unusable(sidecar_verify(missing, "--trust", ledger.trust_file), f"{missing} does not exist")


def test_empty_directory_is_unusable(tmp_path: Path, ledger: Ledger) -> None:
    """A directory with no *.seg files exits 2 with one error line."""
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_unusable(sidecar_verify(empty, "--trust", ledger.trust_file), f"no segment files (*.seg) in {empty}")


def test_source_that_is_a_segment_file_is_unusable(ledger: Ledger) -> None:
    """A source that is one segment file rather than a folder exits 2 with one error line."""
    seg = segment_paths(ledger.dir)[0]
    assert_unusable(sidecar_verify(seg, "--trust", ledger.trust_file), f"{seg} is not a directory")


def test_unusable_input_with_json_prints_a_json_verdict(tmp_path: Path, ledger: Ledger) -> None:
    """With --json, unusable input exits 2 and prints verdict unusable-input with the error."""
    missing = tmp_path / "nowhere"
    run = sidecar_verify(missing, "--trust", ledger.trust_file, "--json")
    assert run.code == 2, run
    assert orjson.loads(run.out) == {"verdict": "unusable-input", "error": f"{missing} does not exist"}


def test_missing_trust_file_is_unusable(tmp_path: Path, ledger: Ledger) -> None:
    """A trust file that does not exist exits 2 with one error line."""
    missing = tmp_path / "trust.json"
    assert_unusable(
        sidecar_verify(ledger.dir, "--trust", missing), f"cannot read trust file {missing}: No such file or directory"
    )


def test_trust_path_that_is_a_directory_is_unusable(tmp_path: Path, ledger: Ledger) -> None:
    """A trust path that is a directory exits 2 with one error line."""
    assert_unusable(
        sidecar_verify(ledger.dir, "--trust", tmp_path), f"cannot read trust file {tmp_path}: Is a directory"
    )


def _trust_json(**change: object) -> bytes:
    obj: dict[str, object] = {
        "format": "kc-ledger-trust/1",
        "origin": ORIGIN,
        "root_key": {"name": f"{ORIGIN}#0", "public_key": "A" * 43 + "="},
    }
    obj.update(change)
    return orjson.dumps(obj)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x00\xff garbage \x80", id="binary"),
        pytest.param(b"{not json", id="broken-json"),
        pytest.param(b"[]", id="array"),
        pytest.param(b"null", id="null"),
        pytest.param(_trust_json(format="kc-ledger-trust/9"), id="wrong-format"),
        pytest.param(_trust_json(root_key="ed25519:abc"), id="key-is-a-string"),
        pytest.param(_trust_json(root_key={"name": "x#0", "public_key": "!!!"}), id="key-not-base64"),
        pytest.param(_trust_json(root_key={"name": "x#0", "public_key": "AAAA"}), id="key-too-short"),
        pytest.param(
            _trust_json(root_key={"name": "x#0", "public_key": "A" * 43 + "=", "key_id": "00000000"}),
            id="key-id-mismatch",
        ),
        pytest.param(_trust_json(origin=None, root_key=None), id="nulls"),
    ],
)
def test_garbled_trust_file_is_unusable(tmp_path: Path, ledger: Ledger, data: bytes) -> None:
    """A garbled trust file exits 2 with one line naming the file, never a traceback."""
    trust_file = tmp_path / "garbled-trust.json"
    trust_file.write_bytes(data)
    run = sidecar_verify(ledger.dir, "--trust", trust_file)
    assert_unusable(run, f"{trust_file}: trust file is unusable: ")


def test_missing_checkpoint_file_is_unusable(tmp_path: Path, ledger: Ledger) -> None:
    """A --checkpoint file that does not exist exits 2 with one error line."""
    missing = tmp_path / "cp.txt"
    assert_unusable(
        sidecar_verify(ledger.dir, "--trust", ledger.trust_file, "--checkpoint", missing),
        f"cannot read checkpoint {missing}: No such file or directory",
    )


def test_garbled_checkpoint_file_is_a_finding(tmp_path: Path, ledger: Ledger) -> None:
    """A --checkpoint file that is not a signed note exits 1 with external-malformed."""
    cp = tmp_path / "cp.txt"
    cp.write_bytes(b"definitely not a checkpoint\n")
    run = sidecar_verify(ledger.dir, "--trust", ledger.trust_file, "--checkpoint", cp)
    assert run.code == 1, run
    assert (
        "external checkpoint does not parse: note has no blank line before its signatures [external-malformed]"
        in run.out
    )


def test_verify_does_not_change_the_ledger(tmp_path: Path, ledger: Ledger) -> None:
    """Verifying reads only: every segment file is byte-identical and keeps its mode afterwards."""
    before = copy_ledger(ledger.dir, tmp_path / "before")
    assert sidecar_verify(ledger.dir, "--trust", ledger.trust_file).code == 0
    for a, b in zip(segment_paths(before), segment_paths(ledger.dir), strict=True):
        assert a.read_bytes() == b.read_bytes() and a.stat().st_mode == b.stat().st_mode
