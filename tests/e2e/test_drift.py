"""Drift on the real Keycloak: the monitor inside `serve` and the one-shot `sidecar drift` find changes made around the sidecar.

The session's sidecar runs the monitor (event poll 10 s, sweep every 15 s in tests). A role granted
straight on Keycloak's own port must become a signed `drift.detected` record of kind
`unrecorded-change` (from Keycloak's admin-event store) and of kind `state-mismatch` (from the
sweep); the one-shot check exits 1 on it, 2 when it cannot check, never a false "no drift".
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sidecar.harness import activity
from sidecar.harness.keycloak import KeycloakServer, free_port
from sidecar.harness.realm import REALM
from tests.fixtures_keycloak import ADMIN_PASSWORD, ADMIN_USERNAME
from tests.fixtures_sidecar import SidecarProcess

pytestmark = [pytest.mark.keycloak]


def _drift(source: Path, base_url: str, secret: str | None = None, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SIDECAR_READER_SECRET": secret if secret is not None else REALM.robot.secret or ""}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "sidecar",
            "drift",
            str(source),
            "--keycloak",
            base_url,
            "--realm",
            REALM.name,
            "--client-id",
            REALM.robot.client_id,
            "--json",
            "--trust",
            str(source / "trust.json"),
            *extra,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )


async def _wait_record(sidecar: SidecarProcess, pred: Any, what: str, limit_s: float = 90.0) -> dict[str, Any]:
    deadline = time.monotonic() + limit_s
    while True:
        for rec in reversed(sidecar.records()):
            if pred(rec["event"]):
                found: dict[str, Any] = rec
                return found
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} record within {limit_s:.0f} s")
        await asyncio.sleep(0.5)


async def test_monitor_records_a_bypassing_change(keycloak: KeycloakServer, sidecar: SidecarProcess) -> None:
    """A grant made directly on Keycloak becomes an unrecorded-change and a state-mismatch drift record; the one-shot exits 1."""
    await _wait_record(
        sidecar, lambda e: e["type"] == "state.snapshot" and e.get("realm") == REALM.name, "state.snapshot"
    )
    async with activity.Admin(sidecar.base_url, ADMIN_USERNAME, ADMIN_PASSWORD) as admin:
        uid = await admin.user_id(REALM.name, REALM.dave.username)
        await admin.grant_realm_role(REALM.name, uid, await admin.role(REALM.name, "auditor"))
    clean = await asyncio.to_thread(_drift, sidecar.data_dir, keycloak.base_url)
    assert clean.returncode in (0, 1), clean.stdout + clean.stderr
    report = json.loads(clean.stdout)
    assert report["checked"] >= 1 and report["baseline"].startswith("state.snapshot")
    assert not [d for d in report["drift"] if d.get("id") == uid], clean.stdout
    before = time.time_ns()
    async with activity.Admin(keycloak.base_url, ADMIN_USERNAME, ADMIN_PASSWORD) as direct:  # bypasses the sidecar
        await direct.grant_realm_role(REALM.name, uid, await direct.role(REALM.name, "operator"))
    try:
        event = await _wait_record(
            sidecar,
            lambda e: (
                e["type"] == "drift.detected"
                and e["details"].get("kind") == "unrecorded-change"
                and uid in str(e["details"].get("keycloak_event", {}).get("resource_path"))
            ),
            "unrecorded-change",
        )
        d = event["event"]["details"]
        assert int(event["ts"]) > before and d["keycloak_event"]["operation"] == "CREATE"
        assert d["keycloak_event"]["resource_type"] == "REALM_ROLE_MAPPING" and event["event"]["target"]["id"] == uid
        state = await _wait_record(
            sidecar,
            lambda e: (
                e["type"] == "drift.detected"
                and e["details"].get("kind") == "state-mismatch"
                and e.get("target", {}).get("id") == uid
                and "operator" in e["details"].get("live", [])
            ),
            "state-mismatch",
        )
        sd = state["event"]["details"]
        assert sd["field"] == "realm_roles" and "operator" not in sd["expected"]
        assert state["event"]["target"]["name"] == REALM.dave.username and sd["first_seen_ns"].isdigit()
        # names are encrypted by default: the investigator's drift check decrypts them with the ledger's store
        dirty = await asyncio.to_thread(
            _drift, sidecar.data_dir, keycloak.base_url, None, "--subjects", str(sidecar.data_dir / "subjects")
        )
        assert dirty.returncode == 1, dirty.stdout + dirty.stderr
        found = [d for d in json.loads(dirty.stdout)["drift"] if d.get("id") == uid]
        assert found and found[0]["field"] == "realm_roles" and found[0]["name"] == REALM.dave.username
        assert "operator" in found[0]["live"] and "operator" not in found[0]["expected"]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{sidecar.base_url}/.sidecar/metrics") as resp:
                metrics = await resp.text()
        assert 'sidecar_drift_detected_total{kind="unrecorded-change"}' in metrics
    finally:
        async with activity.Admin(sidecar.base_url, ADMIN_USERNAME, ADMIN_PASSWORD) as admin:  # tidy, through us
            await admin.revoke_realm_role(REALM.name, uid, await admin.role(REALM.name, "operator"))
            await admin.revoke_realm_role(REALM.name, uid, await admin.role(REALM.name, "auditor"))


async def test_one_shot_cannot_check_is_exit_2(
    keycloak: KeycloakServer, sidecar: SidecarProcess, tmp_path: Path
) -> None:
    """A wrong secret, an unreachable Keycloak, or a ledger with nothing to compare against is exit 2, never 'no drift'."""
    wrong = await asyncio.to_thread(_drift, sidecar.data_dir, keycloak.base_url, "not-the-secret")
    assert wrong.returncode == 2 and json.loads(wrong.stdout)["verdict"] == "could-not-check", wrong.stdout
    dead = await asyncio.to_thread(_drift, sidecar.data_dir, f"http://127.0.0.1:{free_port()}")
    assert dead.returncode == 2, dead.stdout + dead.stderr
    from sidecar.ledger.keystore import KeyStore
    from sidecar.ledger.writer import Ledger

    empty = tmp_path / "ledger"
    KeyStore(empty).init("empty.test/ledger")
    await (await Ledger.open(empty)).close()  # only ledger.started: no snapshot, no recorded state
    nothing = await asyncio.to_thread(_drift, empty, keycloak.base_url)
    assert nothing.returncode == 2 and "nothing to compare against" in nothing.stdout, nothing.stdout
