"""Verified reads: timeline and export refuse a damaged ledger, --unverified marks lines, index lookups and --follow are checked."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from sidecar.cli import main
from sidecar.core import framing
from sidecar.core.events import EventType, IdentityEvent, Outcome, Party
from sidecar.ledger.index import LedgerIndex
from sidecar.ledger.writer import Ledger, LedgerConfig
from tests.export.sample import write_ledger


def _run(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, list(args))
    return res.exit_code, res.stdout, res.stderr


def _index(path: Path) -> None:
    async def run() -> None:
        index = LedgerIndex(path / "index.sqlite")
        await index.open()
        await index.rebuild(path)
        await index.close()

    asyncio.run(run())


def _flip_in_record(path: Path, needle: bytes) -> Path:
    """Change one byte inside the first record containing `needle`, keeping the frame CRC valid."""
    for seg in sorted((path / "segments").glob("*.seg")):
        data = bytearray(seg.read_bytes())
        for frame in framing.iter_frames(bytes(data)):
            if isinstance(frame, framing.Frame) and frame.kind == framing.RECORD and needle in frame.body:
                body = frame.body.replace(needle, needle[:-1] + bytes([needle[-1] ^ 1]), 1)
                data[frame.offset : frame.offset + framing.OVERHEAD + len(body)] = framing.encode_frame(
                    framing.RECORD, body
                )
                os.chmod(seg, 0o644)
                seg.write_bytes(bytes(data))
                return seg
    raise AssertionError(f"no record with {needle!r}")


@pytest.fixture()
def ledger(tmp_path: Path) -> Path:
    path = tmp_path / "ledger"
    write_ledger(path)
    return path


def test_damaged_ledger_is_refused(ledger: Path, tmp_path: Path) -> None:
    """A changed record makes timeline and export exit 1 with the finding, and no export file is written."""
    trust = str(ledger / "trust.json")
    assert _run("timeline", str(ledger), "--trust", trust)[0] == 0
    _flip_in_record(ledger, b"mallory")
    code, out, err = _run("timeline", str(ledger), "--trust", trust)
    assert code == 1 and out == "" and "did not verify" in err and "root-mismatch" in err, err
    dest = tmp_path / "out.ocsf"
    code, out, err = _run("export", str(ledger), "--format", "ocsf", "--trust", trust, "--out", str(dest))
    assert code == 1 and not dest.exists() and not list(tmp_path.glob("out.ocsf*"))
    code, out, _ = _run("export", str(ledger), "--trust", trust)
    assert code == 1 and out == ""


def test_unverified_marks_every_line(ledger: Path) -> None:
    """--unverified reads a damaged ledger for forensics and marks each text line and JSON record as unverified."""
    _flip_in_record(ledger, b"mallory")
    code, out, _ = _run("timeline", str(ledger), "--unverified")
    lines = out.strip().splitlines()
    assert code == 0 and lines and all(line.startswith("UNVERIFIED ") for line in lines)
    code, out, _ = _run("timeline", str(ledger), "--unverified", "--json")
    assert all(json.loads(x)["unverified"] is True for x in out.strip().splitlines())
    code, out, _ = _run("export", str(ledger), "--unverified", "--format", "ocsf")
    assert all("unverified" in json.loads(x)["metadata"]["labels"] for x in out.strip().splitlines())
    assert _run("timeline", str(ledger))[0] == 2  # neither --trust nor --unverified: unusable


def test_index_lookup_checks_each_record(ledger: Path) -> None:
    """timeline --actor via the index gives the full scan's records, each with its checkpoint; a changed record is refused."""
    _index(ledger)
    trust = str(ledger / "trust.json")
    code, out, _ = _run("timeline", str(ledger), "--trust", trust, "--actor", "alice", "--json")
    via_index = [json.loads(x) for x in out.strip().splitlines()]
    code2, out2, _ = _run("timeline", str(ledger), "--trust", trust, "--actor", "alice", "--json", "--full-scan")
    full = [json.loads(x) for x in out2.strip().splitlines()]
    assert code == code2 == 0 and via_index
    assert [r["seq"] for r in via_index] == [r["seq"] for r in full]
    for rec in via_index:
        assert rec["verified"]["checkpoint_size"] > rec["seq"] and len(rec["verified"]["root"]) == 64
    _flip_in_record(ledger, b"token.refreshed")  # alice's token.refreshed; the index still points at it
    code, out, err = _run("timeline", str(ledger), "--trust", trust, "--actor", "alice")
    assert code == 1 and ("root-mismatch" in err or "segment-digest" in err), err  # kc-ledger/2: digest first


def test_follow_resumes_without_repeats(tmp_path: Path) -> None:
    """export --follow streams verified records once, resumes from its cursor, and keeps an intent with its outcome."""
    path = tmp_path / "ledger"
    write_ledger(path)
    trust, cursor, dest = str(path / "trust.json"), tmp_path / "cursor.json", tmp_path / "out.jsonl"
    base = [
        "export",
        str(path),
        "--trust",
        trust,
        "--follow",
        "--cursor",
        str(cursor),
        "--max-polls",
        "1",
        "--interval",
        "0",
        "--format",
        "ocsf",
        "--out",
        str(dest),
    ]
    assert _run(*base)[0] == 0
    first = [json.loads(x) for x in dest.read_text().splitlines()]
    assert first and json.loads(cursor.read_text())["next_seq"] > 0

    async def more() -> None:
        led = await Ledger.open(path, config=LedgerConfig(fsync=False))
        intent = await led.append(
            IdentityEvent(
                EventType.ROLE_GRANTED,
                Outcome.PENDING,
                realm="ledger-test",
                actor=Party(id="u-admin", username="admin"),
                target=Party(id="u-bob", username="bob", kind="user"),
                details={"roles": ["viewer"], "phase": "intent"},
            )
        )
        await led.close()
        cursor_mid = json.loads(cursor.read_text())
        assert cursor_mid["pending"] == []
        led = await Ledger.open(path, config=LedgerConfig(fsync=False))
        await led.append(
            IdentityEvent(
                EventType.ROLE_GRANTED,
                Outcome.SUCCEEDED,
                realm="ledger-test",
                actor=Party(id="u-admin", username="admin"),
                target=Party(id="u-bob", username="bob", kind="user"),
                details={"roles": ["viewer"], "phase": "outcome", "intent_seq": intent.seq},
            )
        )
        await led.close()

    asyncio.run(more())
    assert _run(*base)[0] == 0
    lines = [json.loads(x) for x in dest.read_text().splitlines()]
    uids = [e["metadata"]["uid"] for e in lines]
    assert len(uids) == len(set(uids)), "an event was exported twice"
    new = lines[len(first) :]
    bob = [e for e in new if e.get("user", {}).get("name") == "bob"]
    assert len(bob) == 1 and "intent+outcome" in bob[0]["metadata"]["labels"]
    assert {e["unmapped"]["ledger"]["type"] for e in new} >= {"ledger.started", "role.granted"}
