"""The sidecar's one exception tree.

    SidecarError
    ├── ConfigError        bad flags, files or environment; the start stops (ValueError)
    │   └── PolicyError    a policy file is invalid: names the file, the key and the reason
    ├── IntegrityError     stored bytes do not verify: names segment, sequence, expected, got
    ├── StorageError       the WAL, the index or a remote store cannot read or write (OSError)
    │   └── StoreIntegrityError  a write-once object already exists with different bytes
    ├── RecordRejected     one record cannot be encoded (or is too large); only its append fails (ValueError)
    ├── UpstreamError      Keycloak cannot be reached or answered nonsense (ConnectionError)
    └── OverloadError      a bounded queue is full; becomes 503 + Retry-After

Third-party errors are mapped into this tree once, at the seam that calls the library.
"""

from __future__ import annotations


class SidecarError(Exception):
    """Root of every error the sidecar raises on purpose."""


class ConfigError(SidecarError, ValueError):
    """Configuration is unusable; the message says which setting and why."""


class PolicyError(ConfigError):
    """A policy file is invalid."""

    def __init__(self, file: str, key: str, reason: str) -> None:
        super().__init__(f"{file}: {key}: {reason}")
        self.file = file
        self.key = key
        self.reason = reason


class IntegrityError(SidecarError):
    """Stored or received bytes fail verification."""


class StorageError(SidecarError, OSError):
    """Local or remote storage failed (disk full, I/O error, unreachable store)."""

    retry_after: int = 5  # seconds a client should wait; the ledger sets it from its back-off


class RecordRejected(SidecarError, ValueError):
    """One record cannot be written (outside the canonical subset, or over the size limit).

    Only that append fails; the writer and every other record are unaffected.
    """


class StoreIntegrityError(StorageError):
    """A write-once object exists with different bytes: someone else wrote there."""


class UpstreamError(SidecarError, ConnectionError):
    """Keycloak could not be reached or gave an unusable answer."""


class OverloadError(SidecarError):
    """A bounded queue is full; the caller should answer 503 with Retry-After."""

    def __init__(self, reason: str, retry_after: int = 1) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
