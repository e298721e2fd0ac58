"""Erasure end to end (issue 17): a sidecar with a subject key store in front of the real Keycloak, replicating
to versitygw (Object Lock); after `sidecar subject erase`, no byte it or its readers wrote holds the person's
username, e-mail or IP, and the ledger verifies before and after.

A second sidecar process (not the session one) so its ledger, key store and logs hold this test's data only.
The person is created directly on Keycloak (setup) and deleted there at the end; their traffic goes through
the sidecar from a loopback address of its own (127.0.0.23), so that IP identifies them alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from sidecar.core.events import EventType, IdentityEvent, Outcome, Party
from sidecar.harness import activity
from sidecar.harness.keycloak import KeycloakServer, free_port
from sidecar.harness.realm import REALM
from sidecar.harness.versitygw import versitygw_bucket
from tests.fixtures_keycloak import ADMIN_PASSWORD, ADMIN_USERNAME
from tests.fixtures_sidecar import SidecarProcess, ledger_records, sidecar_process

pytestmark = [pytest.mark.keycloak]

USERNAME = "erin-erasure-q7x"
EMAIL = "erin.erasure-q7x@example.test"
PASSWORD = "Erin-pw-5150!"
IP = "127.0.0.23"
ORIGIN = "erasure.test/keycloak-ledger"
LIVE_USERNAME = "lena-live-erase-k4"
LIVE_EMAIL = "lena.live-k4@example.test"
LIVE_PASSWORD = "Lena-pw-8086!"
LIVE_IP = "127.66.0.17"


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar", *args], capture_output=True, text=True, timeout=120, env=env
    )


async def _grant(base: str, username: str, password: str, ip: str = IP) -> int:
    """A password grant from the person's own address."""
    connector = aiohttp.TCPConnector(local_addr=(ip, 0))
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.post(
            f"{base}/realms/{REALM.name}/protocol/openid-connect/token",
            data={
                "grant_type": "password",
                "client_id": REALM.app.client_id,
                "client_secret": REALM.app.secret or "",
                "username": username,
                "password": password,
                "scope": "openid",
            },
        ) as resp:
            await resp.read()
            return resp.status


def _every_byte(*roots: Path) -> list[tuple[Path, bytes]]:
    """Every file under each root (a root that is a file, such as a log, is itself included)."""
    files = [p for root in roots for p in ([root] if root.is_file() else sorted(root.rglob("*")))]
    return [(p, p.read_bytes()) for p in files if p.is_file()]


