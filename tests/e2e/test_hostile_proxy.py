"""Hostile traffic against the proxy, the bounds and the auditor endpoint, on the real Keycloak (issue 8,
classes 1 for the writer, 6, 7 and 8).

One sidecar process of this module's own runs in front of the session Keycloak, with its data directory
on a small tmpfs (so the disk-full test fills a real file system), a 16 MiB capture budget, small
upstream pools, a 1 s auditor re-check and a 3 s window for refused audit reads. Its log is a file,
searched byte for byte. Keycloak's own state (admin API, direct) and event store are the oracle.
The disk-full test runs last; the ledger heals before the module ends.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from sidecar.harness import activity
from sidecar.harness.keycloak import KeycloakServer, free_port
from sidecar.harness.realm import REALM
from tests.fixtures_keycloak import ADMIN_PASSWORD, ADMIN_USERNAME
from tests.fixtures_sidecar import ledger_records, wait_http

pytestmark = [pytest.mark.keycloak]

BUDGET_MIB = 16
TOKEN_PATH = f"/realms/{REALM.name}/protocol/openid-connect/token"
INTROSPECT_PATH = f"/realms/{REALM.name}/protocol/openid-connect/token/introspect"  # passed through
OBJECTS = "/.sidecar/audit/objects"


@dataclass
class Hostile:
    base: str
    data: Path  # on a tmpfs of its own
    log_file: Path
    proc: subprocess.Popen[bytes]
    keycloak: KeycloakServer

    def records(self) -> list[dict[str, Any]]:
        return [r["event"] for r in ledger_records(self.data)]

    def rss(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def log(self) -> bytes:
        return self.log_file.read_bytes()


def _mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir(parents=True)
    run = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)], capture_output=True, check=False
    )
    if run.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs for the disk-full test (needs root): {run.stderr.decode().strip()}")


@pytest.fixture(scope="module")
def hostile(keycloak: KeycloakServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    """A sidecar of this module's own, ledger on a 24 MiB tmpfs, small pools and budget."""
    root = tmp_path_factory.mktemp("hostile")
    data, log_file = root / "ledger", root / "sidecar.log"
    _mount_tmpfs(data, "24m")
    port = free_port()
    args = [
        "--init",
        "--origin",
        "e2e.test/hostile-proxy",
        "--upstream",
        keycloak.base_url,
        "--data",
        str(data),
        "--listen",
        f"127.0.0.1:{port}",
        "--auditor-realm",
        REALM.name,
        "--reader-realm",
        REALM.name,
        "--reader-client-id",
        REALM.robot.client_id,
        "--capture-budget",
        str(BUDGET_MIB),
        "--passthrough-connections",
        "32",
        "--identity-connections",
        "16",
        "--auditor-recheck",
        "1",
        "--auditor-denied-window",
        "3",
        "--segment-max-bytes",
        "1048576",
        "--log-level",
        "DEBUG",
    ]
    env = {**os.environ, "SIDECAR_READER_SECRET": REALM.robot.secret or ""}
    try:
        with log_file.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "sidecar", "serve", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        try:
            wait_http(f"http://127.0.0.1:{port}/.sidecar/health/live", 60)
            yield Hostile(f"http://127.0.0.1:{port}", data, log_file, proc, keycloak)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)
    finally:
        subprocess.run(["umount", "-l", str(data)], check=False, capture_output=True)


async def _health(h: Hostile) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(h.base + "/.sidecar/health") as resp:
        return resp.status, await resp.json()


async def _new_user(keycloak: KeycloakServer, roles: tuple[str, ...] = ()) -> tuple[str, str, str]:
    """(username, password, id) of a fresh enabled user, made with Keycloak's admin API directly."""
    name, password = f"hp-{uuid.uuid4().hex[:10]}", f"Pw-{uuid.uuid4().hex}!"
    async with activity.Admin(keycloak.base_url, ADMIN_USERNAME, ADMIN_PASSWORD) as admin:
        status, _ = await admin.call(
            "POST",
            f"{REALM.name}/users",
            {
                "username": name,
                "enabled": True,
                "email": f"{name}@example.test",
                "emailVerified": True,
                "firstName": "Hostile",
                "lastName": "Proxy",
                "credentials": [{"type": "password", "value": password, "temporary": False}],
            },
        )
        assert status == 201, status
        uid = await admin.user_id(REALM.name, name)
        for role in roles:
            assert await admin.grant_realm_role(REALM.name, uid, await admin.role(REALM.name, role)) == 204
    return name, password, uid


