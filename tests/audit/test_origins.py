"""One bucket, many logs (sidecar.audit.origins): every origin under a store found and verified on its
own against an origins trust file; missing, extra, duplicate and stalled origins are findings; pull
fetches all; the merged timeline states its order and marks cross-origin records within the skew bound.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from sidecar.audit.origins import (
    OriginsTrust,
    load_origins_trust,
    measure_skew,
    merged,
    prefixes_of,
    pull_and_verify_origins,
    sub_url,
)
from sidecar.clock import FixedClock
from sidecar.core.trust import TrustAnchor
from sidecar.replicate.drivers import open_store
from sidecar.replicate.replicator import Replicator
from sidecar.testing import build_ledger, flip_byte, segment_paths
from tests.replicate.support import run_cli


async def _node(tmp: Path, store: Path, name: str, *, events: int = 40, start_ns: int | None = None) -> TrustAnchor:
    """A ledger of origin cluster.test/<name> replicated to <store>/node-<name>/."""
    data = tmp / f"ledger-{name}"
    clock = FixedClock(start_ns=start_ns if start_ns is not None else time.time_ns(), step_ns=1_000_000)
    anchor = await build_ledger(data, events=events, origin=f"cluster.test/{name}", clock=clock)
    rep = Replicator(data, open_store(str(store / f"node-{name}")), interval_s=0.05)
    await rep.step()
    await rep.stop()
    return anchor


def _trust_file(tmp: Path, anchors: list[TrustAnchor], heartbeat_s: float = 30.0) -> Path:
    path = tmp / "origins.json"
    path.write_bytes(OriginsTrust.of(anchors, heartbeat_s).encode())
    return path


def test_prefixes_and_sub_urls() -> None:
    """Ledger prefixes are found from keys of the layout only, and a prefix URL keeps the S3 query."""
    keys = [
        "node-a/segments/00000000.seg",
        "node-a/checkpoints/000000000001-00000000000000000001.note",
        "site/node-b/tail/00000000/000000000000-000000000010.chunk",
        "segments/00000001.seg",
        "node-c/notes.txt",
        "node-csegments/00000000.seg",
    ]
    assert prefixes_of(keys) == ["", "node-a", "site/node-b"]
    assert sub_url("s3://ledger/?endpoint=http://x:1&region=r", "node-a") == (
        "s3://ledger/node-a?endpoint=http://x:1&region=r"
    )
    assert sub_url("/srv/store", "node-a") == "/srv/store/node-a"


def test_origins_trust_file_round_trip_and_refusals(tmp_path: Path) -> None:
    """An origins trust file round-trips; a single ledger's trust file is not one; a duplicate origin is refused."""
    anchors = [asyncio.run(_node(tmp_path, tmp_path / "store", n, events=2)) for n in ("a", "b")]
    path = _trust_file(tmp_path, anchors)
    loaded = load_origins_trust(path)
    assert loaded is not None and set(loaded.anchors) == {"cluster.test/a", "cluster.test/b"}
    assert loaded.max_silence_s == 90.0
    assert load_origins_trust(tmp_path / "ledger-a" / "trust.json") is None
    doubled = orjson.loads(path.read_bytes())
    doubled["origins"].append(doubled["origins"][0])
    with pytest.raises(ValueError, match="twice"):
        OriginsTrust.decode(orjson.dumps(doubled))


async def test_verify_every_origin_of_a_store(tmp_path: Path) -> None:
    """`sidecar verify STORE --trust ORIGINS` verifies both prefixes, each against its own origin's key."""
    store = tmp_path / "store"
    anchors = [await _node(tmp_path, store, n) for n in ("a", "b")]
    trust = _trust_file(tmp_path, anchors)
    cli = await run_cli("verify", str(store), "--trust", str(trust), "--json", "--workers", "1")
    assert cli.returncode == 0, cli.stdout + cli.stderr
    out = orjson.loads(cli.stdout)
    assert out["verdict"] == "intact" and out["findings"] == []
    assert sorted((o["origin"], o["prefix"], o["verdict"]) for o in out["origins"]) == [
        ("cluster.test/a", "node-a", "intact"),
        ("cluster.test/b", "node-b", "intact"),
    ]


