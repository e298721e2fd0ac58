"""Real C2SP witnesses (transparency-dev omniwitness) on loopback: cosigning, and what an auditor finds with them.

Three witnesses, quorum two. The auditor holds only the trust file and the witness list and runs the
verifier on the copy of the ledger it was given: a cut tail, a rollback and a split view are each found.
Witness outages delay cosigning and never the append path; health turns not-ready only after the
policy's time without a quorum. Runtime about 10 s (each test starts its own witnesses, ~0.2 s each).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.audit.verifier import verify_directory
from sidecar.audit.witnesses import check_witnesses, ledger_leaves, probe, witnessed_notes
from sidecar.clock import FixedClock
from sidecar.core import framing
from sidecar.core.keys import Signer
from sidecar.core.note import parse_note
from sidecar.core.trust import TrustAnchor
from sidecar.core.verify import Report
from sidecar.core.witness import Witness, witness_list_json
from sidecar.harness.witness import OmniWitness
from sidecar.ledger.keystore import KeyStore
from sidecar.ledger.writer import Ledger, LedgerConfig
from sidecar.testing import copy_ledger, segment_paths, synthetic_event, write_bytes
from sidecar.witness.client import WitnessClient

ORIGIN = "witness-test.example/ledger"
SIDECAR = Path(sys.executable).with_name("sidecar")


@pytest.fixture
def witnesses(tmp_path: Path) -> Iterator[list[OmniWitness]]:
    log_key = _log_key_of(tmp_path / "ledger")
    started = [OmniWitness(tmp_path / f"w{i}", f"witness.test/w{i}", ORIGIN, log_key.public).start() for i in range(3)]
    try:
        yield started
    finally:
        for w in started:
            w.stop()


def _log_key_of(data: Path) -> Signer:
    """The ledger's keys (created on first use) and its log witness key."""
    keys = KeyStore(data)
    if not keys.exists():
        keys.init(ORIGIN)
    return keys.witness_signer()


class Sidecar:
    """A ledger with its witness client, as `serve` runs them (quorum 2 of 3)."""

    def __init__(self, data: Path, witnesses: list[Witness], clock: FixedClock) -> None:
        self.data, self.witnesses, self.clock = data, witnesses, clock
        self.now = 0.0

    async def __aenter__(self) -> Sidecar:
        self.ledger = await Ledger.open(self.data, clock=self.clock, config=LedgerConfig(segment_max_bytes=6000))
        self.client = WitnessClient(
            self.data,
            self.witnesses,
            KeyStore(self.data).witness_signer(),
            quorum=2,
            stale_after_s=60.0,
            monotonic=lambda: self.now,
        )
        self.ledger.subscribers.append(self.client.on_commit)
        await self.client.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()
        await self.ledger.close()

    async def append(self, n: int, start: int = 0) -> None:
        for i in range(start, start + n):
            await self.ledger.append(synthetic_event(i))

    async def witness(self) -> None:
        await self.client.step()


def audit(source: Path, trust: TrustAnchor, witnesses: list[Witness], quorum: int = 2) -> Report:
    """What `sidecar verify SOURCE --witnesses FILE --quorum K` computes, in-process."""
    notes = witnessed_notes(source)
    report = verify_directory(source, trust, workers=1)
    head = max(notes, key=lambda n: parse_note(n).checkpoint.size) if notes else None
    views = asyncio.run(probe(witnesses, head, ledger_leaves(segment_paths(source)), report.size)) if head else []
    check_witnesses(report, trust, notes, witnesses, quorum, views)
    return report


def codes(report: Report) -> list[str]:
    return [f.code for f in report.findings]


async def _witnessed_ledger(data: Path, ws: list[Witness]) -> tuple[TrustAnchor, int]:
    trust = KeyStore(data).trust()
    async with Sidecar(data, ws, FixedClock()) as sc:
        await sc.append(30)
        await sc.witness()
        return trust, sc.ledger.size


