"""The subject key store and the writer's encryption seam: identifying values go into records encrypted
under their person's key, erasure destroys the key in every copy and records it, and the ledger verifies
before and after."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest

from sidecar.audit.verifier import load_trust, verify_directory
from sidecar.clock import FixedClock
from sidecar.core import pii
from sidecar.core.events import EventType, IdentityEvent, Outcome, Party
from sidecar.errors import ConfigError, StorageError
from sidecar.ledger.keystore import KeyStore
from sidecar.ledger.subjects import Protector, SubjectKeys, bound_store, erase_subject, file_of, open_for_ledger
from sidecar.ledger.writer import Ledger
from sidecar.policy.schema import PiiPolicy, load_policy
from tests.fixtures_sidecar import ledger_records

ALICE = "0b6c1f0e-1111-4c3a-9d2e-a11ce0000001"
ORIGIN = "subjects.test/ledger"


def _login(user_id: str | None, username: str, ip: str, outcome: Outcome = Outcome.SUCCEEDED) -> IdentityEvent:
    return IdentityEvent(
        EventType.LOGIN_SUCCEEDED if outcome is Outcome.SUCCEEDED else EventType.LOGIN_FAILED,
        outcome,
        realm="acme",
        client="portal",
        source_ip=ip,
        actor=Party(id=user_id, username=username, kind="user"),
        details={"method": "password", "user_agent": "Mozilla/5.0 (alice-laptop)"},
    )


async def _ledger(data: Path, store: SubjectKeys) -> Ledger:
    ledger = await Ledger.open(data, clock=FixedClock())
    ledger.protect = Protector(store, PiiPolicy(), ledger.origin, ledger.clock.now_ns)
    return ledger


def _all_bytes(*roots: Path) -> bytes:
    return b"".join(p.read_bytes() for root in roots for p in sorted(root.rglob("*")) if p.is_file())


async def test_identifying_values_are_encrypted_then_erased_in_every_copy(tmp_path: Path) -> None:
    """Username, IP and user agent are ciphertext under alice's key; after erasure no copy opens them and verify passes."""
    data, keys_dir, backup = tmp_path / "ledger", tmp_path / "subjects", tmp_path / "subjects-backup"
    KeyStore(data).init(ORIGIN)
    store = SubjectKeys.create(keys_dir, (backup,))
    ledger = await _ledger(data, store)
    await ledger.append(_login(ALICE, "alice.wonder", "203.0.113.7"))
    await ledger.close()

    event = ledger_records(data)[-1]["event"]
    assert event["actor"]["id"] == ALICE  # opaque ids stay in the clear
    for path in (("actor", "username"), ("ip",), ("details", "user_agent")):
        enc = pii.get_path(event, path)
        assert pii.is_encrypted(enc) and enc["sub"] == ALICE, path
    opened = pii.open_event(event, origin=ORIGIN, key_of=SubjectKeys.open(backup).key, erased=lambda s: False)
    assert opened.event["actor"]["username"] == "alice.wonder" and opened.event["ip"] == "203.0.113.7"
    assert b"alice.wonder" not in _all_bytes(data) and b"203.0.113.7" not in _all_bytes(data)
    assert store.find("Alice.Wonder") == [ALICE]  # keyed, case-insensitive search by name
    trust = load_trust(data / "trust.json")
    before = verify_directory(data, trust)
    assert before.ok and before.encrypted_records == 1 and before.erased_records == 0

    result = await erase_subject(
        data, store, ALICE, by="dpo", reason="GDPR art. 17 request 42", now_ns=FixedClock().now_ns
    )
    assert not result["already"]
    for copy in (keys_dir, backup):
        reopened = SubjectKeys.open(copy)
        assert reopened.key(ALICE) is None and reopened.is_erased(ALICE) and reopened.find("alice.wonder") == []
        assert b"alice" not in (copy / "keys" / file_of(ALICE)).read_bytes()
    erased = ledger_records(data)[-1]["event"]
    assert erased["type"] == "subject.erased" and erased["details"] == {
        "subject": ALICE,
        "reason": "GDPR art. 17 request 42",
    }
    assert erased["actor"] == {"username": "dpo", "kind": "operator"}
    after = verify_directory(data, trust)
    assert after.ok and after.encrypted_records == 1 and after.erased_records == 1 and after.erased_subjects == 1
    opened = pii.open_event(
        event, origin=ORIGIN, key_of=SubjectKeys.open(keys_dir).key, erased=SubjectKeys.open(keys_dir).is_erased
    )
    assert set(opened.erased) == {("actor", "username"), ("ip",), ("details", "user_agent")}
    again = await erase_subject(
        data, SubjectKeys.open(keys_dir, (backup,)), ALICE, by="dpo", reason="again", now_ns=FixedClock().now_ns
    )
    assert again["already"] and again["seq"] == result["seq"]