async def _login(base: str, username: str, password: str) -> tuple[int, dict[str, Any]]:
    return await activity.direct_grant(base, REALM.name, REALM.app.client_id, REALM.app.secret, username, password)


async def _admin_token(base: str) -> str:
    status, data = await activity.token(
        base,
        "master",
        {"grant_type": "password", "client_id": "admin-cli", "username": ADMIN_USERNAME, "password": ADMIN_PASSWORD},
    )
    assert status == 200, data
    return str(data["access_token"])


def _unsigned(claims: dict[str, Any]) -> str:
    def b64(obj: Any) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(obj)).rstrip(b"=").decode()

    return f"{b64({'alg': 'RS256', 'typ': 'JWT', 'kid': 'nope'})}.{b64(claims)}.c2ln"


# ---------------------------------------------------------------------------- class 1 (writer): input never breaks it
async def test_unencodable_claims_never_break_the_ledger(hostile: Hostile, secrets_seen: set[str]) -> None:
    """Unsigned tokens with a float sub, an integer beyond 2^53, a non-ASCII key or a 700 KB claim, sent to revoke,
    refresh and logout, leave the ledger healthy: later logins are answered and recorded, no record is oversized.

    Each such request is answered by Keycloak or, where its record could not be encoded, refused alone by the
    failure policy (503): what must never happen is the ledger refusing everyone after it.
    """
    big = "A" * 700_000
    payloads: list[dict[str, Any]] = [
        {"sub": 1.5, "sid": "s"},
        {"sub": 2**53 + 1},
        {"sübject": "x", "sub": "y"},
        {"sub": "z", "pad": big},
    ]
    form = {"client_id": REALM.app.client_id, "client_secret": REALM.app.secret or ""}
    async with aiohttp.ClientSession() as http:
        for claims in payloads:
            token = _unsigned(claims)
            for path, extra in (
                (f"{TOKEN_PATH[:-5]}revoke", {"token": token}),
                (TOKEN_PATH, {"grant_type": "refresh_token", "refresh_token": token}),
                (f"{TOKEN_PATH[:-5]}logout", {"id_token_hint": token}),
            ):
                async with http.post(hostile.base + path, data={**form, **extra}) as resp:
                    await resp.read()
                status, health = await _health(hostile)
                assert status == 200 and health["ledger"]["broken"] is None, (path, list(claims), health)
    name, password, uid = await _new_user(hostile.keycloak)
    secrets_seen.add(password)
    status, data = await _login(hostile.base, name, password)
    assert status == 200, data
    secrets_seen.update(str(v) for k, v in data.items() if k.endswith("token"))
    assert any(e["type"] == "login.succeeded" and (e.get("actor") or {}).get("id") == uid for e in hostile.records())
    assert max(len(orjson.dumps(e)) for e in hostile.records()) < 256 * 1024


# ---------------------------------------------------------------------------- class 6: byte-faithful forwarding
async def test_gzip_bodies_reach_keycloak_intact_and_captured_codings_are_refused(hostile: Hostile) -> None:
    """A gzip body on a pass-through path gets exactly Keycloak's own answer; on a captured endpoint it is 415 and
    Keycloak never sees it (no event), even 300 abandoned ones, after which logins still work."""
    kc = hostile.keycloak
    form = f"client_id={REALM.app.client_id}&client_secret={REALM.app.secret}&token=abc".encode()
    body = gzip.compress(form)
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/x-www-form-urlencoded"}
    answers = []
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        for base in (kc.base_url, hostile.base):
            async with http.post(base + INTROSPECT_PATH, data=body, headers=headers) as resp:
                answers.append((resp.status, await resp.read()))
    assert answers[0] == answers[1], answers

    name, password, uid = await _new_user(kc)
    grant = (
        f"grant_type=password&client_id={REALM.app.client_id}&client_secret={REALM.app.secret}"
        f"&username={name}&password={password}".encode()
    )
    async with aiohttp.ClientSession() as http:
        async with http.post(hostile.base + TOKEN_PATH, data=gzip.compress(grant), headers=headers) as resp:
            assert resp.status == 415, await resp.text()

    async def abandon() -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", int(hostile.base.rsplit(":", 1)[1]))
        writer.write(
            f"POST {TOKEN_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Encoding: gzip\r\nContent-Length: 100000\r\n\r\n".encode()
            + gzip.compress(grant)[:10]
        )
        await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    await asyncio.gather(*(abandon() for _ in range(300)))
    status, data = await _login(hostile.base, name, password)
    assert status == 200, data
    async with activity.Admin(kc.base_url, ADMIN_USERNAME, ADMIN_PASSWORD) as admin:
        _, events = await admin.call("GET", f"{REALM.name}/events?user={uid}&max=50")
    # Keycloak's event store: the one login that came uncoded, nothing for the refused ones.
    assert [e["type"] for e in events] == ["LOGIN"], events


