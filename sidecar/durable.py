"""Durable small files: write a temp file, fsync it, rename or link it into place, fsync the directory.

The one implementation of "this file is on stable storage before anyone relies on it", used for keys,
cursors, snapshots and the directory object store. Each step matters after a power cut:

* the data is fsynced before the new name points at it, so the name never shows a half-written file;
* the directory is fsynced after the rename or link, so the new name itself survives.

`write_atomic` replaces whatever the name held (`os.replace`). `write_new` never replaces: it links,
and `link` refuses an existing name (FileExistsError), so a concurrent writer's file is never
overwritten. Temp files start with a dot and live beside the target (a rename within one directory is
atomic); a crash can leave one behind, never a partial target. Errors are the OSErrors of the calls;
callers map them to their own StorageError or ConfigError. Blocking: async callers run these in a
worker thread.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["fsync_dir", "write_atomic", "write_new"]


def fsync_dir(directory: Path) -> None:
    """Make the directory's entries (a new, renamed or removed name) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp(path: Path, data: bytes, mode: int, prefix: str | None) -> str:
    """A durable temp file beside `path` holding `data` with permissions `mode`; returns its name."""
    fd, tmp = tempfile.mkstemp(
        prefix=prefix if prefix is not None else f".{path.name}.", suffix=".tmp", dir=path.parent
    )
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return tmp


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace `path` with `data`: readers see the old file or the new one, and the new one survives a crash."""
    tmp = _temp(path, data, mode, None)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def write_new(path: Path, data: bytes, *, mode: int = 0o444, temp_prefix: str | None = None) -> None:
    """Create `path` holding `data`, durably; FileExistsError if the name exists (it is never replaced)."""
    tmp = _temp(path, data, mode, temp_prefix)
    try:
        # SECURITY: link, not rename: rename would silently replace a file a concurrent writer stored a
        # moment ago; link refuses an existing name.
        os.link(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsync_dir(path.parent)
