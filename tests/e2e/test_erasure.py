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

from sidecar.harness import activity
from sidecar.harness.keycloak import KeycloakServer, free_port
from sidecar.harness.realm import REALM
from sidecar.harness.versitygw import versitygw_bucket
from tests.fixtures_keycloak import ADMIN_PASSWORD, ADMIN_USERNAME
from tests.fixtures_sidecar import ledger_records, sidecar_process

pytestmark = [pytest.mark.keycloak]

USERNAME = "erin-erasure-q7x"
EMAIL = "erin.erasure-q7x@example.test"
PASSWORD = "Erin-pw-5150!"
IP = "127.0.0.23"
ORIGIN = "erasure.test/keycloak-ledger"


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar", *args], capture_output=True, text=True, timeout=120, env=env
    )


async def _grant(base: str, username: str, password: str) -> int:
    """A password grant from the person's own address."""
    connector = aiohttp.TCPConnector(local_addr=(IP, 0))
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
    return [(p, p.read_bytes()) for root in roots for p in sorted(root.rglob("*")) if p.is_file()]


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
        assert _cli("subject", "init", "--subjects", str(subjects), "--subjects-backup", str(backup)).returncode == 0
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
            records = ledger_records(data)
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
    """serve --subjects on a missing store exits with a clear error and writes no record in the clear."""
    port = free_port()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sidecar",
            "serve",
            "--init",
            "--upstream",
            keycloak.base_url,
            "--data",
            str(tmp_path / "ledger"),
            "--listen",
            f"127.0.0.1:{port}",
            "--no-drift",
            "--subjects",
            str(tmp_path / "lost"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "no subject key store" in proc.stderr and "refusing to go on without it" in proc.stderr, proc.stderr
    assert not list((tmp_path / "ledger").glob("segments/*.seg"))