def test_checkpoints_are_cosigned_and_an_auditor_verifies_the_quorum(
    witnesses: list[OmniWitness], tmp_path: Path
) -> None:
    """The witnesses cosign the newest checkpoint; the CLI with the witness list and quorum 2 says intact."""
    data = tmp_path / "ledger"
    ws = [w.witness for w in witnesses]
    _trust, size = asyncio.run(_witnessed_ledger(data, ws))
    notes = witnessed_notes(data)
    newest = parse_note(notes[-1])
    assert newest.checkpoint.size == size and len(newest.signatures) == 2 + 3  # epoch key, log key, 3 witnesses
    listing = tmp_path / "witnesses.json"
    listing.write_bytes(witness_list_json(ws))
    proc = subprocess.run(
        [
            str(SIDECAR),
            "verify",
            str(data),
            "--trust",
            str(data / "trust.json"),
            "--witnesses",
            str(listing),
            "--quorum",
            "2",
            "--json",
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert out["verdict"] == "intact" and len(out["witnesses"]["cosigned_newest"]) == 3
    assert {v["outcome"] for v in out["witnesses"]["views"]} == {"cosigned"}


def test_a_cut_tail_is_found_by_an_auditor_with_only_the_trust_file_and_the_witness_list(
    witnesses: list[OmniWitness], tmp_path: Path
) -> None:
    """Cutting the newest records and their witnessed checkpoints leaves a ledger the witnesses have seen past."""
    data = tmp_path / "ledger"
    ws = [w.witness for w in witnesses]

    async def run() -> tuple[int, int]:
        async with Sidecar(data, ws, FixedClock()) as sc:
            await sc.append(20)
            await sc.witness()
            first = sc.ledger.size
            await sc.append(20, 20)
            await sc.witness()
            return first, sc.ledger.size

    first, full = asyncio.run(run())
    trust = KeyStore(data).trust()
    cut = copy_ledger(data, tmp_path / "cut")
    # The attacker cuts every segment byte after the checkpoint of size `first`, and its witnessed checkpoints.
    for path in segment_paths(cut):
        frames = [f for f in framing.iter_frames(path.read_bytes()) if isinstance(f, framing.Frame)]
        at = next(
            (
                f.offset + framing.OVERHEAD + len(f.body)
                for f in frames
                if f.kind == framing.CHECKPOINT and parse_note(f.body).checkpoint.size == first
            ),
            None,
        )
        if at is not None:
            write_bytes(path, path.read_bytes()[:at])
            for later in segment_paths(cut):
                if later.name > path.name:
                    later.unlink()
            break
    for note in (cut / "witness").glob("*.note"):
        if parse_note(note.read_bytes()).checkpoint.size > first:
            note.unlink()
    assert verify_directory(cut, trust, workers=1).ok, "on its own the cut ledger verifies"
    report = audit(cut, trust, ws)
    assert codes(report) == ["tail-cut"] * 3
    assert report.findings[0].seq == first
    assert f"has cosigned {full} records, the ledger holds only {first}" in report.findings[0].message


def test_a_rollback_to_an_old_copy_is_found(witnesses: list[OmniWitness], tmp_path: Path) -> None:
    """A whole data directory restored from an earlier backup, witness folder included, is a tail-cut."""
    data = tmp_path / "ledger"
    ws = [w.witness for w in witnesses]
    clock = FixedClock()

    async def run() -> None:
        async with Sidecar(data, ws, clock) as sc:
            await sc.append(20)
            await sc.witness()
        shutil.copytree(data, tmp_path / "backup", ignore=shutil.ignore_patterns(".lock"))
        async with Sidecar(data, ws, clock) as sc:
            await sc.append(10, 20)
            await sc.witness()

    asyncio.run(run())
    trust = KeyStore(data).trust()
    assert not audit(data, trust, ws).findings
    report = audit(tmp_path / "backup", trust, ws)
    assert set(codes(report)) == {"tail-cut"}, report.findings


def test_a_split_view_is_found_by_the_auditor_shown_the_other_history(
    witnesses: list[OmniWitness], tmp_path: Path
) -> None:
    """Two histories from one point: the witnesses cosign only the first; the second's auditor finds it."""
    data = tmp_path / "ledger"
    ws = [w.witness for w in witnesses]
    clock = FixedClock()

    async def run() -> None:
        async with Sidecar(data, ws, clock) as sc:
            await sc.append(20)
            await sc.witness()
        copy_ledger(data, tmp_path / "fork")  # the key holder keeps a copy and writes another history there
        async with Sidecar(data, ws, FixedClock(clock.t, clock.step)) as sc:
            await sc.append(10, 20)
            await sc.witness()
        async with Sidecar(tmp_path / "fork", ws, FixedClock(clock.t, clock.step)) as fork:
            await fork.ledger.append(
                {
                    "type": "role.granted",
                    "outcome": "succeeded",
                    "realm": "acme",
                    "actor": {"username": "mallory"},
                    "details": {"roles": ["realm-admin"]},
                }
            )
            await fork.append(9, 100)
            fork.now += 31.0  # past the backoff of the refusals at open (the witnesses are ahead of the copy)
            await fork.witness()  # every witness refuses the fork
            assert fork.client.status()["cosigned_size"] < fork.ledger.size

    asyncio.run(run())
    trust = KeyStore(data).trust()
    assert not audit(data, trust, ws).findings, "auditor A, shown the witnessed history, finds it intact"
    fork = tmp_path / "fork"
    assert verify_directory(fork, trust, workers=1).ok, "the fork is a consistent ledger on its own"
    report = audit(fork, trust, ws)
    assert "witness-conflict" in codes(report) and codes(report)[-1] == "witness-quorum", report.witnesses
    shutil.rmtree(fork / "witness")  # the fork's keeper hides its failed submissions too
    stripped = audit(fork, trust, ws)
    assert codes(stripped) == ["witness-quorum"]


def test_witness_outages_delay_cosigning_but_never_appends(witnesses: list[OmniWitness], tmp_path: Path) -> None:
    """With every witness down appends go on; readiness turns false only after stale_after_s, and recovers."""
    data = tmp_path / "ledger"
    ws = [w.witness for w in witnesses]

    async def run() -> None:
        async with Sidecar(data, ws, FixedClock()) as sc:
            await sc.append(5)
            await sc.witness()
            assert sc.client.not_ready_reason() is None
            for w in witnesses:
                w.stop()
            await sc.append(20, 5)  # appends do not wait for witnesses
            await sc.witness()
            st = sc.client.status()
            assert st["head_size"] == sc.ledger.size > st["cosigned_size"]
            assert all(p["error"] for p in st["witnesses"])
            sc.now += 30.0
            assert sc.client.not_ready_reason() is None, "within the policy's time the sidecar stays ready"
            sc.now += 31.0
            reason = sc.client.not_ready_reason()
            assert reason is not None and "waited 61.0 s for 2 witness cosignature(s)" in reason
            for w in witnesses:
                w.start()  # same port, key and state file
            sc.now += 31.0  # past every backoff
            await sc.witness()
            assert sc.client.status()["cosigned_size"] == sc.ledger.size
            assert sc.client.not_ready_reason() is None

    asyncio.run(run())
