"""Fault injection: steady load, the store paused or killed, the sidecar SIGKILLed, restarts; nothing lost, no false alarm.

The sidecar's ledger and replicator run as a real process (`fault_child`), so its kill is a real
SIGKILL at a random moment (mid-append, mid-put, between a put and the cursor save). The store is
a real server process: versitygw is SIGKILLed and restarted (its objects are on disk) or paused
with SIGSTOP; moto keeps its objects in memory, so it is only paused. A pause longer than the
client's timeout is exactly the wedge of issue 10: the client gives up on a put that the server
completes when it resumes. Randomness is seeded; the counts are printed (run with -s).

At the end every acknowledged record is in the store, the store verifies on its own, and no
integrity alarm was raised.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest

from sidecar.audit.remote import pull_and_verify
from sidecar.audit.verifier import load_trust
from sidecar.harness.versitygw import VersityGW, s3_client

from .support import REPO, init_keys, s3_url, segment_records

pytestmark = [pytest.mark.slow, pytest.mark.s3]

CYCLES = 50
RATE = 40.0  # events per second from the sidecar process


class MotoProcess:
    """moto's S3 server as a child process: pausable (SIGSTOP), never killed (its state is in memory)."""

    def __init__(self, work: Path) -> None:
        from sidecar.harness.versitygw import free_port

        self.port = free_port()
        self.log = work / "moto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while True:
            try:
                client = s3_client(self.endpoint_url, "testing", "testing")
                client.list_buckets()
                client.close()
                return
            except Exception:  # any failure means "not up yet" until the deadline
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def pause(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGCONT)
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
            self.proc = None


@dataclass
class Counts:
    cycles: int = 0
    sidecar_kills: int = 0
    store_kills: int = 0
    store_pauses: int = 0
    acknowledged: set[int] = field(default_factory=set)
    alarms: list[str] = field(default_factory=list)

    def line(self, store: str, found: int) -> str:
        return (
            f"\nfault injection on {store}: {self.cycles} cycles, {self.sidecar_kills} sidecar SIGKILLs, "
            f"{self.store_kills} store SIGKILLs, {self.store_pauses} store pauses; "
            f"{len(self.acknowledged)} records acknowledged, {found} found in the store; "
            f"{len(self.alarms)} integrity alarms"
        )