async def test_client_gone_mid_admin_change_still_gets_its_outcome(hostile: Hostile) -> None:
    """A client that sends a role grant and hangs up at once: Keycloak applies it and the intent gets its outcome."""
    kc = hostile.keycloak
    _, _, uid = await _new_user(kc)
    token = await _admin_token(hostile.base)
    async with activity.Admin(kc.base_url, ADMIN_USERNAME, ADMIN_PASSWORD) as admin:
        role = await admin.role(REALM.name, "viewer")
    body = orjson.dumps([role])
    _, writer = await asyncio.open_connection("127.0.0.1", int(hostile.base.rsplit(":", 1)[1]))
    writer.write(
        f"POST /admin/realms/{REALM.name}/users/{uid}/role-mappings/realm HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    writer.close()  # gone before any answer
    mine: list[dict[str, Any]] = []
    for _ in range(200):
        mine = [e for e in hostile.records() if (e.get("target") or {}).get("id") == uid]
        if any(e["details"].get("phase") == "outcome" for e in mine):
            break
        await asyncio.sleep(0.1)
    intents = [e for e in mine if e["details"].get("phase") == "intent"]
    outcomes = [e for e in mine if e["details"].get("phase") == "outcome"]
    assert len(intents) == 1 and len(outcomes) == 1, mine
    async with activity.Admin(kc.base_url, ADMIN_USERNAME, ADMIN_PASSWORD) as admin:
        _, roles = await admin.call("GET", f"{REALM.name}/users/{uid}/role-mappings/realm")
    applied = "viewer" in {r["name"] for r in roles}
    assert outcomes[0]["outcome"] == ("succeeded" if applied else "unknown"), (outcomes, applied)


async def test_slow_pass_through_uploads_do_not_starve_logins(hostile: Hostile, secrets_seen: set[str]) -> None:
    """With 300 stalled uploads filling the pass-through pool, health names it saturated (still 200) and logins
    through the sidecar are answered and recorded."""
    name, password, uid = await _new_user(hostile.keycloak)
    secrets_seen.add(password)
    port = int(hostile.base.rsplit(":", 1)[1])
    writers = []
    try:
        for _ in range(300):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                f"POST {INTROSPECT_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: "
                f"application/x-www-form-urlencoded\r\nContent-Length: 100000\r\n\r\ntoken=".encode()
            )
            writers.append(writer)
        await asyncio.gather(*(w.drain() for w in writers))
        status, health = 0, dict[str, Any]()
        for _ in range(300):
            status, health = await _health(hostile)
            if health["proxy"]["saturated"]:
                break
            await asyncio.sleep(0.1)
        assert health["proxy"]["saturated"] == ["pass_through"], health["proxy"]
        assert status == 200, "pass-through saturation alone does not take the node out of service"
        for _ in range(3):
            status, data = await _login(hostile.base, name, password)
            assert status == 200, data
            secrets_seen.update(str(v) for k, v in data.items() if k.endswith("token"))
        status, health = await _health(hostile)
        assert health["proxy"]["pools"]["identity"]["in_flight"] <= health["proxy"]["pools"]["identity"]["limit"]
    finally:
        for w in writers:
            w.close()
    issued = [
        e for e in hostile.records() if e["type"] == "login.succeeded" and (e.get("actor") or {}).get("id") == uid
    ]
    assert len(issued) == 3
    for _ in range(300):
        _, health = await _health(hostile)
        if not health["proxy"]["saturated"]:
            break
        await asyncio.sleep(0.1)
    assert health["proxy"]["saturated"] == []


