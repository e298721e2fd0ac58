"""The subject key store: one AES-256 key per person, so their data can be erased (docs/format.md §5.2).

Layout of a store directory (and of each backup copy, which holds the same files):

    subjects.json                  {"format": "kc-subjects/1", "id": "<hex>", "index_key": "<base64>"}  (mode 0600)
    keys/<sha256(subject)[:32]>.json
        {"subject": id, "key": "<base64>", "created": ns, "names": [token, ...]}      a live subject
        {"subject": id, "erased": {"at": ns, "by": who, "reason": why}, "seq": n|null}  an erased one

Invariants:

* The store lives outside the ledger's immutable files and outside the WORM store: erasing must
  be able to destroy what it holds, and nothing immutable may hold a key. `sidecar serve` always
  has one: by default `<data>/subjects/` (never replicated, never served), created on the first
  start of a new ledger; the ledger is bound to its store by the store's `id`, recorded in
  `<data>/subjects-bound.json` (docs/operations.md §3.1), so a missing or foreign store is a
  start-up error, never plaintext.
* Every write is durable before it is used: temp file, fsync, rename, fsync of the directory,
  in the store and then in every backup. A record is never written under a key that is not
  on stable storage in every copy.
* Keys never reach a log line, an exception message, a record or an export.
* A store that is missing or unreadable is an error (ConfigError / StorageError); no caller
  falls back to writing plaintext.
* Erasing replaces the key file by its tombstone (the key bytes overwritten first) in every
  copy, then the `subject.erased` record is appended; the tombstone's `seq` says it was.
  Redoing an erasure finishes whatever a crash left undone.
* `names` holds keyed tokens (HMAC-SHA-256 under the store's index key) of the usernames and
  e-mail addresses a subject was seen with, for search by name; erasing removes them too.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from sidecar.core import pii
from sidecar.durable import write_atomic
from sidecar.errors import ConfigError, StorageError
from sidecar.policy.schema import PiiPolicy

FORMAT = "kc-subjects/1"
# A user's username or e-mail written before the user had an id (the target of a create's intent) goes
# under a pseudo-subject of its own, `name:<random>`, erased with every subject later seen with that name.
NAMED = "name:"
META = "subjects.json"
DEFAULT_DIR = "subjects"  # <data>/subjects: the store's default place (docs/operations.md §3.1)
BINDING = "subjects-bound.json"  # <data>/subjects-bound.json: {"format": ..., "store": id}
BINDING_FORMAT = "kc-subjects-binding/1"
_NAME_PATHS = {"username", "email"}  # fields whose plaintext is searchable by keyed token


def _write_durable(path: Path, data: bytes) -> None:
    write_atomic(path, data, mode=0o600)


def _overwrite(path: Path) -> None:
    """Best effort on journaling or flash file systems (docs/threat-model.md): zeros over the old bytes."""
    try:
        size = path.stat().st_size
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError:
        return
    try:
        os.write(fd, b"\0" * size)
        os.fsync(fd)
    finally:
        os.close(fd)


def file_of(subject: str) -> str:
    return hashlib.sha256(subject.encode("utf-8", "replace")).hexdigest()[:32] + ".json"


@dataclass
class Entry:
    subject: str
    key: bytes | None  # None once erased
    created: int = 0
    names: list[str] = field(default_factory=list)
    erased: dict[str, Any] | None = None
    seq: int | None = None  # the subject.erased record, once written

    def to_bytes(self) -> bytes:
        if self.erased is not None:
            return orjson.dumps({"subject": self.subject, "erased": self.erased, "seq": self.seq})
        assert self.key is not None
        return orjson.dumps(
            {
                "subject": self.subject,
                "key": base64.b64encode(self.key).decode(),
                "created": self.created,
                "names": self.names,
            }
        )

    def __repr__(self) -> str:  # SECURITY: a key never reaches a log line through a repr
        return f"Entry(subject={self.subject!r}, erased={self.erased is not None})"


def _parse(path: Path) -> Entry:
    try:
        obj = orjson.loads(path.read_bytes())
        if "erased" in obj:
            return Entry(str(obj["subject"]), None, erased=dict(obj["erased"]), seq=obj.get("seq"))
        key = base64.b64decode(obj["key"], validate=True)
        if len(key) != pii.KEY_BYTES:
            raise ValueError("key is not 32 bytes")
        return Entry(str(obj["subject"]), key, int(obj.get("created", 0)), [str(n) for n in obj.get("names", [])])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StorageError(f"subject key store: {path.name} is unreadable ({type(exc).__name__})") from exc


class SubjectKeys:
    """A subject key store directory, with its backup copies. Open with `open()` (or `create()`)."""

    def __init__(self, path: Path, backups: tuple[Path, ...] = ()) -> None:
        self.path = path
        self.backups = backups
        self._entries: dict[str, Entry] = {}
        self._index_key = b""
        self.id: str | None = None  # None: a store made before stores had ids (given one when bound)
        self._named_by_token: dict[str, str] | None = None
        # The last key write's failure (every copy must take it), None once one succeeds: readiness shows it,
        # since every append that needs a new key fails (closed) until the store can be written again.
        self.write_error: str | None = None
        self.write_failed_at = 0.0
        self._lock = asyncio.Lock()
        # Key creation (the appender's, the drift monitor's snapshot sealing) and erasure exclude each other,
        # so a key being created cannot be written back over its tombstone.
        self._mutex = threading.RLock()

    def __repr__(self) -> str:
        return f"SubjectKeys({str(self.path)!r}, {len(self._entries)} subjects)"

    @classmethod
    def create(cls, path: Path, backups: tuple[Path, ...] = ()) -> SubjectKeys:
        """A new, empty store (and its backup copies); refuses to overwrite one."""
        if (path / META).exists():
            raise ConfigError(f"a subject key store already exists in {path}")
        meta = orjson.dumps(
            {
                "format": FORMAT,
                "id": secrets.token_hex(16),
                "index_key": base64.b64encode(secrets.token_bytes(32)).decode(),
            }
        )
        for where in (path, *backups):
            (where / "keys").mkdir(parents=True, exist_ok=True, mode=0o700)
            _write_durable(where / META, meta)
        return cls.open(path, backups)

    @classmethod
    def open(cls, path: Path, backups: tuple[Path, ...] = ()) -> SubjectKeys:
        """Load the store; a missing or unreadable store is an error, never an empty one."""
        store = cls(path, backups)
        meta_path = path / META
        if not meta_path.exists():
            raise ConfigError(
                f"no subject key store in {path} (create one with `sidecar subject init "
                f"--subjects {path}`, or restore it from its backup); refusing to go on without it"
            )
        try:
            meta = orjson.loads(meta_path.read_bytes())
            if meta.get("format") != FORMAT:
                raise ValueError(f"format {meta.get('format')!r}")
            store._index_key = base64.b64decode(meta["index_key"], validate=True)
            store.id = str(meta["id"]) if meta.get("id") is not None else None
            files = sorted((path / "keys").glob("*.json"))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StorageError(f"subject key store {path} is unreadable: {type(exc).__name__}") from exc
        for f in files:
            entry = _parse(f)
            store._entries[entry.subject] = entry
        for backup in backups:
            if not (backup / META).exists():
                raise ConfigError(
                    f"subject key store backup {backup} is missing or not initialised (copy {path} there first)"
                )
        return store

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return len(self._entries)

    def key(self, subject: str) -> bytes | None:
        entry = self._entries.get(subject)
        return entry.key if entry is not None else None

    def is_erased(self, subject: str) -> bool:
        entry = self._entries.get(subject)
        return entry is not None and entry.erased is not None

    def entries(self) -> list[Entry]:
        return sorted(self._entries.values(), key=lambda e: e.subject)

    def token(self, value: str) -> str:
        """The keyed search token of a username or e-mail address (case-insensitive)."""
        return hmac.new(
            self._index_key, b"kc-name/1 " + value.casefold().encode("utf-8", "replace"), hashlib.sha256
        ).hexdigest()

    def find(self, name: str) -> list[str]:
        """The subjects (not erased) that were seen with this username or e-mail address."""
        token = self.token(name)
        return sorted(
            e.subject
            for e in self._entries.values()
            if e.erased is None and token in e.names and not e.subject.startswith(NAMED)
        )

    def recent_write_error(self, window_s: float = 10.0) -> str | None:
        """The key write failure of the last `window_s` seconds (readiness), unless a write succeeded since."""
        if self.write_error is not None and time.monotonic() - self.write_failed_at < window_s:
            return self.write_error
        return None

    def _named_index(self) -> dict[str, str]:
        """Search token -> live `name:` pseudo-subject (built once, kept up to date by _ensure and destroy)."""
        if self._named_by_token is None:
            self._named_by_token = {
                t: e.subject
                for e in self._entries.values()
                if e.erased is None and e.subject.startswith(NAMED)
                for t in e.names
            }
        return self._named_by_token

    def named(self, value: str) -> str | None:
        """The live pseudo-subject of a user's name seen before the user had an id (a create's intent)."""
        return self._named_index().get(self.token(value))

    def linked(self, subject: str) -> list[str]:
        """The live name pseudo-subjects that share a name with `subject` (erased together with it)."""
        entry = self._entries.get(subject)
        index = self._named_index()
        return sorted({index[t] for t in (entry.names if entry is not None else ()) if t in index} - {subject})

    # ------------------------------------------------------------------ writing (durable in every copy)
    def assign_id(self) -> str:
        """Give a store made before stores had ids its id (in every copy); returns the id."""
        if self.id is None:
            meta = orjson.loads((self.path / META).read_bytes())
            meta["id"] = secrets.token_hex(16)
            for where in (self.path, *self.backups):
                _write_durable(where / META, orjson.dumps(meta))
            self.id = str(meta["id"])
        return self.id

    def _save(self, entry: Entry) -> None:
        data = entry.to_bytes()
        for where in (self.path, *self.backups):
            try:
                _write_durable(where / "keys" / file_of(entry.subject), data)
            except OSError as exc:
                self.write_error = f"subject key store {where}: cannot write ({exc.strerror or type(exc).__name__})"
                self.write_failed_at = time.monotonic()
                raise StorageError(self.write_error) from exc
        self.write_error = None

    def ensure(self, subject: str, names: tuple[str, ...], now_ns: int) -> bytes | None:
        """The subject's key, created (durably, in every copy) if new; None if the subject was erased."""
        with self._mutex:
            return self._ensure(subject, names, now_ns)

    def _ensure(self, subject: str, names: tuple[str, ...], now_ns: int) -> bytes | None:
        entry = self._entries.get(subject)
        if entry is not None and entry.erased is not None:
            return None
        tokens = [self.token(n) for n in names]
        if entry is None:
            entry = Entry(subject, secrets.token_bytes(pii.KEY_BYTES), now_ns, sorted(set(tokens)))
        elif all(t in entry.names for t in tokens):
            assert entry.key is not None
            return entry.key
        else:
            entry = Entry(subject, entry.key, entry.created, sorted({*entry.names, *tokens}))
        self._save(entry)
        self._entries[subject] = entry
        if subject.startswith(NAMED):
            self._named_index().update(dict.fromkeys(entry.names, subject))
        return entry.key

    def destroy(self, subject: str, *, by: str, reason: str, now_ns: int) -> Entry:
        """Replace the subject's key by its tombstone in memory at once, then in every copy (idempotent).

        Blocking (fsyncs): a running sidecar calls it in a worker thread. The in-memory tombstone comes
        first, so from then on the appender writes no value under the key (it leaves the value out).
        """
        with self._mutex:
            entry = self._entries.get(subject)
            tomb = (
                entry
                if entry is not None and entry.erased is not None
                else Entry(subject, None, erased={"at": str(now_ns), "by": by, "reason": reason})
            )
            self._entries[subject] = tomb  # SECURITY: the key's last reference in this process goes here
            if self._named_by_token is not None:
                self._named_by_token = {t: n for t, n in self._named_by_token.items() if n != subject}
            for where in (self.path, *self.backups):
                _overwrite(where / "keys" / file_of(subject))
            self._save(tomb)
            return tomb

    def recorded(self, subject: str, seq: int) -> None:
        with self._mutex:
            entry = self._entries[subject]
            entry.seq = seq
            self._save(entry)