class Sidecar:
    """One `fault_child` process; its stdout is read line by line in a thread-free way after it ends."""

    def __init__(self, data: Path, url: str, env: dict[str, str], counts: Counts) -> None:
        self.data, self.url, self.env, self.counts = data, url, env, counts
        self.proc: subprocess.Popen[bytes] | None = None
        self.first = 0
        self.log = data.parent / "child.log"

    def start(self, *extra: str) -> None:
        self.log = self.data.parent / f"child-{self.first}.log"
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.replicate.fault_child",
                    str(self.data),
                    self.url,
                    str(RATE),
                    str(self.first),
                    *extra,
                ],
                cwd=REPO,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
            )

    def kill(self) -> None:
        """SIGKILL, then take every line it managed to write (acknowledgements sit in the pipe)."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(
                f"the sidecar process exited {self.proc.returncode} by itself:\n"
                + self.log.read_text(errors="replace")[-3000:]
            )
        os.killpg(self.proc.pid, signal.SIGKILL)
        out, _ = self.proc.communicate(timeout=30)
        self._take(out)
        self.proc = None

    def drain(self, timeout: float = 120.0) -> dict[str, object]:
        self.start("--drain")
        assert self.proc is not None
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            out, _ = self.proc.communicate()
            self._take(out)
            raise AssertionError("the final drain did not finish") from None
        status = self._take(out)
        code, self.proc = self.proc.returncode, None
        assert code == 0 and status is not None, out[-2000:]
        return status

    def _take(self, out: bytes) -> dict[str, object] | None:
        status = None
        for raw in out.decode(errors="replace").splitlines():
            kind, _, rest = raw.partition(" ")
            if kind == "A" and rest.isdigit():
                self.counts.acknowledged.add(int(rest))
            elif kind == "I":
                self.counts.alarms.append(rest)
            elif kind == "D":
                status = orjson.loads(rest)
        self.first += 10_000  # event numbers of the next run never repeat
        return status


@dataclass
class Store:
    name: str
    url: str
    env: dict[str, str]
    pause: Callable[[], None]
    resume: Callable[[], None]
    kill_restart: Callable[[float], None] | None


@pytest.fixture(params=["moto", "versitygw"])
def fault_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A store server process of its own (faults must not reach other tests), with a locked bucket."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
    )
    if request.param == "moto":
        moto = MotoProcess(tmp_path)
        moto.start()
        try:
            client = s3_client(moto.endpoint_url, "testing", "testing")
            client.create_bucket(Bucket="faults", ObjectLockEnabledForBucket=True)
            client.put_object_lock_configuration(
                Bucket="faults",
                ObjectLockConfiguration={
                    "ObjectLockEnabled": "Enabled",
                    "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}},
                },
            )
            client.close()
            env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
            yield Store("moto", s3_url("faults", moto.endpoint_url), env, moto.pause, moto.resume, None)
        finally:
            moto.stop()
        return
    server = VersityGW(tmp_path / "versitygw")
    server.start()
    try:
        bucket = server.create_bucket("faults")
        env.update(bucket.env())

        def kill_restart(down_s: float) -> None:
            server.kill()
            time.sleep(down_s)
            server.start()

        yield Store("versitygw", bucket.store_url(), env, server.pause, server.resume, kill_restart)
    finally:
        server.stop()


async def test_faults_lose_nothing_and_raise_no_false_alarm(
    fault_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """50 seeded cycles of load with store pauses/kills and sidecar SIGKILLs: every ack is in the store, it verifies, 0 alarms."""
    rnd = random.Random(f"issue-10-{fault_store.name}")
    data = tmp_path / "ledger"
    trust = init_keys(data)
    counts = Counts()
    sidecar = Sidecar(data, fault_store.url, fault_store.env, counts)
    sidecar.start()
    try:
        for _ in range(CYCLES):
            counts.cycles += 1
            await asyncio.sleep(rnd.uniform(0.2, 0.7))  # steady load, replication keeping up
            fault = rnd.choice(["pause", "pause", "kill-store", "kill-sidecar", "both"])
            if fault == "kill-store" and fault_store.kill_restart is None:
                fault = "pause"
            if fault in ("pause", "both"):
                counts.store_pauses += 1
                fault_store.pause()
                # Longer than the client's 1.5 s read timeout now and then: puts time out, then land.
                await asyncio.sleep(rnd.uniform(0.1, 2.5))
                if fault == "both":
                    counts.sidecar_kills += 1
                    sidecar.kill()  # mid-put, with the store hung
                fault_store.resume()
                if fault == "both":
                    sidecar.start()
            elif fault == "kill-store" and fault_store.kill_restart is not None:
                counts.store_kills += 1
                await asyncio.to_thread(fault_store.kill_restart, rnd.uniform(0.1, 1.0))
            else:
                await asyncio.sleep(rnd.uniform(0.0, 0.3))
                counts.sidecar_kills += 1
                sidecar.kill()
                sidecar.start()
        sidecar.kill()
        status = sidecar.drain()
    finally:
        if sidecar.proc is not None:
            sidecar.kill()
    assert status["integrity_error"] is None and status["backlog_bytes"] == 0, status

    for name, value in fault_store.env.items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    report = await pull_and_verify(fault_store.url, tmp_path / "pulled", load_trust(trust), workers=1)
    found = {seq for seq, _ in segment_records(tmp_path / "pulled")}
    print(counts.line(fault_store.name, len(found & counts.acknowledged)))
    assert report.ok, report.findings
    assert counts.alarms == [], counts.alarms
    assert counts.acknowledged and counts.acknowledged <= found, sorted(counts.acknowledged - found)[:20]
    assert segment_records(tmp_path / "pulled") == segment_records(data)
    assert counts.sidecar_kills >= 10 and counts.store_pauses >= 10
    if fault_store.kill_restart is not None:
        assert counts.store_kills >= 5