async def test_erasure_leaves_no_identifying_byte_and_the_ledger_verifies(
    keycloak: KeycloakServer, tmp_path: Path, secrets_seen: set[str]
) -> None:
    """After erasure no segment, replica, index, snapshot, key store, export, report or log holds the username,
    e-mail or IP; verify passes before and after; timeline and report show the erasure."""
    secrets_seen.add(PASSWORD)
    data, subjects, backup, out = (
        tmp_path / "ledger",
        tmp_path / "subjects",
        tmp_path / "subjects-bak",
        tmp_path / "out",
    )
    out.mkdir()
    async with activity.Admin(keycloak.base_url, ADMIN_USERNAME, ADMIN_PASSWORD) as admin:  # setup, direct
        status, _ = await admin.call(
            "POST",
            f"{REALM.name}/users",
            {
                "username": USERNAME,
                "email": EMAIL,
                "firstName": "Erin",
                "lastName": "Erasure-q7x",
                "enabled": True,
                "emailVerified": True,
                "credentials": [{"type": "password", "value": PASSWORD, "temporary": False}],
            },
        )
        assert status == 201, status
        uid = await admin.user_id(REALM.name, USERNAME)
    try:
        with versitygw_bucket(tmp_path / "versitygw") as bucket:
            port = free_port()
            env = {**os.environ, **bucket.env(), "SIDECAR_READER_SECRET": REALM.robot.secret or ""}
            args = [
                "--init",
                "--origin",
                ORIGIN,
                "--upstream",
                keycloak.base_url,
                "--data",
                str(data),
                "--store",
                bucket.store_url(),
                "--listen",
                f"127.0.0.1:{port}",
                "--log-level",
                "DEBUG",
                "--log-format",
                "json",
                "--subjects",
                str(subjects),
                "--subjects-backup",
                str(backup),
                "--reader-realm",
                REALM.name,
                "--reader-client-id",
                REALM.robot.client_id,
                "--drift-sweep",
                "600",
            ]
            base = f"http://127.0.0.1:{port}"
            with sidecar_process(args, port, tmp_path / "sidecar-1.log", env):
                assert await _grant(base, USERNAME, "wrong-" + PASSWORD) == 400  # invalid_grant
                assert await _grant(base, USERNAME, PASSWORD) == 200
                assert await _grant(base, EMAIL, PASSWORD) == 200  # Keycloak takes the e-mail as a login name
                deadline = time.monotonic() + 30
                while not any(r["event"]["type"] == "state.snapshot" for r in ledger_records(data)):
                    assert time.monotonic() < deadline, "no state.snapshot from the drift monitor"
                    await asyncio.sleep(0.2)
            assert (data / "subjects-bound.json").exists() and (backup / "subjects.json").exists()  # made by serve
            records = ledger_records(data, decrypt=False)
            mine = [r for r in records if (r["event"].get("actor") or {}).get("id") == uid]
            assert len(mine) >= 2 and all(r["event"]["ip"]["sub"] == uid for r in mine)  # encrypted under uid
            trust = str(data / "trust.json")
            before = _cli("verify", str(data), "--trust", trust, "--json")
            assert before.returncode == 0, before.stdout + before.stderr
            assert json.loads(before.stdout)["encrypted_records"] >= 3
            seen = _cli("timeline", str(data), "--trust", trust, "--subjects", str(subjects), "--actor", USERNAME)
            assert seen.returncode == 0 and seen.stdout.count(USERNAME) >= 1 and IP in seen.stdout, seen.stdout
            blind = _cli("timeline", str(data), "--trust", trust)  # an auditor without the key store
            assert blind.returncode == 0 and USERNAME not in blind.stdout and uid in blind.stdout

            erased = _cli(
                "subject",
                "erase",
                uid,
                "--reason",
                "GDPR art. 17 request E-1",
                "--by",
                "dpo",
                "--data",
                str(data),
                "--subjects",
                str(subjects),
                "--subjects-backup",
                str(backup),
                "--json",
            )
            assert erased.returncode == 0, erased.stderr
            pulled = tmp_path / "pulled"
            with sidecar_process(args, port, tmp_path / "sidecar-2.log", env):  # replicates the erasure record
                deadline = time.monotonic() + 60
                while True:
                    replica = _cli("pull", bucket.store_url(), "--out", str(pulled), env=env)
                    assert replica.returncode == 0, replica.stderr
                    if any(r["event"]["type"] == "subject.erased" for r in ledger_records(pulled)):
                        break
                    assert time.monotonic() < deadline, "the erasure record did not reach versitygw"
                    await asyncio.sleep(0.5)
            after = _cli("verify", str(data), "--trust", trust, "--json")
            report = json.loads(after.stdout)
            assert after.returncode == 0 and report["erased_subjects"] == 1 and report["erased_records"] >= len(mine)
            assert _cli("verify", str(pulled), "--trust", trust).returncode == 0

            timeline = _cli("timeline", str(data), "--trust", trust, "--subjects", str(subjects))
            assert timeline.returncode == 0 and "subject.erased succeeded: dpo" in timeline.stdout
            assert f"subject={uid}" in timeline.stdout and "erased: actor.username" in timeline.stdout
            assert (
                _cli("timeline", str(data), "--trust", trust, "--subjects", str(subjects), "--actor", USERNAME).stdout
                == ""
            )  # the keyed index forgot the name
            for fmt in ("jsonl", "ocsf", "ecs"):
                done = _cli(
                    "export",
                    str(data),
                    "--trust",
                    trust,
                    "--subjects",
                    str(subjects),
                    "--format",
                    fmt,
                    "--out",
                    str(out / f"export.{fmt}"),
                )
                assert done.returncode == 0, done.stderr
            assert (
                _cli(
                    "report",
                    str(data),
                    "--trust",
                    trust,
                    "--subjects",
                    str(subjects),
                    "--out",
                    str(out / "report.html"),
                ).returncode
                == 0
            )
            html = (out / "report.html").read_text()
            assert "Erasures (1)" in html and uid in html and "GDPR art. 17 request E-1" in html
            (out / "timeline.txt").write_text(timeline.stdout)
            listed = _cli("subject", "list", "--subjects", str(backup), "--json")
            assert any(row["subject"] == uid and row.get("erased") for row in json.loads(listed.stdout))

            every = _every_byte(
                data,
                subjects,
                backup,
                out,
                pulled,
                tmp_path / "versitygw",
                tmp_path / "sidecar-1.log",
                tmp_path / "sidecar-2.log",
            )
            assert len(every) > 10 and any(p.suffix == ".seg" for p, _ in every)
            for needle in (USERNAME, EMAIL, IP, "Erasure-q7x"):
                for variant in {needle, needle.lower(), needle.upper()}:
                    hits = [str(p) for p, b in every if variant.encode() in b]
                    assert not hits, f"{variant!r} found after erasure in {hits}"
    finally:
        async with activity.Admin(keycloak.base_url, ADMIN_USERNAME, ADMIN_PASSWORD) as admin:
            await admin.call("DELETE", f"{REALM.name}/users/{uid}")