def default_dir(data_dir: Path) -> Path:
    """Where `sidecar serve` keeps the store unless told otherwise: `<data>/subjects/`."""
    return data_dir / DEFAULT_DIR


def bound_store(data_dir: Path) -> str | None:
    """The id of the store this ledger is bound to (`<data>/subjects-bound.json`), None if not bound yet."""
    path = data_dir / BINDING
    try:
        obj = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StorageError(f"{path} is unreadable ({type(exc).__name__})") from exc
    if not isinstance(obj, dict) or obj.get("format") != BINDING_FORMAT or not isinstance(obj.get("store"), str):
        raise StorageError(f"{path} is not a {BINDING_FORMAT} file")
    return str(obj["store"])


def _bind(data_dir: Path, store_id: str) -> None:
    write_atomic(data_dir / BINDING, orjson.dumps({"format": BINDING_FORMAT, "store": store_id}), mode=0o600)


def holds_encrypted(data_dir: Path) -> bool:
    """Whether any segment of the ledger holds an encrypted value (a byte scan, mmap'd)."""
    import mmap

    mark = b'"' + pii.MARK.encode() + b'":'
    for seg in sorted((data_dir / "segments").glob("*.seg")):
        with seg.open("rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                continue
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                if m.find(mark) >= 0:
                    return True
    return False


def open_for_ledger(data_dir: Path, path: Path | None, backups: tuple[Path, ...] = ()) -> tuple[SubjectKeys, str]:
    """The subject key store `serve` writes with: `path` (default `<data>/subjects/`), bound to this ledger.

    * bound, store present with the bound id: opened ("opened");
    * bound, store missing or another store: ConfigError (restore the store from a backup);
    * not bound, store present: bound now ("bound"), a store made with `sidecar subject init`;
    * not bound, no store, the ledger holds no encrypted value: created and bound ("created");
    * not bound, no store, encrypted values in the ledger: ConfigError (their store is lost or elsewhere).

    Never returns without a store: there is no plaintext fallback.
    """
    where = path if path is not None else default_dir(data_dir)
    bound = bound_store(data_dir)
    if bound is not None:
        if not (where / META).exists():
            raise ConfigError(
                f"no subject key store in {where}, but this ledger's records are encrypted under store {bound} "
                f"({data_dir / BINDING}); restore that store (or a backup of it) to {where}, or pass --subjects "
                "with its location; refusing to go on without it"
            )
        store = SubjectKeys.open(where, backups)
        if store.id != bound:
            raise ConfigError(
                f"the subject key store in {where} is store {store.id}, not this ledger's store {bound} "
                f"({data_dir / BINDING}); point --subjects at this ledger's store; refusing to go on"
            )
        return store, "opened"
    if (where / META).exists():
        store = SubjectKeys.open(where, backups)
        _bind(data_dir, store.assign_id())
        return store, "bound"
    if holds_encrypted(data_dir):
        raise ConfigError(
            f"no subject key store in {where}, but this ledger holds encrypted values: its store is elsewhere "
            "(pass --subjects) or lost (restore it from a backup); refusing to go on without it"
        )
    try:
        store = SubjectKeys.create(where, backups)
    except OSError as exc:
        raise StorageError(f"cannot create the subject key store in {where}: {exc.strerror or exc}") from exc
    assert store.id is not None
    _bind(data_dir, store.id)
    return store, "created"


def check_store_of(source: Path, store: SubjectKeys) -> None:
    """A reader's --subjects must be the store a data directory is bound to (a pulled bundle is not bound)."""
    bound = bound_store(source) if source.is_dir() else None
    if bound is not None and store.id != bound:
        raise ConfigError(
            f"the subject key store {store.path} (store {store.id}) is not the store of {source} (store {bound})"
        )


UNATTRIBUTED = "unattributed:"
ERASED_TYPE = "subject.erased"


def unattributed_subject(now_ns: int) -> str:
    """The pseudo-subject of identifying values no user id backs: one per UTC day (docs/format.md §5.2)."""
    import datetime

    day = datetime.datetime.fromtimestamp(now_ns / 1e9, datetime.UTC).date().isoformat()
    return f"{UNATTRIBUTED}{day}"


class Protector:
    """Encrypts the identifying values of a record payload just before the ledger appends it."""

    def __init__(self, store: SubjectKeys, policy: PiiPolicy, origin: str, now_ns: Callable[[], int]) -> None:
        self.store = store
        self.policy = policy
        self.origin = origin
        self.now_ns = now_ns
        self._named: set[tuple[str, str]] = set()

    async def __call__(self, payload: dict[str, Any]) -> dict[str, Any]:
        if payload.get("type") == ERASED_TYPE:
            # Accountability, readable by every auditor forever: who erased whom (an opaque id) and why.
            return payload
        now = self.now_ns()
        found = pii.identifying_values(
            payload,
            party_fields=self.policy.party_fields,
            event_fields=self.policy.event_fields,
            detail_fields=self.policy.detail_fields,
            fallback=unattributed_subject(now),
        )
        if not found:
            return payload
        out = dict(payload)
        erased: list[str] = []
        for path, subject in found:
            value = pii.get_path(payload, path)
            if subject.startswith(UNATTRIBUTED) and path[0] == "target" and path[-1] in _NAME_PATHS:
                if isinstance(value, str):  # admins name users before Keycloak gives them ids
                    subject = await self._named_subject(value, now)
            # Search tokens for real subjects only: a day's pseudo-subject would collect every typed name.
            names = (
                (value,)
                if path[-1] in _NAME_PATHS and isinstance(value, str) and not subject.startswith(UNATTRIBUTED)
                else ()
            )
            key = await self._key(subject, names, now)
            if key is None:
                # SECURITY: an erased subject's data is never written again, not even under a new key.
                pii.delete_path(out, path)
                erased.append(".".join(path))
                continue
            pii.set_path(
                out,
                path,
                pii.encrypt_value(
                    key,
                    secrets.token_bytes(pii.NONCE_BYTES),
                    origin=self.origin,
                    subject=subject,
                    path=".".join(path),
                    value=value,
                ),
            )
        if erased:
            out["details"] = {**(out.get("details") or {}), "erased_fields": erased}
        return out

    async def _key(self, subject: str, names: tuple[str, ...], now: int) -> bytes | None:
        entry = self.store._entries.get(subject)
        if entry is not None and (entry.erased is not None or all((subject, n) in self._named for n in names)):
            return entry.key
        if entry is not None and all(self.store.token(n) in entry.names for n in names):
            self._remember(subject, names)
            return entry.key
        async with self.store._lock:  # one writer of a new key, even when two appends meet
            # A new subject (or name): its key is on stable storage (every copy) before any record uses it.
            key = await asyncio.to_thread(self.store.ensure, subject, names, now)
        if self.store.is_erased(subject):  # erased while the key was being saved: not under that key
            return None
        self._remember(subject, names)
        return key

    async def _named_subject(self, value: str, now: int) -> str:
        found = self.store.named(value)
        if found is not None:
            return found
        async with self.store._lock:
            found = self.store.named(value)
            if found is None:
                found = f"{NAMED}{secrets.token_hex(16)}"
                await asyncio.to_thread(self.store.ensure, found, (value,), now)
        return found

    def _remember(self, subject: str, names: tuple[str, ...]) -> None:
        if len(self._named) > 100_000:  # bounded: a cache of (subject, name) pairs already in the store
            self._named.clear()
        self._named.update((subject, n) for n in names)


Protect = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


async def erase_with(
    append: Callable[[Any], Awaitable[Any]],
    store: SubjectKeys,
    subject: str,
    *,
    by: str,
    reason: str,
    now_ns: Callable[[], int],
) -> dict[str, Any]:
    """Destroy a subject's key (memory first, then every copy), then append the signed `subject.erased` record.

    `append` is the one ledger writer's: the running sidecar's (live erasure over its control
    channel, sidecar/control.py) or a ledger the CLI opened itself. Every record written after the
    `subject.erased` record leaves the subject's values out (docs/format.md §5.2). Redoing it finishes
    an erasure a crash interrupted.
    """
    from sidecar.core.events import EventType, IdentityEvent, Outcome, Party

    known = store._entries.get(subject)
    if known is None:
        raise ConfigError(f"subject {subject!r} is not in the subject key store {store.path}")
    if known.erased is not None and known.seq is not None:
        return {"subject": subject, "seq": known.seq, "already": True, "erased": known.erased}
    async with store._lock:  # no key creation by this process's appender in between
        linked = store.linked(subject)
        tomb = await asyncio.to_thread(store.destroy, subject, by=by, reason=reason, now_ns=now_ns())
        for other in linked:
            await asyncio.to_thread(store.destroy, other, by=by, reason=reason, now_ns=now_ns())
    assert tomb.erased is not None
    details: dict[str, Any] = {"subject": subject, "reason": tomb.erased["reason"]}
    if linked:
        details["pseudonyms"] = linked  # random ids: they name nothing but the keys destroyed with this one
    receipt = await append(
        IdentityEvent(
            EventType.SUBJECT_ERASED,
            Outcome.SUCCEEDED,
            actor=Party(username=tomb.erased["by"], kind="operator"),
            details=details,
        )
    )
    for other in (subject, *linked):
        await asyncio.to_thread(store.recorded, other, receipt.seq)
    return {
        "subject": subject,
        "seq": receipt.seq,
        "already": False,
        "erased": tomb.erased,
        "copies": 1 + len(store.backups),
    }


async def erase_subject(
    data_dir: Path, store: SubjectKeys, subject: str, *, by: str, reason: str, now_ns: Callable[[], int]
) -> dict[str, Any]:
    """Erasure with no sidecar running: the CLI opens the ledger itself (its lock: one writer) and erases.

    The ledger is opened first, so a running sidecar (which holds the ledger's lock) makes this fail
    before anything is destroyed; `sidecar subject erase` asks a running sidecar over its control
    channel instead.
    """
    from sidecar.ledger.writer import Ledger

    if subject not in store._entries:
        raise ConfigError(f"subject {subject!r} is not in the subject key store {store.path}")
    ledger = await Ledger.open(data_dir)
    try:
        return await erase_with(ledger.append, store, subject, by=by, reason=reason, now_ns=now_ns)
    finally:
        await ledger.close()


def reveal(
    rec: dict[str, Any], *, origin: str, store: SubjectKeys | None, erased: frozenset[str] | set[str] = frozenset()
) -> dict[str, Any]:
    """A record as a reader shows it: encrypted values decrypted where the store has the key.

    A value that stays unreadable (an erased subject, or no key store: an auditor's view) is left
    out, so every reader falls back to the opaque ids (the pseudonyms), and the record gains
    `pii`: {"erased": [paths], "encrypted": [paths]} so the reader can say what is missing and why.
    No plaintext of an erased subject can come out of here: its key is gone.
    """
    opened = pii.open_event(
        rec["event"],
        origin=origin,
        key_of=store.key if store is not None else None,
        erased=lambda s: s in erased or (store is not None and store.is_erased(s)),
    )
    # Written after its subject's erasure: the appender left the values out and named them here.
    left_out = (rec["event"].get("details") or {}).get("erased_fields")
    left_out = [str(p) for p in left_out] if isinstance(left_out, list) else []
    if not opened.erased and not opened.sealed and not left_out:
        return rec if opened.event is rec["event"] else {**rec, "event": opened.event}
    event = opened.event
    for path in (*opened.erased, *opened.sealed):
        pii.delete_path(event, path)
    return {
        **rec,
        "event": event,
        "pii": {
            "erased": sorted({*(".".join(p) for p in opened.erased), *left_out}),
            "encrypted": sorted(".".join(p) for p in opened.sealed),
        },
    }


SNAPSHOT_PATH = "snapshot.username"  # the AAD path of a username in a drift state snapshot


def seal_snapshot(store: SubjectKeys, origin: str, state: dict[str, Any], now_ns: int) -> dict[str, Any]:
    """A drift state snapshot with each user's username encrypted under that user's key (erased: left out).

    Snapshots are replicated to the WORM store beside the segments, so they follow the records' rule.
    Blocking (it may create keys): run it off the event loop.
    """
    users: dict[str, Any] = {}
    for uid, user in (state.get("users") or {}).items():
        name = user.get("username")
        if isinstance(name, str):
            key = store.ensure(uid, (name,), now_ns)
            user = {k: v for k, v in user.items() if k != "username"}
            if key is not None:
                user["username"] = pii.encrypt_value(
                    key,
                    secrets.token_bytes(pii.NONCE_BYTES),
                    origin=origin,
                    subject=uid,
                    path=SNAPSHOT_PATH,
                    value=name,
                )
        users[uid] = user
    return {**state, "users": users}


def open_snapshot(store: SubjectKeys | None, origin: str, state: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A loaded snapshot with the usernames decrypted where the store can; returns the user ids it could not."""
    users: dict[str, Any] = {}
    unreadable: list[str] = []
    for uid, user in (state.get("users") or {}).items():
        name = user.get("username")
        if pii.is_encrypted(name) or ("username" not in user):
            key = store.key(name["sub"]) if store is not None and pii.is_encrypted(name) else None
            user = {k: v for k, v in user.items() if k != "username"}
            try:
                if key is None:
                    raise pii.DecryptError("no key")
                user["username"] = pii.decrypt_value(key, name, origin=origin, path=SNAPSHOT_PATH)
            except pii.DecryptError:
                unreadable.append(uid)
        users[uid] = user
    return {**state, "users": users}, unreadable
