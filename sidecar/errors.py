"""The sidecar's one exception tree: every exception class of the package is defined here or drawn here.

    SidecarError               root; `exit_code` is what the command line exits with (2 unless a subclass says)
    ├── ConfigError            bad flags, files or environment; the start stops (ValueError)
    │   ├── PolicyError        a policy file is invalid: names the file, the key and the reason
    │   └── KeyStoreMismatch   (audit/pseudonyms.py) a reader's --subjects store is foreign or lost a live key
    ├── UnusableInput          nothing verifiable at the given source (no segments, no trust file); exit 2
    ├── IntegrityError         stored bytes do not verify: names segment, sequence, expected, got; exit 1
    ├── ReadRefused            (audit/reading.py) a reader refuses a ledger that did not verify; carries the
    │                          findings; exit 1
    ├── StorageError           the WAL, the index or a remote store cannot read or write (OSError)
    │   ├── StoreIntegrityError  a write-once object already exists with different bytes
    │   ├── ObjectNotFound     the store has no object under this key (KeyError)
    │   ├── StoreUnavailable   the store cannot be reached or timed out; retry later (ConnectionError)
    │   └── S3RequestError     S3 answered with an error; carries its code and status
    ├── RecordRejected         one record cannot be encoded (or is too large); only its append fails (ValueError)
    ├── UpstreamError          Keycloak cannot be reached or answered nonsense (ConnectionError); the proxy maps
    │                          every upstream failure to it once (`proxy/forward.py` `_upstream_error`)
    ├── CannotCheck            drift could not be checked (Keycloak unreadable, nothing to compare against)
    └── OverloadError          a bounded queue is full; becomes 503 + Retry-After

Outside the tree on purpose, each caught by its callers and turned into a finding or one of the errors above:

    ValueError
    ├── CanonicalError  (core/canonical.py)  a value cannot be encoded canonically; the writer maps it to
    │                                        RecordRejected
    ├── NotCanonical    (core/canonical.py)  bytes are not canonical JSON; `code` is the finding code
    ├── RecordError     (core/record.py)     bytes are not a record; `code` is the finding code
    ├── HeaderError     (core/segment.py)    bytes are not a segment header
    ├── NoteError       (core/note.py)       a signed note or checkpoint does not parse or verify
    ├── WitnessError    (core/witness.py)    a witness list or cosignature request is malformed
    └── DecryptError    (core/pii.py)        an encrypted field does not open with the key given

The pure core raises plain ValueErrors because its parsers are called on hostile bytes everywhere and
must not depend on the rest of the package. Two private exceptions are control flow inside one module,
never seen by a caller: `replicate/s3.py` `_LostRace` (a conditional put lost; compare instead) and
`demo.py` `_Stop` (a signal ends the demo).

Third-party errors are mapped into this tree once, at the seam that calls the library. The command line
maps the tree in one place (`cli._Group.invoke`): the message goes to stderr, the process exits with the
error's `exit_code`.
"""

from __future__ import annotations


class SidecarError(Exception):
    """Root of every error the sidecar raises on purpose."""

    exit_code: int = 2  # the command could not do its work (input, configuration, storage, Keycloak)


class ConfigError(SidecarError, ValueError):
    """Configuration is unusable; the message says which setting and why."""


class PolicyError(ConfigError):
    """A policy file is invalid."""

    def __init__(self, file: str, key: str, reason: str) -> None:
        super().__init__(f"{file}: {key}: {reason}")
        self.file = file
        self.key = key
        self.reason = reason


class UnusableInput(SidecarError):
    """There is nothing that can be verified at the given source."""


class IntegrityError(SidecarError):
    """Stored or received bytes fail verification."""

    exit_code = 1  # the command worked, and what it checked does not verify


class StorageError(SidecarError, OSError):
    """Local or remote storage failed (disk full, I/O error, unreachable store)."""

    retry_after: int = 5  # seconds a client should wait; the ledger sets it from its back-off


class RecordRejected(SidecarError, ValueError):
    """One record cannot be written (outside the canonical subset, or over the size limit).

    Only that append fails; the writer and every other record are unaffected.
    """


class StoreIntegrityError(StorageError):
    """A write-once object exists with different bytes: someone else wrote there."""


class ObjectNotFound(StorageError, KeyError):
    """The store has no object under this key."""

    def __init__(self, store: str, key: str) -> None:
        super().__init__(f"{store}: no object {key!r}")
        self.key = key


class StoreUnavailable(StorageError, ConnectionError):
    """The store could not be reached or timed out; retrying later may help."""


class S3RequestError(StorageError):
    """S3 answered a request with an error; `code` and `status` say which."""

    def __init__(self, message: str, *, code: str, status: int | None, server_message: str) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.server_message = server_message


class UpstreamError(SidecarError, ConnectionError):
    """Keycloak could not be reached or gave an unusable answer.

    `reason` is a stable label: `upstream_timeout` (the proxy answers 504), `upstream_unreachable` or
    `upstream_failed` (502).
    """

    def __init__(self, message: str, *, reason: str = "upstream_failed") -> None:
        super().__init__(message)
        self.reason = reason


class CannotCheck(SidecarError):
    """Drift could not be checked: Keycloak unreadable, or nothing in the ledger to compare against."""


class OverloadError(SidecarError):
    """A bounded queue is full; the caller should answer 503 with Retry-After."""

    def __init__(self, reason: str, retry_after: int = 1) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