# ---------------------------------------------------------------------------- class 7: memory, logs, disk full
async def test_many_large_captured_bodies_keep_rss_bounded(hostile: Hostile) -> None:
    """300 concurrent captured bodies of ~1 MiB keep the sidecar's RSS within the capture budget plus buffers
    (overflow is 503 + Retry-After), and the memory is returned once they are done."""
    pad = "A" * (1024 * 1024 - 4096)
    body = (
        f"grant_type=password&client_id={REALM.app.client_id}&client_secret={REALM.app.secret}"
        f"&username=nobody-{uuid.uuid4().hex[:6]}&password=x&pad={pad}"
    ).encode()
    url = hostile.base + TOKEN_PATH
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def one() -> tuple[int, str | None]:
            async with http.post(url, data=body, headers=headers) as resp:
                await resp.read()
                return resp.status, resp.headers.get("Retry-After")

        for _ in range(10):  # warm up: the allocator's steady state, not its first growth, is the baseline
            await one()
        await asyncio.sleep(1)
        baseline = peak = hostile.rss()
        done = asyncio.Event()

        async def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, hostile.rss())
                await asyncio.sleep(0.02)

        sampler = asyncio.ensure_future(sample())
        results = await asyncio.gather(*(one() for _ in range(300)))
        done.set()
        await sampler
    statuses = {s for s, _ in results}
    assert all(s < 500 or s == 503 for s in statuses), statuses
    assert any(s == 503 and ra == "1" for s, ra in results), "the budget refused some, with Retry-After"
    await asyncio.sleep(2)
    after = hostile.rss()
    mib = 1024 * 1024
    print(f"\nRSS baseline {baseline / mib:.0f} MiB, peak {peak / mib:.0f} MiB, after {after / mib:.0f} MiB")
    # Unbounded capture would hold 300 MiB at once; the budget is 16 MiB, plus per-connection buffers.
    assert peak - baseline < 120 * mib, (baseline, peak)
    assert after - baseline < 24 * mib, (baseline, after)
    _, health = await _health(hostile)
    assert (
        health["proxy"]["capture_budget"]["used"] == 0 and health["proxy"]["capture_budget"]["peak"] <= BUDGET_MIB * mib
    )


SECRETS = ("eyJhbGciOiJSUzI1NiJ9.aHAtc2VjcmV0LWJlYXJlcg.c2ln", "kc-identity-cookie-hp-3141", "authcode-hp-2718")


async def test_malformed_requests_leave_no_request_bytes_in_the_log(hostile: Hostile) -> None:
    """Malformed requests carrying a bearer token, a KEYCLOAK_IDENTITY cookie and a code= query are refused,
    and not one of their bytes reaches the sidecar's log or data directory."""
    port = int(hostile.base.rsplit(":", 1)[1])
    bearer, cookie, code = SECRETS
    requests = [
        f"GET /realms/{REALM.name}/account HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {bearer}\x01\r\n\r\n",
        f"GET /realms/{REALM.name}/account HTTP/1.1\r\nHost: x\r\nCookie: KEYCLOAK_IDENTITY={cookie}"
        f"{'A' * 70000}\r\n\r\n",
        f"GET /realms/{REALM.name}/broker/x/endpoint?code={code} HTTP/1.1 junk\r\nHost: x\r\n\r\n",
        f"GET /realms/{REALM.name}/cb?code={code}\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
        f"POST {TOKEN_PATH}?code={code} HTTP/1.1\r\nHost: x\r\nCookie: KEYCLOAK_IDENTITY={cookie}\r\n"
        f"Authorization: Bearer {bearer}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        f"POST {TOKEN_PATH}?code={code} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {bearer}\r\n"
        f"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
    ]
    answers = []
    for raw in requests:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(raw.encode("latin-1"))
        await writer.drain()
        answers.append(await asyncio.wait_for(reader.read(100), 30))
        writer.close()
    assert all(a[9:10] == b"4" for a in answers), answers
    await asyncio.sleep(0.5)
    log = hostile.log()
    assert b"sidecar.http" in log, "aiohttp's errors were logged, through the safe logger"
    blobs = [log] + [p.read_bytes() for p in hostile.data.rglob("*") if p.is_file()]
    for secret in SECRETS:
        assert not any(secret.encode() in b for b in blobs), secret[:8]
    assert b"code=" not in log and b"Bearer " not in log and b"KEYCLOAK_IDENTITY=" not in log


# ---------------------------------------------------------------------------- class 8: the auditor endpoint
async def _audit(h: Hostile, token: str) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(h.base + OBJECTS, headers={"Authorization": f"Bearer {token}"}) as resp,
    ):
        return resp.status, await resp.read()


async def _until_status(h: Hostile, token: str, want: int) -> bytes:
    status, body = 0, b""
    for _ in range(100):  # the re-check is cached 1 s here
        status, body = await _audit(h, token)
        if status == want:
            return body
        await asyncio.sleep(0.2)
    raise AssertionError(f"auditor endpoint still answers {status}, not {want}: {body[:200]!r}")