def test_a_lost_key_store_stops_serve_with_a_clear_error(keycloak: KeycloakServer, tmp_path: Path) -> None:
    """serve on a ledger whose bound key store is gone exits with a clear error and writes nothing (no plaintext)."""
    from sidecar.ledger.keystore import KeyStore
    from sidecar.ledger.subjects import Protector, open_for_ledger
    from sidecar.ledger.writer import Ledger
    from sidecar.policy.schema import PiiPolicy

    data = tmp_path / "ledger"
    KeyStore(data).init(ORIGIN)
    store, _ = open_for_ledger(data, None)

    async def one_record() -> None:
        ledger = await Ledger.open(data)
        ledger.protect = Protector(store, PiiPolicy(), ledger.origin, ledger.clock.now_ns)
        await ledger.append(
            IdentityEvent(
                EventType.LOGIN_SUCCEEDED, Outcome.SUCCEEDED, actor=Party(id="u-1", username=USERNAME, kind="user")
            )
        )
        await ledger.close()

    asyncio.run(one_record())
    before = {p: p.read_bytes() for p in (data / "segments").glob("*.seg")}
    (data / "subjects").rename(tmp_path / "lost")
    port = free_port()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sidecar",
            "serve",
            "--upstream",
            keycloak.base_url,
            "--data",
            str(data),
            "--listen",
            f"127.0.0.1:{port}",
            "--no-drift",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "no subject key store" in proc.stderr and "refusing to go on without it" in proc.stderr, proc.stderr
    assert {p: p.read_bytes() for p in (data / "segments").glob("*.seg")} == before
    assert not (data / "subjects").exists()  # never a fresh, empty store in its place


def _under(event: object, subject: str) -> bool:
    """Whether any value of the event is encrypted under `subject`'s key."""
    if isinstance(event, dict):
        return (event.get("kc-enc") == 1 and event.get("sub") == subject) or any(
            _under(v, subject) for v in event.values()
        )
    return isinstance(event, list) and any(_under(v, subject) for v in event)


async def _wait_login(sidecar: SidecarProcess, uid: str, after: int) -> None:
    deadline = time.monotonic() + 30
    while not any(
        r["seq"] > after
        and r["event"]["type"] == "login.succeeded"
        and (r["event"].get("actor") or {}).get("id") == uid
        for r in ledger_records(sidecar.data_dir, decrypt=False)
    ):
        assert time.monotonic() < deadline, "no login.succeeded record"
        await asyncio.sleep(0.2)