async def test_an_erased_subject_is_never_written_again(tmp_path: Path) -> None:
    """After erasure a new event about the subject leaves its identifying values out and names them."""
    data = tmp_path / "ledger"
    KeyStore(data).init(ORIGIN)
    store = SubjectKeys.create(tmp_path / "subjects")
    ledger = await _ledger(data, store)
    await ledger.append(_login(ALICE, "alice", "203.0.113.7"))
    await ledger.close()
    await erase_subject(data, store, ALICE, by="dpo", reason="request 7", now_ns=FixedClock().now_ns)
    ledger = await _ledger(data, store)
    await ledger.append(_login(ALICE, "alice", "203.0.113.7"))
    await ledger.close()
    event = ledger_records(data)[-1]["event"]
    assert event["actor"] == {"id": ALICE, "kind": "user"} and "ip" not in event
    assert sorted(event["details"]["erased_fields"]) == ["actor.username", "details.user_agent", "ip"]


async def test_values_without_a_user_id_go_under_the_days_pseudo_subject(tmp_path: Path) -> None:
    """A failed login that names no user id is encrypted under unattributed:<day>, which can itself be erased."""
    data = tmp_path / "ledger"
    KeyStore(data).init(ORIGIN)
    store = SubjectKeys.create(tmp_path / "subjects")
    ledger = await _ledger(data, store)
    await ledger.append(_login(None, "alice", "198.51.100.9", Outcome.FAILED))
    await ledger.close()
    event = ledger_records(data)[-1]["event"]
    assert event["actor"]["username"]["sub"] == "unattributed:2026-01-01" == event["ip"]["sub"]
    assert store.find("alice") == []  # a day's pseudo-subject collects no search tokens


def test_a_missing_or_unreadable_key_store_is_an_error(tmp_path: Path) -> None:
    """Opening a store that is gone (or a key file that is damaged) raises; it never yields an empty store."""
    with pytest.raises(ConfigError, match="no subject key store"):
        SubjectKeys.open(tmp_path / "gone")
    store = SubjectKeys.create(tmp_path / "s")
    store.ensure(ALICE, ("alice",), 1)
    (tmp_path / "s" / "keys" / file_of(ALICE)).write_bytes(b"{broken")
    with pytest.raises(StorageError, match="unreadable"):
        SubjectKeys.open(tmp_path / "s")
    SubjectKeys.create(tmp_path / "s3")
    with pytest.raises(ConfigError, match="backup"):
        SubjectKeys.open(tmp_path / "s3", (tmp_path / "nobackup",))


async def test_a_key_that_cannot_be_stored_fails_the_append(tmp_path: Path) -> None:
    """When the store cannot take a new subject's key the append fails (503 upstream) and readiness says why; nothing
    is written in clear; once the store is writable again appends and readiness recover."""
    data = tmp_path / "ledger"
    KeyStore(data).init(ORIGIN)
    store = SubjectKeys.create(tmp_path / "subjects")
    ledger = await _ledger(data, store)
    keys = tmp_path / "subjects" / "keys"
    keys.rmdir()
    keys.write_bytes(b"")  # the key directory is gone (a file in its place: writes fail even for root)
    try:
        with pytest.raises(StorageError, match="cannot write"):
            await ledger.append(_login(ALICE, "alice", "203.0.113.7"))
        failed = store.recent_write_error()
        assert failed is not None and "cannot write" in failed  # readiness names it
        keys.unlink()
        keys.mkdir()  # the operator fixed it: the next new key is written and readiness clears
        await ledger.append(_login(ALICE, "alice", "203.0.113.7"))
        assert store.recent_write_error() is None
    finally:
        await ledger.close()
    assert b"alice" not in _all_bytes(data)


