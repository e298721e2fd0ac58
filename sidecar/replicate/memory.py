"""An in-memory, versioned object store: the fast twin of `S3Store` for tests.

Same write-once semantics as every `ObjectStore` (see `sidecar.replicate.store`). Like a versioned
S3 bucket it keeps every version of a key; our own `put` never adds a second one, so more than one
version only appears when a test calls `tamper`, which plays someone uploading behind our back.
Nothing is ever removed. All state lives in the event loop's thread and no method awaits while
holding it half-changed, so concurrent puts need no lock.
"""

from __future__ import annotations

import builtins
import itertools
from dataclasses import dataclass

from sidecar.replicate.store import (
    ObjectInfo,
    ObjectNotFound,
    PutResult,
    conflict,
    sha256_hex,
    validate_key,
    validate_prefix,
)


@dataclass(frozen=True)
class _Version:
    version_id: str
    data: bytes


class MemoryStore:
    """A dict of key -> versions (oldest first); the last version is the current object."""

    def __init__(self) -> None:
        self._objects: dict[str, builtins.list[_Version]] = {}
        self._ids = itertools.count(1)

    @property
    def url(self) -> str:
        return "memory://"

    async def put(self, key: str, data: bytes) -> PutResult:
        validate_key(key)
        digest = sha256_hex(data)
        versions = self._objects.get(key)
        if versions:
            current = versions[-1]
            found = sha256_hex(current.data)
            if found != digest:
                raise conflict(self.url, key, digest, found)
            return PutResult(key, digest, len(data), current.version_id, created=False)
        version = self._add(key, data)
        return PutResult(key, digest, len(data), version.version_id, created=True)

    async def get(self, key: str) -> bytes:
        validate_key(key)
        versions = self._objects.get(key)
        if not versions:
            raise ObjectNotFound(self.url, key)
        return versions[-1].data

    async def head(self, key: str) -> ObjectInfo | None:
        validate_key(key)
        versions = self._objects.get(key)
        if not versions:
            return None
        return ObjectInfo(key, len(versions[-1].data), versions[-1].version_id)

    async def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        validate_prefix(prefix)
        return [
            ObjectInfo(key, len(versions[-1].data), versions[-1].version_id, len(versions))
            for key, versions in sorted(self._objects.items())
            if key.startswith(prefix)
        ]

    async def versions(self, key: str) -> builtins.list[ObjectInfo]:
        validate_key(key)
        return [ObjectInfo(key, len(v.data), v.version_id) for v in self._objects.get(key, [])]

    async def ensure_ready(self, *, create: bool = False) -> None:
        return None

    async def close(self) -> None:
        return None

    def tamper(self, key: str, data: bytes) -> str:
        """Add a new current version under key, bypassing write-once; return its version id.

        For tests only: this is what an attacker with upload rights to a versioned bucket can do.
        """
        validate_key(key)
        return self._add(key, data).version_id

    def _add(self, key: str, data: bytes) -> _Version:
        version = _Version(f"v{next(self._ids)}", bytes(data))
        self._objects.setdefault(key, []).append(version)
        return version
