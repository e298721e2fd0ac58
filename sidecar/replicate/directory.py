"""A write-once object store in a local directory: one file per key, read-only once written.

For single-host deployments, the demo and tests against a real filesystem. Same contract as every
`ObjectStore` (see `sidecar.replicate.store`); how this driver keeps it:

* A put writes a temp file (``.tmp-*``, a name no valid key can have) in the target directory,
  fsyncs it, makes it read-only (0o444) and then **hard-links** it to the final name. ``link``
  fails if the name exists, so two writers can never clobber each other and a reader never sees
  a half-written object: the loser compares bytes instead (identical: not created; different:
  `StoreIntegrityError`). The directory is fsynced so the new name survives a power cut.
* New subdirectories are fsynced into their parents too.
* Nothing is ever deleted or rewritten. A temp file left by a crash is ignored by `list` and
  harmless; it may be removed by hand.
* The root must sit on a filesystem with hard links (any local POSIX one).

Read-only files guard against accidents, not attackers: anyone with write access to the directory
can still replace files. Tamper evidence comes from the ledger's hashes and signatures; WORM
storage needs `S3Store` with Object Lock. All file I/O runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import stat
from pathlib import Path

from sidecar.durable import fsync_dir, write_new
from sidecar.errors import ConfigError, SidecarError, StorageError
from sidecar.replicate.store import (
    ObjectInfo,
    ObjectNotFound,
    PutResult,
    conflict,
    key_problem,
    sha256_hex,
    validate_key,
    validate_prefix,
)

READ_ONLY = 0o444
TEMP_PREFIX = ".tmp-"


class DirectoryStore:
    """Objects as read-only files under root; a key's '/' separators become subdirectories."""

    def __init__(self, root: Path) -> None:
        self._root = Path(root).absolute()

    @property
    def url(self) -> str:
        return self._root.as_uri()

    @property
    def root(self) -> Path:
        return self._root

    async def put(self, key: str, data: bytes) -> PutResult:
        validate_key(key)
        return await asyncio.to_thread(self._put, key, bytes(data))

    async def get(self, key: str) -> bytes:
        validate_key(key)
        return await asyncio.to_thread(self._get, key)

    async def head(self, key: str) -> ObjectInfo | None:
        validate_key(key)
        return await asyncio.to_thread(self._head, key)

    async def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        validate_prefix(prefix)
        return await asyncio.to_thread(self._list, prefix)

    async def versions(self, key: str) -> builtins.list[ObjectInfo]:
        info = await self.head(key)
        return [] if info is None else [info]

    async def ensure_ready(self, *, create: bool = False) -> None:
        """The root must be a writable directory; a missing one is created (as a put would)."""
        await asyncio.to_thread(self._ensure_ready)

    async def close(self) -> None:
        return None

    def _ensure_ready(self) -> None:
        try:
            self._make_dirs(self._root)
        except OSError as e:
            raise ConfigError(f"{self.url}: cannot use {self._root} as a store directory: {_describe(e)}") from e
        if not os.access(self._root, os.W_OK | os.X_OK):
            raise ConfigError(f"{self.url}: the store directory {self._root} is not writable")

    # -- blocking parts, run in a worker thread ---------------------------------------------------

    def _put(self, key: str, data: bytes) -> PutResult:
        digest = sha256_hex(data)
        path = self._root.joinpath(*key.split("/"))
        try:
            existing = self._read_existing(path)
            if existing is not None:
                return self._compare(key, digest, existing)
            self._make_dirs(path.parent)
            try:
                # SECURITY: write_new links, never renames: an object a concurrent writer stored a
                # moment ago is compared, not replaced.
                write_new(path, data, mode=READ_ONLY, temp_prefix=TEMP_PREFIX)
            except FileExistsError:
                existing = self._read_existing(path)
                if existing is None:  # the name is a directory, not an object
                    raise
                return self._compare(key, digest, existing)
            return PutResult(key, digest, len(data), None, created=True)
        except SidecarError:
            raise
        except OSError as e:
            raise StorageError(f"{self.url}: put {key!r}: {_describe(e)}") from e

    def _compare(self, key: str, digest: str, existing: bytes) -> PutResult:
        found = sha256_hex(existing)
        if found != digest:
            raise conflict(self.url, key, digest, found)
        return PutResult(key, digest, len(existing), None, created=False)

    def _read_existing(self, path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def _make_dirs(self, directory: Path) -> None:
        """Create directory and any missing parents, fsyncing each new entry into its parent."""
        missing: builtins.list[Path] = []
        current = directory
        while not current.is_dir():
            missing.append(current)
            if current.parent == current:
                break
            current = current.parent
        for new in reversed(missing):
            try:
                os.mkdir(new)
            except FileExistsError:
                if not new.is_dir():
                    raise
                continue
            fsync_dir(new.parent)

    def _get(self, key: str) -> bytes:
        path = self._root.joinpath(*key.split("/"))
        try:
            data = self._read_existing(path)
        except OSError as e:
            raise StorageError(f"{self.url}: get {key!r}: {_describe(e)}") from e
        if data is None:
            raise ObjectNotFound(self.url, key)
        return data

    def _head(self, key: str) -> ObjectInfo | None:
        path = self._root.joinpath(*key.split("/"))
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            raise StorageError(f"{self.url}: head {key!r}: {_describe(e)}") from e
        return ObjectInfo(key, st.st_size) if stat.S_ISREG(st.st_mode) else None

    def _list(self, prefix: str) -> builtins.list[ObjectInfo]:
        # Start at the deepest directory the prefix names, so listing one segment family
        # does not walk the whole store.
        base_parts = [p for p in prefix.rpartition("/")[0].split("/") if p]
        found: builtins.list[ObjectInfo] = []
        try:
            self._walk(self._root.joinpath(*base_parts), "/".join(base_parts), prefix, found)
        except OSError as e:
            raise StorageError(f"{self.url}: list {prefix!r}: {_describe(e)}") from e
        found.sort(key=lambda info: info.key)
        return found

    def _walk(self, directory: Path, rel: str, prefix: str, out: builtins.list[ObjectInfo]) -> None:
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            if entry.name.startswith("."):  # temp files, and nothing a valid key can name
                continue
            key = f"{rel}/{entry.name}" if rel else entry.name
            if entry.is_dir(follow_symlinks=False):
                if key.startswith(prefix) or prefix.startswith(key + "/"):
                    self._walk(Path(entry.path), key, prefix, out)
            elif entry.is_file(follow_symlinks=False) and key.startswith(prefix):
                if key_problem(key) is None:  # a stray file no key can name is not an object
                    out.append(ObjectInfo(key, entry.stat(follow_symlinks=False).st_size, versions=1))


def _describe(e: OSError) -> str:
    return f"{e.strerror} ({e.filename})" if e.strerror and e.filename else str(e)