def test_the_default_policy_names_the_documented_fields() -> None:
    """The shipped policy encrypts party username and name, the IP, and e-mail, names, IP, user agent in details."""
    p = load_policy().pii
    assert p.party_fields == ("name", "username") and p.event_fields == ("ip",)
    assert {"email", "firstName", "lastName", "ip", "user_agent", "username", "unverified"} <= set(p.detail_fields)


def test_a_drift_record_about_a_username_quotes_it_encrypted() -> None:
    """A state-mismatch on a user's username has its expected and live values under that user's key."""
    event = {
        "type": "drift.detected",
        "outcome": "succeeded",
        "target": {"id": ALICE, "kind": "user", "name": "al"},
        "details": {"kind": "state-mismatch", "field": "username", "expected": "al", "live": "alice2"},
    }
    found = dict(
        pii.identifying_values(
            event,
            party_fields=("name", "username"),
            event_fields=("ip",),
            detail_fields=("email",),
            fallback="unattributed:x",
        )
    )
    assert found == {("target", "name"): ALICE, ("details", "expected"): ALICE, ("details", "live"): ALICE}


async def _one_login(data: Path, store: SubjectKeys) -> None:
    ledger = await _ledger(data, store)
    await ledger.append(_login(ALICE, "alice.wonder", "203.0.113.7"))
    await ledger.close()


async def test_a_ledger_is_bound_to_its_store_created_by_default(tmp_path: Path) -> None:
    """serve's store defaults to <data>/subjects, created and bound on a new ledger; a missing or foreign one stops it."""
    data = tmp_path / "ledger"
    KeyStore(data).init(ORIGIN)
    store, how = open_for_ledger(data, None)
    assert how == "created" and store.path == data / "subjects" and bound_store(data) == store.id is not None
    assert (data / "subjects" / "subjects.json").stat().st_mode & 0o077 == 0
    await _one_login(data, store)
    again, how = open_for_ledger(data, None)
    assert how == "opened" and again.id == store.id and again.key(ALICE) == store.key(ALICE)
    (data / "subjects").rename(tmp_path / "moved")
    with pytest.raises(ConfigError, match="restore that store"):
        open_for_ledger(data, None)
    SubjectKeys.create(data / "subjects")  # an empty store in its place is not this ledger's
    with pytest.raises(ConfigError, match="not this ledger's store"):
        open_for_ledger(data, None)
    moved, how = open_for_ledger(data, tmp_path / "moved")  # the operator points it at its new place
    assert how == "opened" and moved.key(ALICE) is not None


async def test_an_unbound_ledger_with_encrypted_records_needs_its_store(tmp_path: Path) -> None:
    """A ledger from before binding that holds ciphertext never gets a fresh store; its own store is bound (given an id)."""
    data, legacy = tmp_path / "ledger", tmp_path / "legacy"
    KeyStore(data).init(ORIGIN)
    store = SubjectKeys.create(legacy)
    meta = orjson.loads((legacy / "subjects.json").read_bytes())
    del meta["id"]  # a store made before stores had ids
    (legacy / "subjects.json").write_bytes(orjson.dumps(meta))
    await _one_login(data, SubjectKeys.open(legacy))
    with pytest.raises(ConfigError, match="holds encrypted values"):
        open_for_ledger(data, None)
    assert not (data / "subjects").exists() and bound_store(data) is None
    bound, how = open_for_ledger(data, legacy)
    assert how == "bound" and bound.id is not None and bound_store(data) == bound.id == SubjectKeys.open(legacy).id
    assert store.path == bound.path


async def test_readers_asked_to_decrypt_refuse_a_lost_or_foreign_store(tmp_path: Path) -> None:
    """timeline, export and report with a foreign store, or one that lost a live subject's key, exit 2 with the cause."""
    from click.testing import CliRunner

    from sidecar.cli import main

    data = tmp_path / "ledger"
    KeyStore(data).init(ORIGIN)
    store, _ = open_for_ledger(data, None)
    await _one_login(data, store)
    trust = str(data / "trust.json")
    runner = CliRunner()
    ok = runner.invoke(main, ["timeline", str(data), "--trust", trust, "--subjects", str(data / "subjects")])
    assert ok.exit_code == 0 and "alice.wonder" in ok.output, ok.output
    SubjectKeys.create(tmp_path / "foreign")
    lost = tmp_path / "lost"
    shutil.copytree(data / "subjects", lost)
    (lost / "keys" / file_of(ALICE)).unlink()  # a restore that missed alice's key
    for store_dir, why in ((tmp_path / "foreign", "is not the store of"), (lost, "cannot open")):
        for args in (
            ["timeline", str(data), "--trust", trust],
            ["export", str(data), "--trust", trust, "--out", str(tmp_path / "x.jsonl")],
            ["report", str(data), "--trust", trust, "--out", str(tmp_path / "r.html")],
        ):
            result = runner.invoke(main, [*args, "--subjects", str(store_dir)])
            assert result.exit_code == 2 and why in result.output, (args, result.output)
            assert "alice.wonder" not in result.output


