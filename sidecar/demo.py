"""`make demo`: the product on an embedded default, end to end, on loopback.

Starts a local Keycloak (fetched with mvn and cached), the sidecar in front of
it with a directory as the remote store, runs some sample activity through
the sidecar (a failed and a good browser-style login, a failed direct grant, a
role grant and revoke by an admin), verifies the ledger and its replica, and
prints where everything is. Ctrl-C stops everything it started.
"""

from __future__ import annotations

import asyncio
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
    bad = await activity.browser_login(base, realm, REALM.app.client_id, alice.username, "wrong-password",
                                       callback)
    lines.append(f"browser login as {alice.username} with a wrong password: {'refused' if not bad.ok else 'ACCEPTED?'}")
    good = await activity.browser_login(base, realm, REALM.app.client_id, alice.username, alice.password, callback)
    lines.append(f"browser login as {alice.username}: {'succeeded' if good.ok else 'FAILED'}")
    status, _ = await activity.direct_grant(base, realm, REALM.app.client_id, REALM.app.secret, REALM.bob.username,
                                            "not-bobs-password")
    lines.append(f"direct grant as {REALM.bob.username} with a wrong password: HTTP {status}")
    async with activity.Admin(base, ADMIN_USER, ADMIN_PASSWORD) as admin:
        uid = await admin.user_id(realm, alice.username)
        role = await admin.role(realm, "auditor")
        lines.append(f"admin grants realm role auditor to {alice.username}: HTTP "
                     f"{await admin.grant_realm_role(realm, uid, role)}")
        lines.append(f"admin revokes realm role auditor from {alice.username}: HTTP "
                     f"{await admin.revoke_realm_role(realm, uid, role)}")
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
    print("fetching Keycloak (cached after the first run)...", flush=True)
    dist = ensure_distribution()
    kc = KeycloakServer(dist, root / "keycloak", http_port=kc_port, management_port=mgmt_port, public_url=base,
                        admin_username=ADMIN_USER, admin_password=ADMIN_PASSWORD, realm_files=[REALM.file])
    sidecar: subprocess.Popen[bytes] | None = None
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    try:
        print("starting Keycloak on 127.0.0.1 (about 15-40 s on 2 cores)...", flush=True)
        kc.start()
        print(f"Keycloak ready in {kc.startup_seconds:.1f} s", flush=True)
        log = (root / "sidecar.log").open("ab")
        sidecar = subprocess.Popen([sys.executable, "-m", "sidecar", "serve", "--upstream", kc.base_url,
                                    "--data", str(data), "--store", str(store), "--listen",
                                    f"127.0.0.1:{sidecar_port}", "--auditor-realm", REALM.name],
                                   stdout=log, stderr=subprocess.STDOUT)
        _wait_http(f"{base}/.sidecar/health", 30)
        print("sample activity through the sidecar:", flush=True)
        for line in asyncio.run(_activity(base)):
            print("  " + line, flush=True)
        time.sleep(1.0)  # let the replicator ship the last batch
        trust = data / "trust.json"
        print("\nverifying the local ledger and its replica:", flush=True)
        codes = []
        for source in (str(data), str(store)):
            result = subprocess.run([sys.executable, "-m", "sidecar", "verify", source, "--trust", str(trust)],
                                    capture_output=True, text=True)
            codes.append(result.returncode)
            print(f"  $ sidecar verify {source} --trust {trust}")
            print("    " + "\n    ".join(result.stdout.strip().splitlines()[-3:]))
        print(f"""
Keycloak admin console through the sidecar: {base}/admin/master/console/
  admin user: {ADMIN_USER}   password: {ADMIN_PASSWORD}
  test realm: {REALM.name} (users alice/bob/carol/dave; passwords in sidecar/harness/realm.py)
ledger (local WAL): {data}      replica (directory store): {store}
trust anchor for auditors: {trust}
sidecar log: {root / 'sidecar.log'}      Keycloak log: {kc.log_file}
verdict: {'INTACT' if codes == [0, 0] else 'PROBLEMS FOUND (see above)'}

Everything you do in the console is recorded. Verify any time with:
  .venv/bin/sidecar verify {data} --trust {trust}
Press Ctrl-C to stop Keycloak and the sidecar.""", flush=True)
        while not stop and sidecar.poll() is None and kc.running:
            time.sleep(0.5)
        return 0 if codes == [0, 0] else 1
    except KeyboardInterrupt:
        return 0
    finally:
        print("\nstopping...", flush=True)
        if sidecar is not None and sidecar.poll() is None:
            sidecar.send_signal(signal.SIGINT)
            try:
                sidecar.wait(15)
            except subprocess.TimeoutExpired:
                sidecar.kill()
        kc.stop()


if __name__ == "__main__":
    sys.exit(main())
