"""`sidecar drift` finds a change made around the sidecar, straight on Keycloak's own port."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from sidecar.harness import activity
from sidecar.harness.keycloak import KeycloakServer
from sidecar.harness.realm import REALM
from tests.fixtures_keycloak import ADMIN_PASSWORD, ADMIN_USERNAME
from tests.fixtures_sidecar import SidecarProcess

pytestmark = [pytest.mark.keycloak]


def _drift(keycloak: KeycloakServer, sidecar: SidecarProcess) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SIDECAR_READER_SECRET": REALM.robot.secret or ""}
    return subprocess.run([sys.executable, "-m", "sidecar", "drift", str(sidecar.data_dir), "--keycloak",
                           keycloak.base_url, "--realm", REALM.name, "--client-id", REALM.robot.client_id, "--json"],
                          capture_output=True, text=True, env=env, timeout=120)


async def test_change_around_the_sidecar_is_drift(keycloak: KeycloakServer, sidecar: SidecarProcess) -> None:
    """A role granted through the sidecar is no drift; the same user's role changed directly on Keycloak is, naming user, field and both states."""
    async with activity.Admin(sidecar.base_url, ADMIN_USERNAME, ADMIN_PASSWORD) as admin:
        uid = await admin.user_id(REALM.name, REALM.dave.username)
        await admin.grant_realm_role(REALM.name, uid, await admin.role(REALM.name, "auditor"))
    await asyncio.sleep(0.5)
    clean = await asyncio.to_thread(_drift, keycloak, sidecar)
    report = json.loads(clean.stdout)
    assert report["checked"] >= 1
    assert not [d for d in report["drift"] if d["id"] == uid], clean.stdout
    async with activity.Admin(keycloak.base_url, ADMIN_USERNAME, ADMIN_PASSWORD) as direct:  # bypasses the sidecar
        await direct.grant_realm_role(REALM.name, uid, await direct.role(REALM.name, "operator"))
    dirty = await asyncio.to_thread(_drift, keycloak, sidecar)
    assert dirty.returncode == 1, dirty.stdout + dirty.stderr
    found = [d for d in json.loads(dirty.stdout)["drift"] if d["id"] == uid]
    assert found and found[0]["field"] == "realm_roles" and found[0]["name"] == REALM.dave.username
    assert "operator" in found[0]["live"] and "operator" not in found[0]["expected"]
    async with activity.Admin(sidecar.base_url, ADMIN_USERNAME, ADMIN_PASSWORD) as admin:  # tidy, through the sidecar
        await admin.revoke_realm_role(REALM.name, uid, await admin.role(REALM.name, "operator"))
        await admin.revoke_realm_role(REALM.name, uid, await admin.role(REALM.name, "auditor"))
