"""Smoke test of `sidecar bench ledger`: it runs end to end and reports every figure (no timing assertions)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from sidecar.bench.cli import bench
from sidecar.core import native

REFERENCE_KEYS = {
    "cores",
    "ed25519_sign_per_s",
    "ed25519_verify_per_s",
    "fsync_p50_us",
    "fsync_p99_us",
    "sha256_records_per_s_1core",
    "sha256_records_per_s_all_cores",
    "read_walk_hash_records_per_s_all_cores",
}
RESULT_KEYS = {
    "appends_per_s",
    "cpu_us_per_append",
    "commits",
    "mean_batch",
    "latency_p50_us",
    "latency_p99_us",
    "verified_records",
    "verify_records_per_s",
    "verify_records_per_s_1worker",
    "raw_bytes_per_event",
    "compressed_bytes_per_event",
    "record_body_mean_bytes",
    "encode_record_per_s",
}
TRADEOFF_KEYS = {"sign_every_record_per_s", "sign_per_100_per_s", "verify_every_record_ceiling_all_cores"}
TARGETS = {
    "durable signed appends/s",
    "full verification vs bare loop",
    "full verification, 1M/s goal",
    "append latency p50",
    "bytes/event at rest, compressed",
}
# Every target of brief §9 / issue 14, by benchmark.
ALL_TARGETS = {
    "ledger": TARGETS,
    "proxy": {
        "pass-through CPU per request vs bare proxy",
        "pass-through added latency p50",
        "captured added latency p50",
        "sidecar CPU per token request / Keycloak's",
        "sidecar CPU per login / Keycloak's",
    },
    "replication": {
        "replication lag p99, directory store",
        "replication lag p99, s3 store",
        "replication lag p99, versitygw store",
        "pull + verify from s3 vs the directory store",
        "pull + verify from versitygw vs the directory store",
    },
    "startup": {"`sidecar verify --help` start-up"},
}


def test_bench_ledger_json_has_every_figure(tmp_path: Path) -> None:
    """`bench ledger --events 2000 --json` prints references, results and targets, all positive, and cleans up."""
    result = CliRunner().invoke(
        bench,
        [
            "ledger",
            "--events",
            "2000",
            "--data",
            str(tmp_path),
            "--json",
            "--latency-appends",
            "200",
            "--reference-seconds",
            "0.1",
        ],
    )
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
    assert data["results"]["verify_mode"] == "full"  # kc-ledger/2: one procedure, no quick mode
    assert data["results"]["verify_scan"] == native.implementation()  # which record loop ran: C or pure Python
    assert data["results"]["verify_peak_rss_kib"] > 0
    assert data["results"]["verified_records"] == 2001  # the events plus the ledger.started record
    assert {t["name"] for t in data["targets"]} == TARGETS
    for target in data["targets"]:
        assert target["measured"] > 0 and target["limit"] > 0
        assert isinstance(target["passed"], bool)
    assert data["machine"]["cores"] >= 1 and len(data["machine"]["load_average"]) == 3
    assert list(tmp_path.iterdir()) == []  # the ledgers written were removed


def test_bench_ledger_human_output_has_tables(tmp_path: Path) -> None:
    """Without --json the result is a set of tables that name every brief target."""
    result = CliRunner().invoke(
        bench,
        [
            "ledger",
            "--events",
            "500",
            "--data",
            str(tmp_path),
            "--latency-appends",
            "50",
            "--reference-seconds",
            "0.05",
        ],
    )
    assert result.exit_code == 0, result.output
    for name in TARGETS:
        assert name in result.stdout


def test_bench_all_quick_json_names_every_target_with_a_verdict(tmp_path: Path) -> None:
    """`bench all --quick --json` (stand-in upstream, no Keycloak) runs and prints every brief target with a verdict."""
    result = CliRunner().invoke(bench, ["all", "--quick", "--json", "--data", str(tmp_path)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    for name, names in ALL_TARGETS.items():
        assert {t["name"] for t in data[name]["targets"]} == names, name
    assert {(t["benchmark"], t["name"]) for t in data["targets"]} == {
        (bench_name, n) for bench_name, names in ALL_TARGETS.items() for n in names
    }
    for target in data["targets"]:
        assert target["verdict"], target
        if target["benchmark"] == "proxy" and "Keycloak" in target["name"]:
            assert target["passed"] is None and target["verdict"].startswith("NOT MEASURED")  # no Keycloak in --quick
        else:
            assert isinstance(target["passed"], bool), target
    summary = data["summary"]
    assert summary["met"] + summary["missed"] + summary["not_measured"] == summary["total"] == len(data["targets"])
    proxy = data["proxy"]["results"]
    assert proxy["ledger"]["verdict"] == "intact" and proxy["ledger"]["types"].get("token.issued", 0) > 0
    for kind in ("token", "login"):  # every request of the headroom loads was answered as recorded
        assert 0 < proxy["headroom"][kind]["succeeded"] == proxy["headroom"][kind]["done"], kind
    assert "ledger: append() to acknowledgement, total" in proxy["capture_cost"]["parts_us"]
    assert list(tmp_path.iterdir()) == []  # everything written was removed


def test_bench_reads_runs(tmp_path: Path) -> None:
    """`bench reads --records 2000 --json` builds the report and compares the index lookup with a full scan."""
    result = CliRunner().invoke(bench, ["reads", "--records", "2000", "--data", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["report"]["verdict"] == "INTACT" and data["report"]["records"] == 2001
    assert data["lookup"]["matches"] >= 1 and data["lookup"]["index_seconds"] > 0
    assert list(tmp_path.iterdir()) == []  # cleaned up


def test_bench_origins_runs() -> None:
    """`bench origins --events 1000 --json` pulls and verifies a two-origin and a one-origin bucket of the same size."""
    result = CliRunner().invoke(bench, ["origins", "--events", "1000", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["events"] == 1000 and data["one_origin_s"] > 0 and data["two_origins_s"] > 0
    assert data["one_origin_records_per_s"] > 0 and data["two_origins_records_per_s"] > 0
