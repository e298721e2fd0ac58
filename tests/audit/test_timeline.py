"""`sidecar timeline` and `sidecar export` read records from segments, filter them, and map them to OCSF."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from click.testing import CliRunner

from sidecar.cli import main
from sidecar.core.events import EventType, IdentityEvent, Outcome, Party
from sidecar.ledger.keystore import KeyStore
from sidecar.ledger.writer import Ledger, LedgerConfig


def _ledger(path: Path) -> None:
    async def run() -> None:
        KeyStore(path).init("timeline.test/ledger")
        ledger = await Ledger.open(path, config=LedgerConfig(segment_max_bytes=2048, fsync=False))
        await ledger.append(
            IdentityEvent(
                EventType.LOGIN_SUCCEEDED,
                Outcome.SUCCEEDED,
                realm="r",
                actor=Party(id="u-alice", username="alice"),
                source_ip="10.0.0.7",
            )
        )
        for i in range(5):
            await ledger.append(
                IdentityEvent(
                    EventType.ROLE_GRANTED,
                    Outcome.SUCCEEDED,
                    realm="r",
                    actor=Party(id="u-admin", username="admin"),
                    target=Party(id=f"u-{i}", username=f"user{i}", kind="user"),
                    details={"roles": ["viewer"]},
                )
            )
        await ledger.append(
            IdentityEvent(
                EventType.LOGIN_FAILED, Outcome.FAILED, realm="r", actor=Party(username="alice"), error="invalid_grant"
            )
        )
        await ledger.close()

    asyncio.run(run())


def test_timeline_filters_by_actor_and_type(tmp_path: Path) -> None:
    """The timeline shows one line per matching record: alice's logins only, in order, with outcome and IP."""
    _ledger(tmp_path)
    out = CliRunner().invoke(
        main,
        ["timeline", str(tmp_path), "--actor", "alice", "--type", "login", "--trust", str(tmp_path / "trust.json")],
    )
    assert out.exit_code == 0, out.output
    lines = out.output.strip().splitlines()
    assert len(lines) == 2
    assert "login.succeeded succeeded: alice" in lines[0] and "from 10.0.0.7" in lines[0]
    assert "login.failed failed: alice" in lines[1] and "error=invalid_grant" in lines[1]


def test_export_ocsf_maps_classes_and_status(tmp_path: Path) -> None:
    """OCSF export gives Authentication for logins and User Access Management for role grants, with status and origin."""
    _ledger(tmp_path)
    out = CliRunner().invoke(
        main,
        ["export", str(tmp_path), "--format", "ocsf", "--target", "user3", "--trust", str(tmp_path / "trust.json")],
    )
    assert out.exit_code == 0, out.output
    events = [json.loads(line) for line in out.output.strip().splitlines()]
    assert len(events) == 1
    ev = events[0]
    assert ev["class_uid"] == 3005 and ev["activity_name"] == "Assign Privileges" and ev["status"] == "Success"
    assert ev["user"]["name"] == "user3" and ev["actor"]["user"]["name"] == "admin"
    assert ev["metadata"]["log_name"] == "timeline.test/ledger"
    logins = CliRunner().invoke(
        main, ["export", str(tmp_path), "--format", "ocsf", "--type", "login", "--trust", str(tmp_path / "trust.json")]
    )
    assert [json.loads(x)["class_uid"] for x in logins.output.strip().splitlines()] == [3002, 3002]


def test_export_jsonl_to_file_and_bad_source(tmp_path: Path) -> None:
    """JSON lines go to the file named; a missing source is a one-line error with exit code 2."""
    _ledger(tmp_path / "l")
    dest = tmp_path / "out.jsonl"
    res = CliRunner().invoke(
        main, ["export", str(tmp_path / "l"), "--out", str(dest), "--trust", str(tmp_path / "l" / "trust.json")]
    )
    assert res.exit_code == 0
    assert len(dest.read_text().splitlines()) == 8  # ledger.started + 7 events
    bad = CliRunner().invoke(main, ["timeline", str(tmp_path / "nope"), "--unverified"])
    assert bad.exit_code == 2 and "does not exist" in bad.output