async def test_the_control_channel_erases_for_the_operator_only(tmp_path: Path) -> None:
    """The sidecar's unix socket (0600) takes an erasure request and answers its result; bad bodies get 400."""
    from sidecar import control

    data = tmp_path / "d"
    data.mkdir()
    calls: list[tuple[str, str, str]] = []

    async def erase(subject: str, by: str, reason: str) -> dict[str, object]:
        calls.append((subject, by, reason))
        if subject == "nobody":
            raise ConfigError("subject 'nobody' is not in the subject key store")
        return {"subject": subject, "seq": 7, "already": False, "copies": 2}

    assert await control.request_erase(data, ALICE, "dpo", "r") is None  # no sidecar: the CLI erases itself
    server = control.serve_control(data, erase)
    await server.__anext__()
    try:
        sock = control.socket_path(data)
        assert sock.stat().st_mode & 0o777 == 0o600
        answer = await control.request_erase(data, ALICE, "dpo", "request 9")
        assert answer == {"subject": ALICE, "seq": 7, "already": False, "copies": 2, "via": "sidecar"}
        with pytest.raises(ConfigError, match="not in the subject key store"):
            await control.request_erase(data, "nobody", "dpo", "r")
        with pytest.raises(StorageError, match="400"):
            await control.request_erase(data, ALICE, "dpo", "x" * 5000)
        assert calls == [(ALICE, "dpo", "request 9"), ("nobody", "dpo", "r")]
    finally:
        with pytest.raises(StopAsyncIteration):
            await server.__anext__()
    assert not control.socket_path(data).exists()


async def test_a_name_written_before_its_user_had_an_id_is_erased_with_the_user(tmp_path: Path) -> None:
    """A create's intent names the user under a name: pseudo-subject, which erasing the user destroys and records."""
    from sidecar.audit.pseudonyms import Revealer

    data = tmp_path / "ledger"
    KeyStore(data).init(ORIGIN)
    store, _ = open_for_ledger(data, None)
    ledger = await _ledger(data, store)
    admin = Party(id="admin-1", username="admin", kind="user")
    await ledger.append(
        IdentityEvent(
            EventType.USER_CREATED,
            Outcome.PENDING,
            actor=admin,
            target=Party(username="erin.new", kind="user"),
            details={"phase": "intent"},
        )
    )
    await ledger.append(
        IdentityEvent(
            EventType.USER_CREATED,
            Outcome.SUCCEEDED,
            actor=admin,
            target=Party(id=ALICE, username="erin.new", kind="user"),
        )
    )
    await ledger.close()
    intent, done = ledger_records(data, decrypt=False)[-2:]
    named = intent["event"]["target"]["username"]["sub"]
    assert named.startswith("name:") and done["event"]["target"]["username"]["sub"] == ALICE
    assert store.find("erin.new") == [ALICE]  # a name pseudo-subject is never a search result
    result = await erase_subject(data, store, ALICE, by="dpo", reason="request 11", now_ns=FixedClock().now_ns)
    assert ledger_records(data)[-1]["event"]["details"]["pseudonyms"] == [named] and result["seq"] == 4
    reader = Revealer(data, SubjectKeys.open(data / "subjects"))
    shown = [reader(r) for r in ledger_records(data, decrypt=False)]
    assert all("erin.new" not in str(r) for r in shown)
    assert shown[-3]["pii"]["erased"] == ["target.username"]
    report = verify_directory(data, load_trust(data / "trust.json"))
    assert report.ok and report.erased_subjects == 2 and report.erased_records == 2
