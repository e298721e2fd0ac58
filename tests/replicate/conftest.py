"""Fixtures for the object stores: loopback S3 servers (moto, versitygw), fresh Object Lock buckets, stores.

versitygw (`sidecar.harness.versitygw`) is the WORM server: one process per session, a fresh bucket
with Object Lock and a default COMPLIANCE retention per test, its random root credentials put in
the environment by `versitygw_env` (moto accepts any credentials, so both work in one test).

`MotoServer` runs moto's S3 in this process, on 127.0.0.1 and a free port. `stop()` closes the
listening socket (clients then get "connection refused", as with a dead store) and `start()` binds
the same port again. moto keeps its buckets in process-global state, so **objects survive a
stop/start** (checked: a bucket created before `stop()` is listed after `start()`). A `moto_server`
subprocess would lose everything on restart; that is why this is in-process.

Credentials are fake and set per test; no real AWS configuration or metadata service is read.
"""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from moto.server import ThreadedMotoServer

from sidecar.harness.versitygw import S3Bucket, VersityGW
from sidecar.replicate.directory import DirectoryStore
from sidecar.replicate.memory import MemoryStore
from sidecar.replicate.s3 import S3Store
from sidecar.replicate.store import ObjectStore

REGION = "us-east-1"
S3_PREFIX = "ledger"


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class MotoServer:
    """moto's S3 API on 127.0.0.1:port, in a thread of this process; stoppable and restartable."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port if port is not None else free_port()
        self._server: ThreadedMotoServer | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        """Listen on the same port as before; S3 state from before a stop() is still there."""
        if self._server is not None:
            return
        # ThreadedMotoServer.start() waits forever if its thread cannot bind the port (the error
        # dies with the thread), so prove the port is free first and fail loudly if not.
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", self.port))
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        server.start()
        self._server = server

    def stop(self) -> None:
        """Stop serving and close the socket: new connections are refused until start()."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.stop()  # werkzeug's serve_forever closes the listening socket on the way out


@pytest.fixture(autouse=True)
def fake_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Fake credentials, a fixed region, and no way to reach real AWS config or instance metadata."""
    nowhere = tmp_path_factory.getbasetemp() / "no-aws-config"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(nowhere))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(nowhere))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[MotoServer]:
    """One moto S3 server for the session; a test that stops it must start it again."""
    # werkzeug logs every request at INFO to stderr; only its errors are worth seeing.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = MotoServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def new_bucket_name() -> str:
    return f"ledger-{uuid.uuid4().hex[:16]}"


@pytest.fixture
def s3_client_kwargs(s3_server: MotoServer) -> dict[str, Any]:
    """Arguments for a raw aiobotocore client aimed at the moto server."""
    return {"endpoint_url": s3_server.endpoint_url, "region_name": REGION}


@pytest.fixture
async def raw_s3(s3_client_kwargs: dict[str, Any]) -> AsyncIterator[Any]:
    """A raw aiobotocore S3 client: what an attacker with bucket credentials would use."""
    from aiobotocore.session import get_session

    async with get_session().create_client("s3", **s3_client_kwargs) as client:
        yield client


async def create_locked_bucket(raw_s3: Any, name: str, days: int = 1) -> str:
    """A bucket with Object Lock (and so versioning) and a default COMPLIANCE retention, as production needs."""
    await raw_s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    await raw_s3.put_object_lock_configuration(
        Bucket=name,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": days}},
        },
    )
    return name


@pytest.fixture
async def s3_bucket(raw_s3: Any) -> str:
    """A fresh bucket created with Object Lock (and so versioning) and a default retention."""
    return await create_locked_bucket(raw_s3, new_bucket_name())


@pytest.fixture
async def s3_store(s3_server: MotoServer, s3_bucket: str) -> AsyncIterator[S3Store]:
    """Our S3 driver on a fresh Object Lock bucket, under a prefix."""
    store = S3Store(s3_bucket, S3_PREFIX, endpoint_url=s3_server.endpoint_url, region=REGION)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def memory_store() -> MemoryStore:
    """A fresh in-memory store."""
    return MemoryStore()


@pytest.fixture
def directory_store(tmp_path: Path) -> DirectoryStore:
    """A directory store in a test's own temp directory (the root does not exist yet)."""
    return DirectoryStore(tmp_path / "store")


@pytest.fixture(scope="session")
def versitygw_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VersityGW]:
    """One versitygw for the session (built or reused by the harness; a missing binary fails)."""
    server = VersityGW(tmp_path_factory.mktemp("versitygw"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def versitygw_env(versitygw_server: VersityGW, monkeypatch: pytest.MonkeyPatch) -> VersityGW:
    """The server's credentials in the environment, for the CLI and `open_store` by URL."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", versitygw_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", versitygw_server.secret_key)
    return versitygw_server


@pytest.fixture
def versitygw_bucket(versitygw_env: VersityGW) -> S3Bucket:
    """A fresh bucket with Object Lock and a default COMPLIANCE retention of one day."""
    return versitygw_env.create_bucket()


@pytest.fixture
async def versitygw_store(versitygw_bucket: S3Bucket) -> AsyncIterator[S3Store]:
    """Our S3 driver on a fresh versitygw Object Lock bucket, under a prefix."""
    store = S3Store(
        versitygw_bucket.bucket,
        S3_PREFIX,
        endpoint_url=versitygw_bucket.endpoint_url,
        region=REGION,
        **versitygw_bucket.credentials(),
    )
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture(
    params=[
        "memory",
        "directory",
        pytest.param("s3", marks=pytest.mark.s3),
        pytest.param("versitygw", marks=pytest.mark.s3),
    ],
)
def store(request: pytest.FixtureRequest) -> ObjectStore:
    """Each driver in turn (memory, directory, moto S3, versitygw S3), so the contract tests run the same
    assertions against all of them."""
    driver: ObjectStore = request.getfixturevalue(f"{request.param}_store")
    return driver
