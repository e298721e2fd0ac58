"""The object-store seam: where sealed WAL segments, checkpoints and tail chunks go to stay.

Every remote copy of the ledger passes through one small protocol, `ObjectStore`, with three
drivers: `S3Store` (S3 with Object Lock, the real thing), `DirectoryStore` (a local directory,
for single-host deployments and the demo) and `MemoryStore` (a dict, for fast tests).

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
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qsl, unquote, urlsplit

from sidecar.errors import ConfigError, StorageError, StoreIntegrityError

MAX_KEY_LENGTH = 512
_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
_PREFIX_CHARS = re.compile(r"[A-Za-z0-9._/-]*")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


class ObjectNotFound(StorageError, KeyError):
    """The store has no object under this key."""

    def __init__(self, store: str, key: str) -> None:
        super().__init__(f"{store}: no object {key!r}")
        self.key = key


class StoreUnavailable(StorageError, ConnectionError):
    """The store could not be reached or timed out; retrying later may help."""


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


def open_store(url: str, *, retention_days: int = 365, **s3_options: Any) -> ObjectStore:
    """Open the store a URL names.

    ``file:///abs/dir`` or a plain path gives a `DirectoryStore`; ``memory://`` a `MemoryStore`;
    ``s3://bucket/prefix?endpoint=http://127.0.0.1:5000&region=us-east-1`` an `S3Store`, with
    s3_options (credentials, timeouts) passed through. Anything else is a `ConfigError`.
    retention_days is the Object Lock retention of each new S3 object; local stores ignore it.
    """
    # Imported here: the drivers import this module for the protocol types.
    from sidecar.replicate.directory import DirectoryStore
    from sidecar.replicate.memory import MemoryStore
    from sidecar.replicate.s3 import S3Store

    if not url:
        raise ConfigError("store URL is empty")
    scheme = urlsplit(url).scheme if "://" in url else ""
    if scheme == "" and _SCHEME.match(url):
        # 's3:/bucket' is a typo, not a relative directory named 's3:'.
        raise ConfigError(f"store URL {url!r}: looks like a URL but has no '://'")
    if scheme != "s3" and s3_options:
        raise ConfigError(f"store URL {url!r}: S3 options {sorted(s3_options)} given for a non-S3 store")
    if scheme == "":
        return DirectoryStore(Path(url).expanduser().absolute())
    if scheme == "file":
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
            raise ConfigError(f"store URL {url!r}: expected file:///absolute/directory")
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise ConfigError(f"store URL {url!r}: expected file:///absolute/directory")
        return DirectoryStore(Path(path))
    if scheme == "memory":
        if url != "memory://":
            raise ConfigError(f"store URL {url!r}: expected exactly memory://")
        return MemoryStore()
    if scheme == "s3":
        parts = urlsplit(url)
        if not parts.netloc:
            raise ConfigError(f"store URL {url!r}: no bucket (expected s3://bucket/prefix)")
        if parts.fragment:
            raise ConfigError(f"store URL {url!r}: unexpected fragment")
        options: dict[str, Any] = dict(s3_options)
        known = {"endpoint": "endpoint_url", "region": "region"}
        for name, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
            if name not in known:
                raise ConfigError(f"store URL {url!r}: unknown parameter {name!r} (known: endpoint, region)")
            if known[name] in options:
                raise ConfigError(f"store URL {url!r}: {name} given twice")
            options[known[name]] = value
        try:
            return S3Store(parts.netloc, parts.path.lstrip("/"), retention_days=retention_days, **options)
        except ConfigError as e:
            raise ConfigError(f"store URL {url!r}: {e}") from e
    raise ConfigError(f"store URL {url!r}: unsupported scheme {scheme!r} (use file://, s3:// or memory://)")
