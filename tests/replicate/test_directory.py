"""The directory driver's own guarantees: read-only files, no leftovers, no escape from the root."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from sidecar.errors import StorageError
from sidecar.replicate.directory import DirectoryStore


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


async def test_final_file_is_read_only_and_no_temp_files_remain(tmp_path: Path) -> None:
    """A put leaves exactly one file per key, mode 0o444, and no temp files, even after re-puts."""
    store = DirectoryStore(tmp_path / "store")
    await store.put("segments/00000001.wal", b"segment")
    await store.put("segments/00000001.wal", b"segment")
    await asyncio.gather(*(store.put("checkpoints/0001", b"cp") for _ in range(5)))

    assert files_under(tmp_path / "store") == ["checkpoints/0001", "segments/00000001.wal"]
    for name in files_under(tmp_path / "store"):
        assert stat.S_IMODE(os.stat(tmp_path / "store" / name).st_mode) == 0o444


async def test_integrity_error_leaves_no_temp_file(tmp_path: Path) -> None:
    """A refused put of different bytes removes its temp file and keeps the original file."""
    store = DirectoryStore(tmp_path)
    await store.put("k", b"original")
    with pytest.raises(StorageError):
        await store.put("k", b"forged")
    assert files_under(tmp_path) == ["k"]
    assert (tmp_path / "k").read_bytes() == b"original"


async def test_list_ignores_temp_and_stray_files(tmp_path: Path) -> None:
    """Temp files left by a crash and files no key can name are not listed."""
    store = DirectoryStore(tmp_path)
    await store.put("segments/0001", b"x")
    (tmp_path / "segments" / ".tmp-crashed").write_bytes(b"half")
    (tmp_path / "segments" / "not a key").write_bytes(b"stray")
    assert [i.key for i in await store.list()] == ["segments/0001"]


async def test_symlink_is_not_listed_as_object(tmp_path: Path) -> None:
    """A symlink planted in the store is not listed, so list never follows it out of the root."""
    store = DirectoryStore(tmp_path / "store")
    await store.put("a", b"x")
    (tmp_path / "outside").write_bytes(b"secret")
    (tmp_path / "store" / "link").symlink_to(tmp_path / "outside")
    assert [i.key for i in await store.list()] == ["a"]


async def test_key_that_is_a_directory_is_not_an_object(tmp_path: Path) -> None:
    """A key naming a directory (because longer keys live under it) is missing, and cannot be put."""
    store = DirectoryStore(tmp_path)
    await store.put("a/b", b"x")
    assert await store.head("a") is None
    with pytest.raises(StorageError, match="put 'a'"):
        await store.put("a", b"y")


async def test_unwritable_root_is_storage_error(tmp_path: Path) -> None:
    """A root where files cannot be created gives StorageError naming the key, not a raw OSError."""
    (tmp_path / "file").write_bytes(b"")
    store = DirectoryStore(tmp_path / "file")  # a file, not a directory
    with pytest.raises(StorageError, match=r"put 'k'"):
        await store.put("k", b"x")
