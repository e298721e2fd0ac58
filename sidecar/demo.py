"""`make demo`: the product on an embedded default, end to end, on loopback. [dev only]

Starts a local Keycloak (fetched with mvn and cached), the sidecar in front of
it with a directory as the remote store, runs some sample activity through
the sidecar (a failed and a good browser-style login, a failed direct grant, a
role grant and revoke by an admin), verifies the ledger and its replica, and
prints where everything is. Ctrl-C, SIGTERM or SIGHUP (the terminal closed) stops everything it
started: Keycloak and the sidecar run in their own sessions, so only this process decides when they
end, and it ends them by their process groups.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from sidecar.harness import activity
from sidecar.harness.keycloak import KeycloakServer, ensure_distribution, free_port
from sidecar.harness.realm import REALM
from sidecar.ledger.keystore import KeyStore

ADMIN_USER = "admin"
ADMIN_PASSWORD = "demo-admin-pw"  # demo only: printed below so you can log in to the console


class _Stop(Exception):
    """A stop signal arrived (SIGTERM, SIGHUP): unwind at once, whatever is running."""


def _say(text: str) -> None:
    """Print, unless the terminal is gone (after SIGHUP a write may fail with EIO)."""
    with contextlib.suppress(OSError):
        print(text, flush=True)


def _port(preferred: int) -> int:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            return free_port()
    return preferred


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up in {timeout:.0f} s")


async def _activity(base: str) -> list[str]:
    realm, alice = REALM.name, REALM.alice
    callback = f"{base}/callback"
    lines = []
    bad = await activity.browser_login(base, realm, REALM.app.client_id, alice.username, "wrong-password", callback)
    lines.append(f"browser login as {alice.username} with a wrong password: {'refused' if not bad.ok else 'ACCEPTED?'}")
    good = await activity.browser_login(base, realm, REALM.app.client_id, alice.username, alice.password, callback)
    lines.append(f"browser login as {alice.username}: {'succeeded' if good.ok else 'FAILED'}")
    status, _ = await activity.direct_grant(
        base, realm, REALM.app.client_id, REALM.app.secret, REALM.bob.username, "not-bobs-password"
    )
    lines.append(f"direct grant as {REALM.bob.username} with a wrong password: HTTP {status}")
    async with activity.Admin(base, ADMIN_USER, ADMIN_PASSWORD) as admin:
        uid = await admin.user_id(realm, alice.username)
        role = await admin.role(realm, "auditor")
        lines.append(
            f"admin grants realm role auditor to {alice.username}: HTTP "
            f"{await admin.grant_realm_role(realm, uid, role)}"
        )
        lines.append(
            f"admin revokes realm role auditor from {alice.username}: HTTP "
            f"{await admin.revoke_realm_role(realm, uid, role)}"
        )
    return lines


def main() -> int:
    root = Path(os.environ.get("SIDECAR_DEMO_DIR", ".demo")).absolute()
    data, store = root / "ledger", root / "store"
    root.mkdir(parents=True, exist_ok=True)
    keys = KeyStore(data)
    if not keys.exists():
        keys.init("demo.local/keycloak-ledger")
    sidecar_port, kc_port, mgmt_port = _port(18443), _port(18080), _port(19000)
    base = f"http://127.0.0.1:{sidecar_port}"
    _say("fetching Keycloak (cached after the first run)...")
    dist = ensure_distribution()
    kc = KeycloakServer(
        dist,
        root / "keycloak",
        http_port=kc_port,
        management_port=mgmt_port,
        public_url=base,
        admin_username=ADMIN_USER,
        admin_password=ADMIN_PASSWORD,
        realm_files=[REALM.file],
    )
    sidecar: subprocess.Popen[bytes] | None = None

    def on_signal(signum: int, frame: object) -> None:
        raise _Stop(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    code = 0
    try:
        _say(
            "starting Keycloak on 127.0.0.1 (its first start builds it and creates its database; on a busy "
            "2-core machine that takes minutes)..."
        )
        # First starts (build, schema, realm import) took 84-193 s on 2 cores at load average 7-13;
        # the harness's 180 s default is meant for the test suite's starts.
        kc.start(timeout=600)
        _say(f"Keycloak ready in {kc.startup_seconds:.1f} s")
        log = (root / "sidecar.log").open("ab")
        sidecar = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sidecar",
                "serve",
                "--upstream",
                kc.base_url,
                "--data",
                str(data),
                "--store",
                str(store),
                "--listen",
                f"127.0.0.1:{sidecar_port}",
                "--auditor-realm",
                REALM.name,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_http(f"{base}/.sidecar/health/ready", 30)
        _say("sample activity through the sidecar:")
        for line in asyncio.run(_activity(base)):
            _say("  " + line)
        time.sleep(1.0)  # let the replicator ship the last batch
        trust = data / "trust.json"
        _say("\nverifying the local ledger and its replica:")
        codes = []
        for source in (str(data), str(store)):
            result = subprocess.run(
                [sys.executable, "-m", "sidecar", "verify", source, "--trust", str(trust)],
                capture_output=True,
                text=True,
            )
            codes.append(result.returncode)
            _say(f"  $ sidecar verify {source} --trust {trust}")
            _say("    " + "\n    ".join(result.stdout.strip().splitlines()[-3:]))
        _say(f"""
Keycloak admin console through the sidecar: {base}/admin/master/console/
  admin user: {ADMIN_USER}   password: {ADMIN_PASSWORD}
  test realm: {REALM.name} (users alice/bob/carol/dave; passwords in sidecar/harness/realm.py)
ledger (local WAL): {data}      replica (directory store): {store}
subject key store (names, e-mails and IPs are encrypted under it; erasable): {data / "subjects"}
trust anchor for auditors: {trust}
sidecar log: {root / "sidecar.log"}      Keycloak log: {kc.log_file}
metrics: {base}/.sidecar/metrics      readiness: {base}/.sidecar/health/ready
verdict: {"INTACT" if codes == [0, 0] else "PROBLEMS FOUND (see above)"}

Everything you do in the console is recorded. Verify any time with:
  .venv/bin/sidecar verify {data} --trust {trust}
Read it with names (an investigator; without --subjects: pseudonyms, an auditor's view):
  .venv/bin/sidecar timeline {data} --trust {trust} --subjects {data / "subjects"}
Erase a person while it runs: .venv/bin/sidecar subject erase <user id> --reason "..." --data {data}
Press Ctrl-C (or close the terminal) to stop Keycloak and the sidecar.""")
        code = 0 if codes == [0, 0] else 1
        while sidecar.poll() is None and kc.running:
            time.sleep(0.5)
        return code
    except (KeyboardInterrupt, _Stop):
        return code
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second signal must not cut the cleanup short
        _say("\nstopping...")
        if sidecar is not None and sidecar.poll() is None:
            os.killpg(sidecar.pid, signal.SIGTERM)
            try:
                sidecar.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(sidecar.pid, signal.SIGKILL)
                sidecar.wait(5)
        kc.stop()


if __name__ == "__main__":
    sys.exit(main())