async def test_auditor_access_follows_keycloak_live_state(hostile: Hostile, secrets_seen: set[str]) -> None:
    """An auditor token stops working once its role is removed or its user disabled in Keycloak (not at expiry),
    and works again when the role is back; each refusal is a failed audit.read naming why."""
    kc = hostile.keycloak
    name, password, uid = await _new_user(kc, roles=("ledger-auditor",))
    secrets_seen.add(password)
    status, data = await _login(hostile.base, name, password)
    assert status == 200, data
    token = str(data["access_token"])
    secrets_seen.update(str(v) for k, v in data.items() if k.endswith("token"))
    assert (await _audit(hostile, token))[0] == 200
    async with activity.Admin(kc.base_url, ADMIN_USERNAME, ADMIN_PASSWORD) as admin:
        role = await admin.role(REALM.name, "ledger-auditor")
        assert await admin.revoke_realm_role(REALM.name, uid, role) == 204
        assert b"revoked" in await _until_status(hostile, token, 403)
        assert await admin.grant_realm_role(REALM.name, uid, role) == 204
        await _until_status(hostile, token, 200)
        status, user = await admin.call("GET", f"{REALM.name}/users/{uid}")
        assert (await admin.call("PUT", f"{REALM.name}/users/{uid}", {**user, "enabled": False}))[0] == 204
        assert b"disabled" in await _until_status(hostile, token, 403)
    refused = [
        e
        for e in hostile.records()
        if e["type"] == "audit.read" and e["outcome"] == "failed" and (e.get("actor") or {}).get("id") == uid
    ]
    assert {e["error"] for e in refused} >= {"revoked"}, refused


async def test_forbidden_audit_reads_are_rate_limited_and_counted(hostile: Hostile, secrets_seen: set[str]) -> None:
    """A realm user without the role hammering the endpoint gets 403 each time, but writes one record at once and
    one aggregate for the window; the metric counts every refusal."""
    name, password, uid = await _new_user(hostile.keycloak)
    secrets_seen.add(password)
    status, data = await _login(hostile.base, name, password)
    assert status == 200, data
    token = str(data["access_token"])
    secrets_seen.update(str(v) for k, v in data.items() if k.endswith("token"))
    statuses = [(await _audit(hostile, token))[0] for _ in range(40)]
    assert statuses == [403] * 40

    def mine() -> list[dict[str, Any]]:
        return [e for e in hostile.records() if e["type"] == "audit.read" and (e.get("actor") or {}).get("id") == uid]

    assert [e.get("details", {}).get("aggregated") for e in mine()] == [None]
    for _ in range(100):  # the 3 s window closes, then the aggregate is written
        if len(mine()) == 2:
            break
        await asyncio.sleep(0.2)
    first, aggregate = mine()
    assert first["error"] == aggregate["error"] == "forbidden"
    assert aggregate["details"]["aggregated"] is True and aggregate["details"]["suppressed"] == 39
    async with aiohttp.ClientSession() as http, http.get(hostile.base + "/.sidecar/metrics") as resp:
        metrics = await resp.text()
    counted = [
        line for line in metrics.splitlines() if line.startswith('sidecar_audit_denied_total{reason="forbidden"}')
    ]
    assert counted and float(counted[0].split()[-1]) >= 40, counted