async def test_missing_extra_and_stalled_origins_are_findings(tmp_path: Path) -> None:
    """An expected origin absent, an unlisted one present and one silent past the heartbeat are each a finding."""
    store = tmp_path / "store"
    a = await _node(tmp_path, store, "a")
    await _node(tmp_path, store, "b")  # present but not listed: extra
    old = await _node(tmp_path, store, "c", start_ns=time.time_ns() - 3600 * 10**9)  # silent for an hour
    gone = await _node(tmp_path / "elsewhere", tmp_path / "other-store", "d")  # listed, never in this store
    trust = OriginsTrust.of([a, old, gone], heartbeat_s=30)
    report = await pull_and_verify_origins(str(store), tmp_path / "out", trust, now_ns=time.time_ns(), workers=1)
    codes = sorted((f.code, f.message.split(":")[0].split(" ")[-1]) for f in report.findings)
    assert [c for c, _ in codes] == ["origin-extra", "origin-missing", "origin-stalled"], report.findings
    by_code = {f.code: f.message for f in report.findings}
    assert "cluster.test/b" in by_code["origin-extra"]
    assert "cluster.test/d" in by_code["origin-missing"]
    assert "cluster.test/c" in by_code["origin-stalled"] and "heartbeat of 30 s" in by_code["origin-stalled"]
    assert not report.ok
    verified = {o.origin: o.report.ok for o in report.origins if o.report is not None}
    assert verified == {"cluster.test/a": True, "cluster.test/c": True}, "each origin still verifies on its own"


async def test_a_tampered_origin_is_named(tmp_path: Path) -> None:
    """A flipped byte in one origin's stored segment fails that origin alone, and the finding names it."""
    store = tmp_path / "store"
    anchors = [await _node(tmp_path, store, n, events=200) for n in ("a", "b")]
    victim = segment_paths(store / "node-b")[0]
    flip_byte(victim, victim.stat().st_size // 2)
    report = await pull_and_verify_origins(
        str(store), tmp_path / "out", OriginsTrust.of(anchors, 30), now_ns=time.time_ns(), workers=1
    )
    results = {o.origin: o.report.ok for o in report.origins if o.report is not None}
    assert results == {"cluster.test/a": True, "cluster.test/b": False}
    assert report.all_findings() and all("cluster.test/b" in f.message for f in report.all_findings())


async def test_pull_fetches_all_origins_then_the_folder_verifies(tmp_path: Path) -> None:
    """`sidecar pull STORE` fetches every prefix into a bundle of its own; verify then reads the folder of bundles."""
    store = tmp_path / "store"
    anchors = [await _node(tmp_path, store, n) for n in ("a", "b")]
    out = tmp_path / "bundles"
    pulled = await run_cli("pull", str(store), "--out", str(out), "--json")
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    assert sorted(orjson.loads(pulled.stdout)["origins"]) == ["node-a", "node-b"]
    assert (out / "node-a" / "segments").is_dir() and (out / "node-b" / "segments").is_dir()
    trust = _trust_file(tmp_path, anchors)
    checked = await run_cli("verify", str(out), "--trust", str(trust), "--json", "--workers", "1")
    assert checked.returncode == 0, checked.stdout
    assert len(orjson.loads(checked.stdout)["origins"]) == 2


def _rec(seq: int, ts_ms: int, session: str | None = None) -> dict[str, Any]:
    return {"seq": seq, "ts": str(ts_ms * 1_000_000), "event": {"type": "x", "session": session}}


def test_merge_keeps_per_origin_order_and_marks_uncertain_pairs() -> None:
    """The merge orders by time across origins, keeps each origin's seq order, and marks pairs within the bound."""
    streams = {
        "a": [_rec(0, 1000), _rec(1, 1400), _rec(2, 5000)],
        "b": [_rec(0, 1100), _rec(1, 3000)],
    }
    ordering, rows = merged(streams, skew_bound_s=0.2)
    assert [(o, r["seq"]) for o, r, _ in rows] == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2)]
    assert [u for _, _, u in rows] == [True, True, False, False, False]
    assert ordering.skew_bound_s == 0.2 and not ordering.measured
    assert "per-origin seq" in ordering.describe()


