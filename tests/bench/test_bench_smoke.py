"""Smoke test of `sidecar bench ledger`: it runs end to end and reports every figure (no timing assertions)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from sidecar.bench.cli import bench

REFERENCE_KEYS = {"cores", "ed25519_sign_per_s", "ed25519_verify_per_s", "fsync_p50_us", "fsync_p99_us",
                  "sha256_records_per_s_1core", "sha256_records_per_s_all_cores"}
RESULT_KEYS = {"appends_per_s", "cpu_us_per_append", "commits", "mean_batch", "latency_p50_us", "latency_p99_us",
               "verified_records", "verify_records_per_s", "verify_records_per_s_1worker", "raw_bytes_per_event",
               "compressed_bytes_per_event", "record_body_mean_bytes", "encode_record_per_s"}
TRADEOFF_KEYS = {"sign_every_record_per_s", "sign_per_100_per_s", "verify_every_record_ceiling_all_cores"}
TARGETS = {"durable signed appends/s", "verified records/s vs hash loop", "verified records/s, absolute",
           "append latency p50", "bytes/event at rest, compressed"}


def test_bench_ledger_json_has_every_figure(tmp_path: Path) -> None:
    """`bench ledger --events 2000 --json` prints references, results and targets, all positive, and cleans up."""
    result = CliRunner().invoke(bench, ["ledger", "--events", "2000", "--data", str(tmp_path), "--json",
                                        "--latency-appends", "200", "--reference-seconds", "0.1"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["benchmark"] == "ledger"
    assert REFERENCE_KEYS <= data["references"].keys()
    assert RESULT_KEYS <= data["results"].keys()
    assert TRADEOFF_KEYS <= data["tradeoff"].keys()
    for key in REFERENCE_KEYS:
        assert data["references"][key] > 0, key
    for key in RESULT_KEYS:
        assert data["results"][key] > 0, key
    for key in TRADEOFF_KEYS:
        assert data["tradeoff"][key] > 0, key
    assert data["results"]["verify_ok"] is True
    assert data["results"]["verified_records"] == 2001  # the events plus the ledger.started record
    assert {t["name"] for t in data["targets"]} == TARGETS
    for target in data["targets"]:
        assert target["measured"] > 0 and target["limit"] > 0
        assert isinstance(target["passed"], bool)
    assert data["machine"]["cores"] >= 1 and len(data["machine"]["load_average"]) == 3
    assert list(tmp_path.iterdir()) == []  # the ledgers written were removed


def test_bench_ledger_human_output_has_tables(tmp_path: Path) -> None:
    """Without --json the result is a set of tables that name every brief target."""
    result = CliRunner().invoke(bench, ["ledger", "--events", "500", "--data", str(tmp_path),
                                        "--latency-appends", "50", "--reference-seconds", "0.05"])
    assert result.exit_code == 0, result.output
    for name in TARGETS:
        assert name in result.stdout
