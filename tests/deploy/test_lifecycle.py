"""The app's resources open in data-path order and close in reverse, also when one fails to start;
liveness and readiness are separate, and readiness names what is failing."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiobotocore.session import get_session
from aiohttp.test_utils import TestServer

from sidecar.app import PARTS, RESOURCES, Settings, make_app, serve_app
from sidecar.errors import ConfigError
from sidecar.harness.keycloak import free_port
from sidecar.ledger.keystore import KeyStore
from sidecar.ledger.writer import Ledger
from sidecar.replicate.memory import MemoryStore
from sidecar.replicate.store import PutResult


def _init(data: Path) -> Path:
    KeyStore(data).init("lifecycle.test/ledger")
    return data


async def _get(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.json()


def test_resources_are_in_data_path_order() -> None:
    """The ledger opens first and the proxy last, with the store check and replicator in between."""
    names = [r.__name__ for r in RESOURCES]
    assert names[0] == "_ledger" and names[-1] == "_proxy"
    assert names.index("_index") < names.index("_store") < names.index("_replicator") < names.index("_side_calls")


@pytest.mark.s3
async def test_bucket_without_object_lock_stops_the_start_and_closes_what_opened(
    tmp_path: Path, moto_endpoint: str, fake_aws: None
) -> None:
    """A bucket without Object Lock refuses the start with the fix in the message; the ledger lock and the index are released."""
    data = _init(tmp_path / "ledger")
    bucket = f"plain-{uuid.uuid4().hex[:12]}"
    async with get_session().create_client("s3", endpoint_url=moto_endpoint, region_name="us-east-1") as s3:
        await s3.create_bucket(Bucket=bucket)  # no ObjectLockEnabledForBucket
    settings = Settings(
        upstream=f"http://127.0.0.1:{free_port()}",
        data_dir=data,
        port=free_port(),
        store_url=f"s3://{bucket}/ledger?endpoint={moto_endpoint}&region=us-east-1",
    )
    app = make_app(settings)
    with pytest.raises(ConfigError, match="Object Lock"):
        await serve_app(app, "127.0.0.1", settings.port)
    parts = app[PARTS]
    assert parts.ledger is not None and parts.index is not None, "ledger and index had been opened"
    assert not (data / "index.sqlite-wal").exists(), "the index was not closed (its WAL file is still there)"
    again = await Ledger.open(data)  # would raise "another sidecar is writing" if the lock were still held
    await again.close()


async def test_readiness_follows_keycloak_while_liveness_stays(tmp_path: Path) -> None:
    """With Keycloak unreachable the sidecar is live but not ready (reason: upstream); once it answers, ready."""
    from aiohttp import web

    from tests.deploy.conftest import fake_keycloak

    kc_port = free_port()
    settings = Settings(
        upstream=f"http://127.0.0.1:{kc_port}", data_dir=_init(tmp_path / "ledger"), upstream_probe_s=0.1
    )
    server = TestServer(make_app(settings), host="127.0.0.1")
    await server.start_server()
    kc: TestServer | None = None
    try:
        status, _ = await _get(str(server.make_url("/.sidecar/health/live")))
        assert status == 200
        status, body = await _get(str(server.make_url("/.sidecar/health/ready")))
        assert status == 503 and "unreachable" in body["reasons"]["upstream"], body
        kc = TestServer(fake_keycloak(), host="127.0.0.1", port=kc_port)
        await kc.start_server()
        for _ in range(100):
            status, body = await _get(str(server.make_url("/.sidecar/health/ready")))
            if status == 200:
                break
            await asyncio.sleep(0.05)
        assert status == 200 and body["status"] == "ok" and body["reasons"] == {}, body
        assert isinstance(kc.app, web.Application)
    finally:
        await server.close()
        if kc is not None:
            await kc.close()


async def test_readiness_fails_while_replication_fails(tmp_path: Path, upstream: TestServer) -> None:
    """A replication integrity error makes readiness 503 with the reason, while liveness stays 200."""
    settings = Settings(
        upstream=str(upstream.make_url("")).rstrip("/"),
        data_dir=_init(tmp_path / "ledger"),
        store_url="memory://",
        replication_interval_s=0.05,
    )
    app = make_app(settings)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        parts = app[PARTS]
        rep = parts.replicator
        assert rep is not None and isinstance(rep.store, MemoryStore) and parts.ledger is not None
        for _ in range(200):
            if rep.backlog_bytes() == 0:
                break
            await asyncio.sleep(0.02)
        store = rep.store
        real_put = store.put

        async def someone_writes_first(key: str, data: bytes) -> PutResult:
            # Chunk keys name both ends of their range, so the foreign bytes go in just before our put.
            if key.startswith("tail/"):
                store.tamper(key, b"someone else's bytes")
            return await real_put(key, data)

        store.put = someone_writes_first  # type: ignore[method-assign]  # the store twin, written around
        from sidecar.core.events import EventType, IdentityEvent, Outcome

        await parts.ledger.append(IdentityEvent(EventType.LOGIN_FAILED, Outcome.FAILED, realm="r"))
        for _ in range(200):
            if rep.integrity_error:
                break
            await asyncio.sleep(0.02)
        status, body = await _get(str(server.make_url("/.sidecar/health/ready")))
        assert status == 503 and "integrity" in body["reasons"]["replication"], body
        status, _ = await _get(str(server.make_url("/.sidecar/health/live")))
        assert status == 200
    finally:
        await server.close()
