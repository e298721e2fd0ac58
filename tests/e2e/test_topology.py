"""compose/'s topology as processes on loopback: PostgreSQL, Keycloak in production mode
(`kc.sh build` then `start --optimized`, configured by compose/keycloak/keycloak.conf), versitygw
with an Object Lock bucket (default COMPLIANCE retention), and the sidecar installed from the built
wheel running `serve --config compose/sidecar.toml`, the command compose runs. Only addresses differ
from compose, and they are passed the way compose passes per-deployment values (KC_* and SIDECAR_*
environment variables); the test pins which ones. Through the sidecar: a login, a role grant, an
auditor pull and verify; then Keycloak restarts and its state and the ledger survive.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from sidecar.config import BY_KEY, read_file
from sidecar.harness import activity
from sidecar.harness.keycloak import ensure_distribution, free_port
from sidecar.harness.keycloak_prod import ProductionKeycloak
from sidecar.harness.postgres import PostgresCluster
from sidecar.harness.realm import REALM
from sidecar.harness.versitygw import VersityGW
from tests.fixtures_sidecar import ledger_records, wait_http
from tests.fixtures_wheel import WheelInstall

pytestmark = [pytest.mark.keycloak, pytest.mark.s3]

ROOT = Path(__file__).resolve().parents[2]
SIDECAR_TOML = ROOT / "compose" / "sidecar.toml"
KEYCLOAK_CONF = ROOT / "compose" / "keycloak" / "keycloak.conf"
# What differs from compose: where things are. Everything else comes from the two shared files.
SIDECAR_OVERRIDES = {"upstream", "data", "listen", "store", "tls_cert", "tls_key"}
KEYCLOAK_ENV = {
    "KC_HOSTNAME",
    "KC_DB_URL",
    "KC_DB_USERNAME",
    "KC_PROXY_TRUSTED_ADDRESSES",
    "KC_HTTP_HOST",
    "KC_HTTP_PORT",
    "KC_HTTP_MANAGEMENT_PORT",
}
ADMIN = "admin"
AUDITOR, AUDIT_CLIENT = "audrey", "ledger-audit-cli"  # as in docs/operations.md §7.3


class Clock:
    """Named phase timings, printed at the end (run with -s to see them)."""

    def __init__(self) -> None:
        self.began = time.monotonic()
        self.last = self.began
        self.phases: dict[str, float] = {}

    def mark(self, name: str) -> None:
        now = time.monotonic()
        self.phases[name] = round(now - self.last, 1)
        self.last = now

    def report(self) -> str:
        total = round(time.monotonic() - self.began, 1)
        return "topology timings (s): " + ", ".join(f"{k} {v}" for k, v in self.phases.items()) + f"; total {total}"


async def _readiness(base: str) -> tuple[int, dict[str, Any]]:
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{base}/.sidecar/health/ready") as resp:
            return resp.status, await resp.json()
    except aiohttp.ClientError:
        return 0, {}


async def _admin_steps(base: str, password: str, auditor_password: str) -> dict[str, Any]:
    """docs/operations.md §7.3 in master (the compose auditor_realm): the ledger-auditor role, a direct-grant
    client ledger-audit-cli and an auditor user holding the role; then a realm role grant in the test realm."""
    async with activity.Admin(base, ADMIN, password) as admin:
        status, _ = await admin.call("POST", "master/roles", {"name": "ledger-auditor"})
        assert status == 201, status
        # admin-cli hands out lightweight access tokens (no realm_access claim): auditors get a client of their own.
        status, _ = await admin.call(
            "POST",
            "master/clients",
            {
                "clientId": AUDIT_CLIENT,
                "publicClient": True,
                "directAccessGrantsEnabled": True,
                "standardFlowEnabled": False,
            },
        )
        assert status == 201, status
        status, _ = await admin.call(
            "POST",
            "master/users",
            {
                "username": AUDITOR,
                "enabled": True,
                "email": f"{AUDITOR}@example.com",
                "emailVerified": True,
                "firstName": "Audrey",
                "lastName": "Auditor",
                "credentials": [{"type": "password", "value": auditor_password, "temporary": False}],
            },
        )
        assert status == 201, status
        auditor_id = await admin.user_id("master", AUDITOR)
        assert await admin.grant_realm_role("master", auditor_id, await admin.role("master", "ledger-auditor")) == 204
        alice = await admin.user_id(REALM.name, REALM.alice.username)
        auditor = await admin.role(REALM.name, "auditor")
        assert await admin.grant_realm_role(REALM.name, alice, auditor) == 204
        return {"alice": alice, "role": auditor}


async def _alice_roles(base: str, password: str, alice: str) -> list[str]:
    async with activity.Admin(base, ADMIN, password) as admin:
        status, mappings = await admin.call("GET", f"{REALM.name}/users/{alice}/role-mappings/realm")
        assert status == 200
        return sorted(m["name"] for m in mappings)


@pytest.mark.timeout(900)  # four servers and a Keycloak build on 2 shared cores; each wait has its own bound
def test_compose_topology_as_processes(
    wheel_install: WheelInstall, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Postgres, production Keycloak, versitygw and the wheel's sidecar with compose's own config files: login, role grant, auditor pull + verify, Keycloak restart keeps state and ledger."""
    clock = Clock()
    request.addfinalizer(lambda: print(clock.report()))  # also when a step fails (run with -s to see it)
    dist = ensure_distribution()
    ports = {name: free_port() for name in ("sidecar", "kc_http", "kc_mgmt")}
    assert len(set(ports.values())) == 3
    base = f"http://127.0.0.1:{ports['sidecar']}"
    admin_password, db_password = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    data, bundle = tmp_path / "ledger", tmp_path / "bundle"
    shared = read_file(SIDECAR_TOML)
    assert shared["init"] is True and shared["auditor_realm"] == "master"

    with PostgresCluster() as pg, VersityGW(tmp_path / "worm") as worm:
        pg.create_database("keycloak", "keycloak", db_password)
        clock.mark("postgres")
        bucket = worm.create_bucket("ledger", retention_days=1)  # Object Lock + default COMPLIANCE retention
        lock = worm.client()
        try:
            rule = lock.get_object_lock_configuration(Bucket="ledger")["ObjectLockConfiguration"]
        finally:
            lock.close()
        assert rule["ObjectLockEnabled"] == "Enabled" and rule["Rule"]["DefaultRetention"]["Mode"] == "COMPLIANCE"
        clock.mark("versitygw")

        kc = ProductionKeycloak(
            dist,
            tmp_path / "kc",
            conf_file=KEYCLOAK_CONF,
            http_port=ports["kc_http"],
            management_port=ports["kc_mgmt"],
            public_url=base,
            admin_username=ADMIN,
            admin_password=admin_password,
            db_url=pg.jdbc_url("keycloak"),
            db_username="keycloak",
            db_password=db_password,
            realm_files=[REALM.file],
        )
        assert set(kc.deployment_env()) == KEYCLOAK_ENV
        assert kc.command()[-3:] == ["start", "--optimized", "--import-realm"]
        with kc:
            clock.mark("keycloak build+start" if kc.build_seconds else "keycloak start (cached build)")
            credentials = tmp_path / "s3_credentials"  # the compose secret's format
            credentials.write_text(
                f"[default]\naws_access_key_id = {bucket.access_key}\naws_secret_access_key = {bucket.secret_key}\n"
            )
            credentials.chmod(0o600)
            overrides = {
                "upstream": kc.base_url,
                "data": str(data),
                "listen": f"127.0.0.1:{ports['sidecar']}",
                "store": bucket.store_url("keycloak"),
                "tls_cert": "",
                "tls_key": "",
            }
            assert set(overrides) == SIDECAR_OVERRIDES
            env = {f"SIDECAR_{k.upper()}": v for k, v in overrides.items()}
            env.update(
                {
                    "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
                    "AWS_CONFIG_FILE": os.devnull,
                    "AWS_EC2_METADATA_DISABLED": "true",
                }
            )
            log_file = tmp_path / "sidecar.log"
            with log_file.open("wb") as log:
                proc = subprocess.Popen(
                    [str(wheel_install.bin / "sidecar"), "serve", "--config", str(SIDECAR_TOML)],
                    cwd=wheel_install.cwd,
                    env=wheel_install.env(env),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            try:
                wait_http(f"{base}/.sidecar/health/ready", 60)
                clock.mark("sidecar start")
                _through_the_sidecar(base, admin_password, data, bundle, wheel_install, env, kc, clock)
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
                code = proc.wait(30)
            assert code == 0, log_file.read_text()[-3000:]
            lines = [orjson.loads(line) for line in log_file.read_bytes().splitlines() if line.startswith(b"{")]
            assert any(line.get("logger") == "sidecar.access" for line in lines), "JSON access lines (log_format)"
        for source in (str(data), bucket.store_url("keycloak")):
            result = wheel_install.run(
                "sidecar", "verify", source, "--trust", str(data / "trust.json"), "--json", env=env
            )
            assert result.returncode == 0, result.stdout + result.stderr
            assert orjson.loads(result.stdout)["verdict"] == "intact"
        clock.mark("verify local + WORM")


def _through_the_sidecar(
    base: str,
    admin_password: str,
    data: Path,
    bundle: Path,
    wheel: WheelInstall,
    env: dict[str, str],
    kc: ProductionKeycloak,
    clock: Clock,
) -> None:
    login = asyncio.run(
        activity.browser_login(
            base, REALM.name, REALM.app.client_id, REALM.alice.username, REALM.alice.password, f"{base}/callback"
        )
    )
    assert login.ok, login
    auditor_password = secrets.token_urlsafe(18)
    steps = asyncio.run(_admin_steps(base, admin_password, auditor_password))
    types = [r["event"]["type"] for r in ledger_records(data)]
    assert "login.succeeded" in types and "role.granted" in types, types
    clock.mark("login + role grant")

    status, token = asyncio.run(
        activity.token(
            base,
            "master",
            {"grant_type": "password", "client_id": AUDIT_CLIENT, "username": AUDITOR, "password": auditor_password},
        )
    )
    assert status == 200, token
    audit_env = {**env, "SIDECAR_AUDIT_TOKEN": token["access_token"]}
    pulled = wheel.run("sidecar", "pull", base, "--out", str(bundle), "--json", env=audit_env)
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    checked = wheel.run("sidecar", "verify", str(bundle), "--trust", str(data / "trust.json"), "--json", env=env)
    assert checked.returncode == 0 and orjson.loads(checked.stdout)["verdict"] == "intact", checked.stdout
    assert any(r["event"]["type"] == "audit.read" for r in ledger_records(data))
    clock.mark("auditor pull + verify")

    before = len(ledger_records(data))
    kc.stop()
    # The probe asks every upstream_probe seconds and gives up on one ask after at most 5 s
    # (app.UpstreamProbe), so a stopped Keycloak shows within probe + 5 s; twice that on a loaded machine.
    probe_s = float(read_file(SIDECAR_TOML).get("upstream_probe", BY_KEY["upstream_probe"].default))
    deadline = time.monotonic() + 2 * (probe_s + 5)
    not_ready = None
    while not_ready is None and time.monotonic() < deadline:
        status, body = asyncio.run(_readiness(base))
        if status == 503:
            not_ready = body
        else:
            time.sleep(0.1)
    assert not_ready is not None and "upstream" in not_ready["reasons"], not_ready
    kc.start()
    wait_http(f"{base}/.sidecar/health/ready", 30)
    clock.mark("keycloak restart")
    assert "auditor" in asyncio.run(_alice_roles(base, admin_password, steps["alice"])), "role mapping lost"
    again = asyncio.run(
        activity.browser_login(
            base, REALM.name, REALM.app.client_id, REALM.alice.username, REALM.alice.password, f"{base}/callback"
        )
    )
    assert again.ok, again
    after = ledger_records(data)
    assert len(after) > before and sum(r["event"]["type"] == "login.succeeded" for r in after) >= 2
    clock.mark("after restart: state + login")