def test_skew_is_measured_from_cross_origin_sessions() -> None:
    """A session created on one origin and used on the other, both ways, bounds the skew by the smallest gaps."""
    streams = {
        "a": [_rec(0, 1000, "s1"), _rec(1, 2050, "s2")],
        "b": [_rec(0, 1030, "s1"), _rec(1, 2000, "s2"), _rec(2, 2500, "s1")],
    }
    bound, pairs = measure_skew(streams)
    assert pairs == 3 and bound == pytest.approx(0.050)
    ordering, _ = merged(streams)
    assert ordering.measured and ordering.skew_bound_s == pytest.approx(0.050)
    one_way = {"a": [_rec(0, 1000, "s1")], "b": [_rec(0, 1030, "s1")]}
    assert measure_skew(one_way)[0] is None
    assert not merged(one_way)[0].measured


async def test_report_and_timeline_of_a_folder_of_origins(tmp_path: Path) -> None:
    """`sidecar timeline` and `sidecar report` over pulled bundles merge both origins and state the order they use."""
    store = tmp_path / "store"
    anchors = [await _node(tmp_path, store, n, events=30) for n in ("a", "b")]
    out = tmp_path / "bundles"
    assert (await run_cli("pull", str(store), "--out", str(out), "--json")).returncode == 0
    trust = _trust_file(tmp_path, anchors)
    shown = await run_cli("timeline", str(out), "--trust", str(trust), "--json")
    assert shown.returncode == 0, shown.stderr
    lines = [orjson.loads(line) for line in shown.stdout.splitlines()]
    assert lines[0]["ordering"]["origins"] == ["cluster.test/a", "cluster.test/b"]
    assert not lines[0]["ordering"]["skew_measured"], "synthetic ledgers share no session across origins"
    rows = lines[1:]
    assert {r["origin"] for r in rows} == {"cluster.test/a", "cluster.test/b"}
    assert [int(r["ts"]) for r in rows] == sorted(int(r["ts"]) for r in rows)
    # Both ledgers were written within the same second: records of different origins are that close.
    assert any(r["order_uncertain"] for r in rows)
    page = tmp_path / "report.html"
    made = await run_cli("report", str(out), "--trust", str(trust), "--out", str(page))
    assert made.returncode == 0, made.stderr
    text = page.read_text()
    assert "Verdict: INTACT" in text and "cluster.test/a" in text and "cluster.test/b" in text
    assert "per-origin seq" in text and "<script" not in text


async def test_keys_origins_writes_the_trust_file_verify_reads(tmp_path: Path) -> None:
    """`sidecar keys origins A.json B.json --heartbeat 30` writes the origins trust file; the same origin twice is refused."""
    store = tmp_path / "store"
    await _node(tmp_path, store, "a", events=5)
    await _node(tmp_path, store, "b", events=5)
    a, b = (str(tmp_path / f"ledger-{n}" / "trust.json") for n in ("a", "b"))
    made = await run_cli("keys", "origins", a, b, "--heartbeat", "30")
    assert made.returncode == 0, made.stderr
    trust = tmp_path / "origins.json"
    trust.write_text(made.stdout)
    loaded = load_origins_trust(trust)
    assert loaded is not None and sorted(loaded.anchors) == ["cluster.test/a", "cluster.test/b"]
    assert loaded.heartbeat_s == 30 and loaded.max_silence_s == 90
    checked = await run_cli("verify", str(store), "--trust", str(trust), "--json", "--workers", "1")
    assert checked.returncode == 0, checked.stdout
    twice = await run_cli("keys", "origins", a, a, "--heartbeat", "30")
    assert twice.returncode == 2 and "same origin" in twice.stderr
