"""kc-ledger/2 is what the writer produces; kc-ledger/1 ledgers still verify, with their weaker guarantees stated."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
from pathlib import Path

import orjson

from sidecar.audit.verifier import load_trust, verify_directory
from sidecar.clock import FixedClock
from sidecar.core import framing
from sidecar.core.keys import Signer
from sidecar.core.verify import V1_LIMITATIONS
from sidecar.ledger.writer import Ledger, LedgerConfig
from sidecar.testing import build_ledger, header_of, segment_paths, synthetic_event

V1 = Path(__file__).resolve().parents[1] / "vectors" / "v1"


def test_v1_vectors_verify_intact_with_their_limitations_stated() -> None:
    """The frozen kc-ledger/1 vectors verify as before, and the report names what version 1 does not prove."""
    exp = json.loads((V1 / "expected.json").read_text())["report"]
    report = verify_directory(V1, load_trust(V1 / "trust.json"), workers=1)
    assert report.ok, report.findings
    assert (report.size, report.root.hex(), report.keys) == (exp["tree_size"], exp["root"], exp["keys"])
    assert report.formats == {"kc-ledger/1": 2}
    assert report.limitations == list(V1_LIMITATIONS)


def test_the_writer_produces_v2_and_a_rotation_ends_its_segment(tmp_path: Path) -> None:
    """Every segment is kc-ledger/2, each key.rotated record is the last record of a sealed segment."""
    clock = FixedClock()
    trust = asyncio.run(build_ledger(tmp_path, events=40, segment_max_bytes=1 << 20, epoch_s=5e-9, clock=clock))
    report = verify_directory(tmp_path, trust, workers=1)
    assert report.ok, report.findings
    assert report.formats == {"kc-ledger/2": report.segments} and report.limitations == []
    assert len(report.keys) > 2
    for path in segment_paths(tmp_path)[:-1]:
        frames = [f for f in framing.iter_frames(path.read_bytes()) if isinstance(f, framing.Frame)]
        kinds = [f.kind for f in frames]
        assert kinds[1] == framing.CHECKPOINT  # the opening checkpoint signs the header
        assert kinds[-1] == framing.SEAL
        records = [orjson.loads(f.body) for f in frames if f.kind == framing.RECORD]
        rotations = [i for i, r in enumerate(records) if r["event"]["type"] == "key.rotated"]
        assert rotations in ([], [len(records) - 1])


def _v1_data_dir(tmp_path: Path) -> Path:
    """A sidecar data directory holding the v1 vectors, with the epoch 1 key the open segment is signed by."""
    data = tmp_path / "ledger"
    shutil.copytree(V1 / "segments", data / "segments")
    shutil.copy(V1 / "trust.json", data / "trust.json")
    exp = json.loads((V1 / "expected.json").read_text())
    key = next(k for k in exp["test_keys_never_use"] if k["label"] == "epoch 1")
    signer = Signer.from_seed(key["name"], bytes.fromhex(key["seed_hex"]))
    (data / "keys").mkdir(mode=0o700)
    (data / "keys" / "epoch-000001.key").write_bytes(
        orjson.dumps({"name": signer.name, "seed": base64.b64encode(signer.seed()).decode()})
    )
    (data / "keys" / "fingerprint.key").write_bytes(b"\x01" * 32)
    (data / "ledger.json").write_bytes(orjson.dumps({"origin": exp["origin"]}))
    return data


def test_an_open_v1_segment_is_continued_in_v1_and_the_next_segment_is_v2(tmp_path: Path) -> None:
    """The writer appends to an open kc-ledger/1 segment in its own format until it seals, then writes v2."""
    data = _v1_data_dir(tmp_path)

    async def run() -> None:
        ledger = await Ledger.open(
            data,
            clock=FixedClock(start_ns=1_900_000_000_000_000_000),
            config=LedgerConfig(segment_max_bytes=6000, epoch_s=1e9),
        )
        for i in range(30):
            await ledger.append(synthetic_event(i))
        await ledger.close()

    asyncio.run(run())
    report = verify_directory(data, load_trust(data / "trust.json"), workers=1)
    assert report.ok, report.findings
    assert report.formats["kc-ledger/1"] == 2 and report.formats["kc-ledger/2"] >= 1
    assert report.limitations == list(V1_LIMITATIONS)
    assert header_of(segment_paths(data)[1]).version == 1
    assert header_of(segment_paths(data)[2]).version == 2
