"""The object-store seam: where sealed WAL segments, checkpoints and tail chunks go to stay.

Every remote copy of the ledger passes through one small protocol, `ObjectStore`, with three
drivers: `S3Store` (S3 with Object Lock, the real thing), `DirectoryStore` (a local directory,
for single-host deployments and the demo) and `MemoryStore` (a dict, for fast tests). This
module imports none of them: `sidecar.replicate.drivers.open_store` picks one from a URL.

Invariants every driver keeps:

* **Write-once.** A key is written at most once. Putting identical bytes again is success
  (`PutResult.created` is False), so a replicator may retry blindly after a crash. Putting
  different bytes under an existing key raises `StoreIntegrityError` naming the key and both
  SHA-256 digests: someone else wrote there, and that is a finding, never something to paper over.
* **Never delete.** No driver has a delete operation; retention belongs to the store (S3 Object
  Lock in COMPLIANCE mode, read-only files), not to the sidecar.
* **Keys are boring.** Relative, '/'-separated segments of ``[A-Za-z0-9._-]``; no empty, ``.`` or
  ``..`` segments, no segment starting with a dot (the directory driver keeps its temp files
  there), at most 512 characters. The same rule for every driver, so a key that works in tests
  works against S3 and can never escape a directory.
* **Errors stay in the tree.** Drivers raise `StorageError` subclasses (`ObjectNotFound`,
  `StoreUnavailable`, `StoreIntegrityError`); a bad key is a `ValueError` (a bug in the caller).
"""

from __future__ import annotations

import builtins
import hashlib
import re
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from sidecar.errors import ObjectNotFound as ObjectNotFound  # re-exported: drivers and callers import it here
from sidecar.errors import StoreIntegrityError
from sidecar.errors import StoreUnavailable as StoreUnavailable  # re-exported, as ObjectNotFound

MAX_KEY_LENGTH = 512
_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
_PREFIX_CHARS = re.compile(r"[A-Za-z0-9._/-]*")


@dataclass(frozen=True)
class PutResult:
    """What a put left in the store."""

    key: str
    sha256: str  # hex digest of the bytes now stored under key
    size: int
    version_id: str | None  # None where the store has no versions (directory)
    created: bool  # False when identical bytes were already there


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object (or one version of it)."""

    key: str
    size: int
    version_id: str | None = None
    # How many data versions the key holds, where the listing tells (S3 lists versions in bulk);
    # None: ask `versions(key)`. More than one means someone wrote behind the replicator's back.
    versions: int | None = None


@runtime_checkable
class ObjectStore(Protocol):
    """A write-once, never-delete object store."""

    @property
    def url(self) -> str:
        """Where this store points, without secrets, for messages and logs."""
        ...

    async def put(self, key: str, data: bytes) -> PutResult:
        """Store data under key once; identical bytes again succeed, different bytes raise."""
        ...

    async def get(self, key: str) -> bytes:
        """Return the current bytes under key, or raise `ObjectNotFound`."""
        ...

    async def head(self, key: str) -> ObjectInfo | None:
        """Describe the current object under key, or None."""
        ...

    async def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        """Every current object whose key starts with prefix, sorted by key."""
        ...

    async def versions(self, key: str) -> builtins.list[ObjectInfo]:
        """Every version stored under key, oldest first.

        More than one means someone wrote behind our back. Stores without versions
        (directory) return at most one.
        """
        ...

    async def ensure_ready(self, *, create: bool = False) -> None:
        """Check, once at start, that the store can keep its promises; raise `ConfigError` if not.

        An S3 bucket must have versioning, Object Lock and a default retention; a directory
        must be one (or creatable). With create (tests, the demo), make a missing one first.
        """
        ...

    async def close(self) -> None:
        """Release connections; the store is unusable afterwards."""
        ...


def sha256_hex(data: bytes) -> str:
    """The digest every driver reports and compares."""
    return hashlib.sha256(data).hexdigest()


def conflict(store: str, key: str, expected: str, found: str) -> StoreIntegrityError:
    """The one message for "a write-once key already holds other bytes"."""
    return StoreIntegrityError(
        f"{store}: {key!r} already holds different bytes: expected sha256 {expected}, found sha256 {found}"
    )


def validate_key(key: str) -> str:
    """Return key unchanged if it is a valid store key, else raise ValueError with the reason."""
    reason = key_problem(key)
    if reason is not None:
        raise ValueError(f"invalid store key {key!r}: {reason}")
    return key


def validate_prefix(prefix: str) -> str:
    """Return a list prefix unchanged if it could begin a valid key, else raise ValueError."""
    if prefix == "":
        return prefix
    if len(prefix) > MAX_KEY_LENGTH:
        reason = f"longer than {MAX_KEY_LENGTH} characters"
    elif not _PREFIX_CHARS.fullmatch(prefix):
        reason = "only letters, digits, '.', '_', '-' and '/' are allowed"
    elif prefix.startswith("/"):
        reason = "must be relative (no leading '/')"
    elif "//" in prefix:
        reason = "empty path segment"
    elif any(seg.startswith(".") for seg in prefix.split("/")):
        reason = "a path segment starts with '.'"
    else:
        return prefix
    raise ValueError(f"invalid store prefix {prefix!r}: {reason}")


def key_problem(key: str) -> str | None:
    """Why key is not a valid store key, or None if it is."""
    if key == "":
        return "empty"
    if len(key) > MAX_KEY_LENGTH:
        return f"longer than {MAX_KEY_LENGTH} characters"
    if key.startswith("/"):
        return "must be relative (no leading '/')"
    for segment in key.split("/"):
        if segment == "":
            return "empty path segment"
        if not _SEGMENT.fullmatch(segment):
            return f"segment {segment!r} has characters outside [A-Za-z0-9._-]"
        # SECURITY: '.'/'..' would walk out of a DirectoryStore root; any leading dot is reserved
        # for the directory driver's temp files so a caller can never name (or clobber) one.
        if segment.startswith("."):
            return f"segment {segment!r} starts with '.'"
    return None