async def test_disk_full_is_503_with_back_off_then_heals(hostile: Hostile, secrets_seen: set[str]) -> None:
    """With the ledger's file system full, admin changes and logins get 503 + Retry-After and Keycloak is not
    changed; the writer backs off (a handful of log lines, not thousands); freed, the ledger heals and verifies."""
    kc = hostile.keycloak
    name, password, uid = await _new_user(kc)
    secrets_seen.add(password)
    token = await _admin_token(hostile.base)
    async with activity.Admin(kc.base_url, ADMIN_USERNAME, ADMIN_PASSWORD) as admin:
        role = await admin.role(REALM.name, "operator")
    _, _, probe_uid = await _new_user(kc)
    grant_url = f"{hostile.base}/admin/realms/{REALM.name}/users/{uid}/role-mappings/realm"
    probe_url = f"{hostile.base}/admin/realms/{REALM.name}/users/{probe_uid}/role-mappings/realm"
    # The probe user's key is on disk before it fills, so the probes reach the writer (its fault and back-off);
    # an append that needs a new key fails at the subject key store instead, as closed (503) as the writer's.
    async with aiohttp.ClientSession() as http:
        for method in ("POST", "DELETE"):
            async with http.request(method, probe_url, json=[role], headers={"Authorization": f"Bearer {token}"}) as r:
                assert r.status == 204, r.status
    filler = hostile.data / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 65536, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    log_before = len(hostile.log())
    try:
        async with aiohttp.ClientSession() as http:
            refused, retry_after = 0, "0"
            for _ in range(30):  # an append may still fit in a page the segment file already has
                async with http.post(probe_url, json=[role], headers={"Authorization": f"Bearer {token}"}) as resp:
                    refused, retry_after = resp.status, resp.headers.get("Retry-After", "0")
                    if resp.status == 503:
                        break
                await asyncio.sleep(0.1)
            assert refused == 503 and int(retry_after) >= 1
            started = time.monotonic()
            granted = []  # a small batch can still fit in a page the segment already has (then it is recorded)
            for _ in range(20):
                async with http.post(grant_url, json=[role], headers={"Authorization": f"Bearer {token}"}) as resp:
                    assert resp.status in (503, 204)
                    granted.append(resp.status)
                async with http.post(
                    hostile.base + TOKEN_PATH,
                    data={
                        "grant_type": "password",
                        "client_id": REALM.app.client_id,
                        "client_secret": REALM.app.secret or "",
                        "username": name,
                        "password": password,
                    },
                ) as resp:
                    assert resp.status in (503, 200)  # logins fail closed by default
            await asyncio.sleep(max(0.0, 3 - (time.monotonic() - started)))
            # A checkpoint may still fit where a batch does not (a probe heals, the next append fails
            # again): health shows the fault whenever an append found the disk full.
            status, health = 0, dict[str, Any]()
            for _poke in range(30):
                status, health = await _health(hostile)
                if status == 503 and (health["ledger"]["fault"] or {}).get("reason"):
                    break  # (readiness may fail first for the key store: a new person's key did not fit either)
                async with http.post(probe_url, json=[role], headers={"Authorization": f"Bearer {token}"}) as resp:
                    assert resp.status in (503, 204)
        assert granted.count(503) > granted.count(204), granted
        assert status == 503 and "No space left" in (health["ledger"]["fault"] or {}).get("reason", ""), health
        assert "No space left" in health["reasons"].get("subjects", "No space left"), health
        elapsed = time.monotonic() - started
        lines = hostile.log()[log_before:].decode(errors="replace").splitlines()
        storage = [line[:160] for line in lines if "ledger storage" in line]
        # One line when the fault starts, then at most one "still failing" and one "works again" per 10 s
        # (a flapping disk): the old writer wrote ~500 a second.
        assert 1 <= len(storage) <= 2 + 2 * elapsed / 10, storage
        requests = 30 + 40 + 60 + 1  # at most: probes, grants and logins, pokes and health reads
        assert len(lines) <= requests + 20, f"{len(lines)} log lines for {requests} requests in {elapsed:.1f} s"
        async with activity.Admin(kc.base_url, ADMIN_USERNAME, ADMIN_PASSWORD) as admin:
            _, roles = await admin.call("GET", f"{REALM.name}/users/{uid}/role-mappings/realm")
        recorded = [
            e
            for e in hostile.records()
            if e["type"] == "role.granted"
            and (e.get("target") or {}).get("id") == uid
            and e["details"].get("phase") == "intent"
        ]
        # P2: Keycloak has the role only if a grant's intent was durable before it was forwarded.
        assert ("operator" in {r["name"] for r in roles}) == (204 in granted) == bool(recorded), (granted, roles)
    finally:
        filler.unlink()
    for _ in range(300):  # the next probe is at most 10 s away
        status, health = await _health(hostile)
        if status == 200:
            break
        await asyncio.sleep(0.1)
    assert status == 200 and health["ledger"]["fault"] is None, health
    async with (
        aiohttp.ClientSession() as http,
        http.post(grant_url, json=[role], headers={"Authorization": f"Bearer {token}"}) as resp,
    ):
        assert resp.status == 204
    assert [
        e["outcome"]
        for e in hostile.records()
        if e["type"] == "role.granted" and (e.get("target") or {}).get("id") == uid
    ][-2:] == ["pending", "succeeded"]
    verify = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "sidecar", "verify", str(hostile.data), "--trust", str(hostile.data / "trust.json")],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout.decode()[-2000:]
