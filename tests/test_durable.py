"""Durable small files: data fsynced before the name appears, the directory fsynced after, no temp left behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sidecar import durable


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record each fsync as 'file:<size>' or 'dir:<names in it>', then do the real fsync."""
    calls: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            calls.append("dir:" + ",".join(sorted(n for n in os.listdir(fd) if not n.startswith("."))))
        else:
            calls.append(f"file:{st.st_size}")
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return calls


def test_write_atomic_fsyncs_the_data_then_the_directory(tmp_path: Path, fsyncs: list[str]) -> None:
    """The temp file is fsynced before the rename, the directory after it (the new name survives a power cut)."""
    target = tmp_path / "cursor.json"
    durable.write_atomic(target, b"12345")
    assert target.read_bytes() == b"12345"
    assert fsyncs == ["file:5", "dir:cursor.json"]
    assert os.listdir(tmp_path) == ["cursor.json"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_write_atomic_replaces_and_sets_the_mode(tmp_path: Path) -> None:
    """An existing file is replaced whole; the mode is the one asked for (0o600 for keys)."""
    target = tmp_path / "epoch-000000.key"
    target.write_bytes(b"old contents")
    durable.write_atomic(target, b"new", mode=0o600)
    assert target.read_bytes() == b"new" and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == [target.name]


def test_write_new_links_and_never_replaces(tmp_path: Path, fsyncs: list[str]) -> None:
    """write_new creates a read-only file, fsyncs data and directory, and refuses an existing name."""
    target = tmp_path / "object"
    durable.write_new(target, b"first", temp_prefix=".tmp-")
    assert fsyncs == ["file:5", "dir:object"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o444
    with pytest.raises(FileExistsError):
        durable.write_new(target, b"second")
    assert target.read_bytes() == b"first" and os.listdir(tmp_path) == ["object"]


def test_a_failed_write_leaves_no_temp_file(tmp_path: Path) -> None:
    """If the rename fails (the target is a non-empty directory), the temp file is removed and the error raised."""
    target = tmp_path / "taken"
    target.mkdir()
    (target / "inside").write_bytes(b"")
    with pytest.raises(OSError):
        durable.write_atomic(target, b"data")
    assert os.listdir(tmp_path) == ["taken"]


def test_a_failed_temp_write_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """If the data cannot be fsynced (a disk error), nothing is left beside the target."""

    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError, match="Input/output error"):
        durable.write_atomic(tmp_path / "x", b"data")
    assert os.listdir(tmp_path) == []
