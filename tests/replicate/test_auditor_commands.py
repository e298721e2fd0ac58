"""README's auditor commands, run as written, catch a cut tail and a rolled-back store; `pull` refuses bad input.

The commands are read from README.md (the block after "# an auditor"), with the example names
replaced by this test's: the bucket by a directory store, /var/lib/sidecar by the ledger, and
bundle/, trust.json, last-seen.note, r4711.json by files in the test's folder.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import orjson
import pytest

from sidecar.core import framing
from sidecar.core.note import Checkpoint, split_note
from sidecar.replicate.drivers import open_store
from sidecar.replicate.layout import parse_key
from sidecar.replicate.replicator import Replicator

from .support import REPO, drain, init_keys, open_ledger, run_cli, steady_load


def auditor_commands() -> list[str]:
    """The `sidecar ...` lines of README's auditor block, without their comments."""
    lines = (REPO / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# an auditor"))
    out = []
    for line in lines[start + 1 :]:
        if line.startswith("```"):
            break
        if line.startswith("sidecar "):
            out.append(line.split("  #", 1)[0].strip())
    return out


def substituted(command: str, names: dict[str, str]) -> list[str]:
    words = shlex.split(command)[1:]
    return [names.get(w, w) for w in words]


async def build(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A ledger (one open segment) replicated into a directory store; (data, trust, store)."""
    data = tmp_path / "ledger"
    trust = init_keys(data)
    store_dir = tmp_path / "store"
    store = open_store(str(store_dir))
    ledger = await open_ledger(data, segment_max_bytes=8 * 1024 * 1024)
    rep = Replicator(data, store, interval_s=0.02)
    ledger.subscribers.append(rep.on_commit)
    rep.start()
    try:
        await steady_load(ledger, rate=100, seconds=1.0)
        await drain(rep)
    finally:
        await ledger.close()
        await rep.stop(drain_timeout_s=30)
        await store.close()
    return data, trust, store_dir


async def run_readme(names: dict[str, str]) -> list[subprocess.CompletedProcess[str]]:
    return [await run_cli(*substituted(c, names)) for c in auditor_commands()]


def names_for(tmp_path: Path, data: Path, trust: Path, store: Path) -> dict[str, str]:
    return {
        "s3://audit-bucket/keycloak": str(store),
        "/var/lib/sidecar": str(data),
        "bundle/": str(tmp_path / "bundle"),
        "trust.json": str(trust),
        "last-seen.note": str(tmp_path / "last-seen.note"),
        "r4711.json": str(tmp_path / "r3.json"),
        "4711": "3",
    }


def codes(result: subprocess.CompletedProcess[str]) -> set[str]:
    return {f["code"] for f in orjson.loads(result.stdout)["findings"]}


def cut_on_a_checkpoint(segment: Path) -> None:
    """Truncate a segment to its middle checkpoint: whole frames, nothing torn."""
    ends = [
        f.offset + framing.OVERHEAD + len(f.body)
        for f in framing.iter_frames(segment.read_bytes())
        if isinstance(f, framing.Frame) and f.kind == framing.CHECKPOINT
    ]
    with segment.open("r+b") as f:
        f.truncate(ends[len(ends) // 2])


def roll_back(store: Path) -> int:
    """Delete the newer half of the open segment's chunks and every checkpoint beyond what is left; the size left."""
    chunks = sorted((p for p in (store / "tail" / "00000000").iterdir()), key=lambda p: p.name)
    keep = chunks[: len(chunks) // 2]
    for p in chunks[len(keep) :]:
        p.unlink()
    left = b"".join(p.read_bytes() for p in keep)
    notes = [f.body for f in framing.iter_frames(left) if isinstance(f, framing.Frame) and f.kind == framing.CHECKPOINT]
    size = Checkpoint.parse_body(split_note(notes[-1])[0]).size
    for p in (store / "checkpoints").iterdir():
        parsed = parse_key(f"checkpoints/{p.name}")
        if parsed is not None and parsed.size > size:
            p.unlink()
    return size


def test_readme_has_the_auditor_commands() -> None:
    """README's auditor block pulls, verifies the bundle and the store with a last-seen pin, and compares."""
    commands = auditor_commands()
    assert any(c.startswith("sidecar pull ") for c in commands)
    assert sum("--last-seen" in c for c in commands) >= 2, commands


async def test_readme_commands_catch_a_cut_bundle_tail(tmp_path: Path) -> None:
    """On an intact ledger every README command exits 0; a bundle cut behind its own checkpoints is tail-cut."""
    data, trust, store = await build(tmp_path)
    names = names_for(tmp_path, data, trust, store)
    first = await run_readme(names)
    assert [r.returncode for r in first] == [0] * len(first), [r.stdout + r.stderr for r in first]
    (segment,) = sorted((tmp_path / "bundle" / "segments").glob("*.seg"))
    cut_on_a_checkpoint(segment)
    (tmp_path / "last-seen.note").unlink()  # not even a pin: the bundle's own checkpoints must suffice
    verify_bundle = next(c for c in auditor_commands() if c.startswith("sidecar verify bundle/"))
    result = await run_cli(*substituted(verify_bundle, names), "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "tail-cut" in codes(result)


async def test_readme_commands_catch_a_rolled_back_store(tmp_path: Path) -> None:
    """After a clean run pinned the newest checkpoint, a store rolled back to an older state is tail-cut on the next run."""
    data, trust, store = await build(tmp_path)
    names = names_for(tmp_path, data, trust, store)
    first = await run_readme(names)
    assert [r.returncode for r in first] == [0] * len(first), [r.stdout + r.stderr for r in first]
    pinned = (tmp_path / "last-seen.note").read_bytes()
    left = roll_back(store)
    assert left < Checkpoint.parse_body(split_note(pinned)[0]).size

    again = {c: r for c, r in zip(auditor_commands(), await run_readme(names), strict=True)}
    for command, result in again.items():
        if command.startswith("sidecar verify") and "--last-seen" in command:
            assert result.returncode == 1, (command, result.stdout, result.stderr)
            assert "tail-cut" in result.stdout, (command, result.stdout)
    store_json = next(r for c, r in again.items() if "--json" in c and "s3://audit-bucket" in c.split()[2])
    assert "tail-cut" in codes(store_json)
    assert (tmp_path / "last-seen.note").read_bytes() == pinned, "a failed run never moves the pin"


@pytest.mark.parametrize("kind", ["missing", "file", "empty"])
async def test_pull_refuses_an_unusable_source(tmp_path: Path, kind: str) -> None:
    """`sidecar pull` of a missing path, a file or an empty directory exits 2 with one clear line."""
    source = tmp_path / "source"
    if kind == "file":
        source.write_text("not a store")
    elif kind == "empty":
        source.mkdir()
    result = await run_cli("pull", str(source), "--out", str(tmp_path / "bundle"))
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert {"missing": "does not exist", "file": "is a file", "empty": "holds no ledger segments"}[kind] in lines[0]


@pytest.mark.parametrize("kind", ["file", "under-a-file", "inside-the-store"])
async def test_pull_refuses_a_bad_out_without_a_traceback(tmp_path: Path, kind: str) -> None:
    """Every unusable --out is exit 2 with one line on stderr, never a traceback."""
    _, _, store = await build(tmp_path)
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    out = {"file": blocker, "under-a-file": blocker / "bundle", "inside-the-store": store / "bundle"}[kind]
    result = await run_cli("pull", str(store), "--out", str(out))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