async def test_live_erasure_through_the_running_sidecar(
    keycloak: KeycloakServer, sidecar: SidecarProcess, secrets_seen: set[str], tmp_path: Path
) -> None:
    """With the session sidecar running (default key store), `subject erase` is done by it over its control socket;
    later events of the subject carry no value of theirs; no byte anywhere holds the name, e-mail or IP; verify passes."""
    secrets_seen.add(LIVE_PASSWORD)
    data, trust = sidecar.data_dir, str(sidecar.trust)
    async with activity.Admin(sidecar.base_url, ADMIN_USERNAME, ADMIN_PASSWORD) as admin:  # recorded
        status, _ = await admin.call(
            "POST",
            f"{REALM.name}/users",
            {
                "username": LIVE_USERNAME,
                "email": LIVE_EMAIL,
                "firstName": "Lena",
                "lastName": "Live-k4",
                "enabled": True,
                "emailVerified": True,
                "credentials": [{"type": "password", "value": LIVE_PASSWORD, "temporary": False}],
            },
        )
        assert status == 201, status
        uid = await admin.user_id(REALM.name, LIVE_USERNAME)
        try:
            assert await _grant(sidecar.base_url, LIVE_USERNAME, LIVE_PASSWORD, LIVE_IP) == 200
            await _wait_login(sidecar, uid, 0)
            raw = ledger_records(data, decrypt=False)
            mine = [r for r in raw if _under(r["event"], uid)]
            assert len(mine) >= 2  # the creation and the login, encrypted by default (no --subjects given)
            segments = b"".join(p.read_bytes() for p in sorted((data / "segments").glob("*.seg")))
            assert LIVE_USERNAME.encode() not in segments and LIVE_IP.encode() not in segments
            seen = ledger_records(data)  # the investigator's view: decrypted with <data>/subjects
            assert any((r["event"].get("actor") or {}).get("username") == LIVE_USERNAME for r in seen)

            erased = _cli(
                "subject",
                "erase",
                uid,
                "--reason",
                "GDPR art. 17 request L-1",
                "--by",
                "dpo",
                "--data",
                str(data),
                "--json",
            )
            assert erased.returncode == 0, erased.stdout + erased.stderr
            result = json.loads(erased.stdout)
            assert result["via"] == "sidecar" and not result["already"], result
            at = int(result["seq"])
            assert await _grant(sidecar.base_url, LIVE_USERNAME, LIVE_PASSWORD, LIVE_IP) == 200  # after erasure
            await _wait_login(sidecar, uid, at)
        finally:
            assert (await admin.call("DELETE", f"{REALM.name}/users/{uid}"))[0] == 204
    raw = ledger_records(data, decrypt=False)
    later = [r for r in raw if r["seq"] > at]
    assert not [r["seq"] for r in later if _under(r["event"], uid)], "a value under the destroyed key after erasure"
    login = next(
        r for r in later if r["event"]["type"] == "login.succeeded" and (r["event"].get("actor") or {}).get("id") == uid
    )
    assert "actor.username" in login["event"]["details"]["erased_fields"] and "ip" not in login["event"]
    report = _cli("verify", str(data), "--trust", trust, "--json")
    assert report.returncode in (0, 1), report.stderr  # the session ledger may end in an unsigned tail mid-append
    counts = json.loads(report.stdout)
    assert counts["erased_subjects"] >= 1 and counts["erased_records"] >= len(mine), counts
    timeline = _cli("timeline", str(data), "--trust", trust, "--subjects", str(data / "subjects"))
    assert timeline.returncode == 0, timeline.stderr
    assert f"subject={uid}" in timeline.stdout and "erased: actor.username" in timeline.stdout
    assert LIVE_USERNAME not in timeline.stdout
    subjects = str(data / "subjects")
    exported = _cli("export", str(data), "--trust", trust, "--subjects", subjects, "--out", str(tmp_path / "x.jsonl"))
    assert exported.returncode == 0, exported.stderr
    drift = _cli(
        "drift",
        str(data),
        "--trust",
        trust,
        "--subjects",
        subjects,
        "--keycloak",
        keycloak.base_url,
        "--realm",
        REALM.name,
        "--client-id",
        REALM.robot.client_id,
        "--json",
        env={**os.environ, "SIDECAR_READER_SECRET": REALM.robot.secret or ""},
    )
    assert drift.returncode in (0, 1), drift.stdout + drift.stderr
    gone = json.loads(drift.stdout)["erased"]
    assert gone["records"] >= 2 and "actor.username" in gone["fields"] and "target.username" in gone["fields"], gone
    deadline = time.monotonic() + 30  # the replica catches up with the erasure record
    while max((int(p.name.split("-")[0]) for p in (sidecar.store_dir / "checkpoints").glob("*.note")), default=0) <= at:
        assert time.monotonic() < deadline, "the erasure record did not reach the store"
        await asyncio.sleep(0.3)
    (tmp_path / "drift.json").write_text(drift.stdout)
    every = _every_byte(data, sidecar.store_dir, sidecar.log_file, tmp_path)
    for needle in (LIVE_USERNAME, LIVE_EMAIL, LIVE_IP, "Live-k4"):
        hits = [str(p) for p, b in every if needle.encode() in b or needle.lower().encode() in b]
        assert not hits, f"{needle!r} found after a live erasure in {hits}"
