"""Signing keys on disk, evolving per epoch (forward security, promise P8).

Layout under the data directory:

    ledger.json                 {"origin": "<origin>"}
    trust.json                  the trust anchor: origin + epoch 0 public key (public)
    keys/epoch-<n>.key          the private seed of epoch n, mode 0600

At most one private key exists at rest once a rotation is complete: the new
key file is written and fsynced first, the `key.rotated` record is committed
under a checkpoint signed by the old key, and only then is the old file
overwritten and removed. A crash between those steps is repaired on start
(`reconcile`). Destroying a file on a journaling or flash file system is best
effort; docs/threat-model.md says what that means.
"""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

import orjson

from sidecar.core.keys import Signer, key_name
from sidecar.core.trust import TrustAnchor
from sidecar.durable import fsync_dir, write_atomic
from sidecar.errors import ConfigError, StorageError

_KEY_FILE = re.compile(r"^epoch-(\d{6})\.key$")


def _write_private(path: Path, data: bytes) -> None:
    write_atomic(path, data, mode=0o600)


class KeyStore:
    """The key directory of one ledger."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.key_dir = data_dir / "keys"

    @property
    def trust_path(self) -> Path:
        return self.data_dir / "trust.json"

    def exists(self) -> bool:
        return self.trust_path.exists()

    def init(self, origin: str) -> TrustAnchor:
        """Create the epoch 0 key and the trust anchor; refuses to overwrite."""
        if not origin or any(c.isspace() for c in origin) or "+" in origin or "#" in origin:
            raise ConfigError(f"origin {origin!r} must be non-empty with no spaces, '+' or '#'")
        if self.exists():
            raise ConfigError(f"{self.trust_path} already exists; refusing to replace the ledger's keys")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.key_dir.mkdir(mode=0o700, exist_ok=True)
        signer = Signer.generate(key_name(origin, 0))
        self._save(0, signer)
        # A keyed-fingerprint key, separate from every signing key (P5): correlates secrets without storing them.
        _write_private(self.key_dir / "fingerprint.key", os.urandom(32))
        anchor = TrustAnchor(origin, signer.public)
        write_atomic(self.data_dir / "ledger.json", orjson.dumps({"origin": origin}) + b"\n")
        write_atomic(self.trust_path, anchor.encode())
        return anchor

    def trust(self) -> TrustAnchor:
        try:
            return TrustAnchor.decode(self.trust_path.read_bytes())
        except FileNotFoundError as exc:
            raise ConfigError(
                f"no ledger keys in {self.data_dir}; run `sidecar keys init --data {self.data_dir}` first"
            ) from exc

    def fingerprint_key(self) -> bytes:
        path = self.key_dir / "fingerprint.key"
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise ConfigError(f"fingerprint key {path} is missing") from exc

    def witness_signer(self) -> Signer:
        """The log witness key (docs/format.md §14.1), named like the origin; created on first use.

        Long-lived and never a ledger key: witnesses know the log by it, because epoch keys change.
        """
        path = self.key_dir / "witness.key"
        origin = self.trust().origin
        try:
            obj = orjson.loads(path.read_bytes())
            return Signer.from_seed(obj["name"], base64.b64decode(obj["seed"]))
        except FileNotFoundError:
            signer = Signer.generate(origin)
            self.key_dir.mkdir(mode=0o700, exist_ok=True)
            _write_private(path, orjson.dumps({"name": signer.name, "seed": base64.b64encode(signer.seed()).decode()}))
            return signer
        except (orjson.JSONDecodeError, KeyError, ValueError) as exc:
            raise ConfigError(f"witness key file {path} is unusable: {exc}") from exc

    def epochs(self) -> list[int]:
        if not self.key_dir.exists():
            return []
        return sorted(int(m.group(1)) for p in self.key_dir.iterdir() if (m := _KEY_FILE.match(p.name)))

    def _path(self, epoch: int) -> Path:
        return self.key_dir / f"epoch-{epoch:06d}.key"

    def _save(self, epoch: int, signer: Signer) -> None:
        blob = orjson.dumps({"name": signer.name, "seed": base64.b64encode(signer.seed()).decode()})
        _write_private(self._path(epoch), blob)

    def load(self, epoch: int) -> Signer:
        path = self._path(epoch)
        try:
            obj = orjson.loads(path.read_bytes())
            return Signer.from_seed(obj["name"], base64.b64decode(obj["seed"]))
        except FileNotFoundError as exc:
            raise ConfigError(f"private key for epoch {epoch} is missing ({path})") from exc
        except (orjson.JSONDecodeError, KeyError, ValueError) as exc:
            raise ConfigError(f"private key file {path} is unusable: {exc}") from exc

    def create(self, epoch: int) -> Signer:
        origin = self.trust().origin
        signer = Signer.generate(key_name(origin, epoch))
        try:
            self._save(epoch, signer)
        except OSError as exc:
            raise StorageError(f"cannot write key for epoch {epoch}: {exc}") from exc
        return signer

    def destroy(self, epoch: int) -> None:
        """Overwrite the private key file with zeros, fsync, and remove it."""
        path = self._path(epoch)
        try:
            size = path.stat().st_size
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, b"\0" * size)
                os.fsync(fd)
            finally:
                os.close(fd)
            path.unlink()
            fsync_dir(self.key_dir)
        except FileNotFoundError:
            return
