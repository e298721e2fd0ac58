"""The S3 store goes away under load and comes back: the sidecar serves per policy, then catches up.

The sidecar is `make_app` in this process, in front of a fake Keycloak (an aiohttp app that
answers admin role-mapping POSTs with 204), replicating to the loopback moto S3 server. The
load is mutating admin requests, so each one needs an intent record before it is forwarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiobotocore.session import get_session
from aiohttp import web
from aiohttp.test_utils import TestServer

from sidecar.app import REPLICATOR, Settings, make_app
from sidecar.audit.remote import compare_remote, pull_and_verify
from sidecar.audit.verifier import load_trust, verify_directory
from sidecar.ledger.writer import LedgerConfig
from sidecar.replicate.replicator import Replicator

from .conftest import REGION, MotoServer, create_locked_bucket, new_bucket_name
from .support import catch_up, drain, init_keys, lag_line, s3_url, segment_records, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.s3]

OUTAGE_S = 30.0
RATE = 10.0  # admin changes per second
SEEN = web.AppKey("seen", list[str])


def fake_keycloak() -> web.Application:
    """Answers what the load sends: role-mapping POSTs (204), token requests (JSON); the rest is 404."""
    app = web.Application()
    app[SEEN] = []

    async def role_mapping(request: web.Request) -> web.Response:
        await request.read()
        request.app[SEEN].append(request.path)
        return web.Response(status=204)

    async def token(request: web.Request) -> web.Response:
        return web.json_response({"access_token": "fake", "token_type": "Bearer", "expires_in": 300})

    app.router.add_post("/admin/realms/{realm}/users/{user}/role-mappings/realm", role_mapping)
    app.router.add_post("/realms/{realm}/protocol/openid-connect/token", token)
    return app


@dataclass
class Sidecar:
    server: TestServer
    app: web.Application
    upstream_server: TestServer
    upstream: web.Application
    data: Path
    url: str  # the store URL

    @property
    def rep(self) -> Replicator:
        return self.app[REPLICATOR]

    @property
    def seen(self) -> list[str]:
        return self.upstream[SEEN]


@dataclass
class Load:
    """Admin POSTs at a steady rate until stopped; every answer kept with its path and time."""

    sidecar: Sidecar
    results: list[tuple[float, str, int, str | None]] = field(default_factory=list)  # (t, path, status, RA)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        pending: set[asyncio.Task[None]] = set()
        async with aiohttp.ClientSession() as http:
            i = 0
            while not self._stop.is_set():
                delay = t0 + i / RATE - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(self._one(http, f"u-{uuid.uuid4().hex[:12]}"))
                pending.add(task)
                task.add_done_callback(pending.discard)
                i += 1
            await asyncio.gather(*pending)

    async def _one(self, http: aiohttp.ClientSession, user: str) -> None:
        path = f"/admin/realms/load/users/{user}/role-mappings/realm"
        async with http.post(
            self.sidecar.server.make_url(path),
            json=[{"id": "r1", "name": "viewer"}],
            headers={"Authorization": "Bearer not-a-jwt"},
        ) as resp:
            await resp.read()
            self.results.append((time.monotonic(), path, resp.status, resp.headers.get("Retry-After")))

    def stop(self) -> None:
        self._stop.set()

    def since(self, t: float) -> list[tuple[float, str, int, str | None]]:
        return [r for r in self.results if r[0] >= t]


@pytest.fixture
async def bucket(s3_server: MotoServer) -> AsyncIterator[str]:
    """A fresh Object Lock bucket; the S3 server is running again after the test whatever happened."""
    async with get_session().create_client("s3", endpoint_url=s3_server.endpoint_url, region_name=REGION) as raw:
        name = new_bucket_name()
        await create_locked_bucket(raw, name)
    try:
        yield name
    finally:
        s3_server.start()


async def start_sidecar(tmp_path: Path, s3_server: MotoServer, bucket: str, high_water: int) -> Sidecar:
    upstream_app = fake_keycloak()
    upstream = TestServer(upstream_app, host="127.0.0.1")
    await upstream.start_server()
    data = tmp_path / "ledger"
    init_keys(data)
    url = s3_url(bucket, s3_server.endpoint_url)
    settings = Settings(
        upstream=str(upstream.make_url("")).rstrip("/"),
        data_dir=data,
        store_url=url,
        replication_interval_s=0.2,
        high_water_bytes=high_water,
        ledger=LedgerConfig(segment_max_bytes=32 * 1024),
    )
    app = make_app(settings)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return Sidecar(server, app, upstream, upstream_app, data, url)


async def stop_sidecar(sidecar: Sidecar) -> None:
    await sidecar.server.close()  # proxy, ledger (final checkpoint), then the replicator drains
    await sidecar.upstream_server.close()


async def health(sidecar: Sidecar) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(sidecar.server.make_url("/.sidecar/health")) as resp:
        return resp.status, await resp.json()


async def assert_bucket_complete(sidecar: Sidecar, tmp_path: Path) -> None:
    """After shutdown: every local record is in the bucket, both verify, and they tell one story."""
    trust = load_trust(sidecar.data / "trust.json")
    remote = await pull_and_verify(sidecar.url, tmp_path / "pulled", trust, workers=1)
    assert remote.ok, remote.findings
    local_records = segment_records(sidecar.data)
    assert segment_records(tmp_path / "pulled") == local_records, "the bucket holds exactly the local records"
    local = verify_directory(sidecar.data, trust, workers=1)
    assert local.ok, local.findings
    await compare_remote(local, sidecar.data, sidecar.url, tmp_path / "compare", trust, workers=1)
    assert local.findings == []


async def test_outage_under_load_then_catch_up(tmp_path: Path, s3_server: MotoServer, bucket: str) -> None:
    """S3 down for 30 s under load: every admin change succeeds (backlog under the mark), then it drains."""
    sidecar = await start_sidecar(tmp_path, s3_server, bucket, high_water=256 * 1024 * 1024)
    load = Load(sidecar)
    runner = asyncio.create_task(load.run())
    try:
        await asyncio.sleep(5)
        # Under steady load the backlog is rarely exactly 0 at a poll; "keeping up" is a small backlog.
        await catch_up(sidecar.rep, 30, within=8 * 1024)
        s3_server.stop()
        down = time.monotonic()
        await wait_for(lambda: sidecar.rep.last_error is not None, 15, "the replicator to notice the outage")
        status, body = await health(sidecar)
        assert status == 200 and body["status"] == "ok", body  # under the mark: serving normally
        assert body["replication"]["state"] == "retrying" and body["replication"]["reason"]
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down)))
        backlog = sidecar.rep.backlog_bytes()
        s3_server.start()
        up = time.monotonic()
        took = await catch_up(sidecar.rep)
        print(
            f"\noutage {up - down:.1f}s left a backlog of {backlog} bytes; drained {took:.1f}s after restart; "
            + lag_line(sidecar.rep)
        )
        assert backlog > 0
        await asyncio.sleep(2)
    finally:
        load.stop()
        await runner
        s3_server.start()
        with contextlib.suppress(AssertionError):  # with the load stopped, the rest ships now
            await drain(sidecar.rep, 60)
        await stop_sidecar(sidecar)
    during = [r for r in load.results if down <= r[0] <= up]
    assert len(during) >= OUTAGE_S * RATE * 0.8
    assert {r[2] for r in load.results} == {204}, "every admin change succeeded, outage or not"
    assert sorted(sidecar.seen) == sorted(r[1] for r in load.results)
    assert sidecar.rep.backlog_bytes() == 0 and sidecar.rep.integrity_error is None
    records = segment_records(sidecar.data)
    assert len(records) >= 2 * len(load.results)  # an intent and an outcome for each
    await assert_bucket_complete(sidecar, tmp_path)


async def test_outage_past_the_high_water_mark_fails_closed(tmp_path: Path, s3_server: MotoServer, bucket: str) -> None:
    """Past a tiny high-water mark with S3 down, admin changes get 503 unseen by Keycloak; health says why."""
    sidecar = await start_sidecar(tmp_path, s3_server, bucket, high_water=16 * 1024)
    load = Load(sidecar)
    runner = asyncio.create_task(load.run())
    try:
        await asyncio.sleep(3)
        # Under steady load the backlog is rarely exactly 0 at a poll; "keeping up" is well below the mark.
        # (On a loaded machine a 16 KB backlog can build up with the store up, and then refusing is right;
        # test_outage_under_load_then_catch_up shows nothing is refused under a real mark.)
        await catch_up(sidecar.rep, 30, within=8 * 1024)
        caught_up = time.monotonic()
        await wait_for(
            lambda: any(r[2] == 204 for r in load.since(caught_up)),
            30,
            "an admin change to succeed while the store is up and the backlog under the mark",
        )
        s3_server.stop()
        down = time.monotonic()
        await wait_for(lambda: any(r[2] == 503 for r in load.since(down)), 60, "a refused admin change")
        await asyncio.sleep(3)
        status, body = await health(sidecar)
        assert status == 503 and body["status"] == "failing"
        rep_status = body["replication"]
        assert rep_status["state"] == "over-high-water" and rep_status["over_high_water"] is True
        assert "high-water" in rep_status["reason"] and str(s3_server.port) in rep_status["reason"]
        # Not an admin change: plain traffic still passes through to Keycloak.
        async with (
            aiohttp.ClientSession() as http,
            http.get(sidecar.server.make_url("/realms/load/.well-known/openid-configuration")) as resp,
        ):
            assert resp.status == 404  # the fake Keycloak's answer, not the sidecar's 503
        s3_server.start()
        up = time.monotonic()
        took = await catch_up(sidecar.rep)
        await wait_for(
            lambda: any(r[2] == 204 for r in load.since(time.monotonic() - 0.5)), 30, "admin changes to succeed again"
        )
        print(f"\noutage {up - down:.1f}s; drained {took:.1f}s after restart; " + lag_line(sidecar.rep))
        # Under continuing load a 16 KB mark can be crossed again by a slow round; with the load
        # stopped and the backlog shipped, health must say ok.
        load.stop()
        await runner
        await drain(sidecar.rep)
        status, body = await health(sidecar)
        assert status == 200 and body["replication"]["state"] == "ok", body
    finally:
        load.stop()
        await runner
        s3_server.start()
        with contextlib.suppress(AssertionError):  # with the load stopped, the rest ships now
            await drain(sidecar.rep, 60)
        await stop_sidecar(sidecar)
    refused = [r for r in load.results if r[2] == 503]
    assert refused and all(r[3] is not None and int(r[3]) > 0 for r in refused), "503 carries Retry-After"
    assert {r[2] for r in load.results} <= {204, 503}
    assert not {r[1] for r in refused} & set(sidecar.seen), "Keycloak never saw a refused change"
    assert sorted(sidecar.seen) == sorted(r[1] for r in load.results if r[2] == 204)
    assert len(segment_records(sidecar.data)) >= 2 * len(sidecar.seen)
    await assert_bucket_complete(sidecar, tmp_path)
