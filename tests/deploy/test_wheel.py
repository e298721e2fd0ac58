"""The package is whole: the built wheel, installed without test extras in a fresh virtual
environment outside the checkout, creates keys, serves in front of the real Keycloak, and verifies."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import orjson
import pytest

from sidecar.harness import activity
from sidecar.harness.keycloak import KeycloakServer, free_port
from sidecar.harness.realm import REALM
from tests.fixtures_sidecar import ledger_records, wait_http
from tests.fixtures_wheel import WheelInstall

pytestmark = pytest.mark.keycloak

TEST_ONLY = ("pytest", "playwright", "moto", "hypothesis", "keycloak", "mypy", "ruff", "yaml", "jsonschema")


@pytest.mark.timeout(900)  # the first user of the session fixture builds the wheel and installs its dependencies
def test_wheel_ships_its_runtime_files_and_no_test_tools(wheel_install: WheelInstall) -> None:
    """Imported from the fresh venv (not the checkout), the default policy and realm template load from the package, the verifier's C extension is there, `sidecar verify --help` starts, and no test-only module is installed."""
    probe = (
        "import importlib.util, sidecar, sidecar.resources as r\n"
        "from sidecar.policy.schema import load_policy\n"
        "print(sidecar.__file__); print(load_policy().name); print(r.TEST_REALM.stat().st_size)\n"
        f"print([m for m in {TEST_ONLY!r} if importlib.util.find_spec(m)])\n"
        "import sidecar.core.verify as v; print(v.NATIVE, v._native.__file__)"
    )
    out = wheel_install.run("python", "-c", probe, check=True).stdout.splitlines()
    assert out[0].startswith(str(wheel_install.venv)), out
    assert out[1] and int(out[2]) > 1000
    assert out[3] == "[]", f"test-only modules in the runtime install: {out[3]}"
    native, _, so = out[4].partition(" ")  # the verifier's C extension was built into the wheel
    assert native == "True" and so.startswith(str(wheel_install.venv)), out[4]
    helped = wheel_install.run("sidecar", "verify", "--help")
    assert helped.returncode == 0 and "Usage" in helped.stdout, helped.stderr


def test_wheel_keys_init_serve_and_verify_against_keycloak(
    wheel_install: WheelInstall, keycloak: KeycloakServer, tmp_path: Path
) -> None:
    """From the installed wheel: keys init, serve in front of the real Keycloak (a login through it is recorded), stop, and verify says intact."""
    data, store = tmp_path / "ledger", tmp_path / "store"
    init = wheel_install.run("sidecar", "keys", "init", "--data", str(data), "--origin", "wheel.test/ledger")
    assert init.returncode == 0, init.stderr
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_file = tmp_path / "sidecar.log"
    with log_file.open("wb") as log:
        proc = subprocess.Popen(
            [
                str(wheel_install.bin / "sidecar"),
                "serve",
                "--upstream",
                keycloak.base_url,
                "--data",
                str(data),
                "--store",
                str(store),
                "--listen",
                f"127.0.0.1:{port}",
                "--auditor-realm",
                REALM.name,
            ],
            cwd=wheel_install.cwd,
            env=wheel_install.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_http(f"{base}/.sidecar/health/ready", 60)
        status, _ = asyncio.run(
            activity.direct_grant(
                base, REALM.name, REALM.app.client_id, REALM.app.secret, REALM.bob.username, REALM.bob.password
            )
        )
        assert status == 200
        logins = [r for r in ledger_records(data) if r["event"]["type"] == "login.succeeded"]
        assert any(r["event"].get("actor", {}).get("username") == REALM.bob.username for r in logins)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0, log_file.read_text()[-3000:]
    for source in (data, store):
        result = wheel_install.run("sidecar", "verify", str(source), "--trust", str(data / "trust.json"), "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        assert orjson.loads(result.stdout)["verdict"] == "intact"
