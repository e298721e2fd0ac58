"""Fixtures for the deployment tests: a fake Keycloak on loopback, a moto S3 server, fake AWS credentials."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from moto.server import ThreadedMotoServer

from sidecar.harness.keycloak import free_port

FORWARDED = web.AppKey("forwarded", list[dict[str, str]])


def fake_keycloak() -> web.Application:
    """Answers /realms/master (readiness) and echoes the forwarding headers it received on /echo."""
    app = web.Application()
    app[FORWARDED] = []

    async def realm(request: web.Request) -> web.Response:
        return web.json_response({"realm": "master"})

    async def echo(request: web.Request) -> web.Response:
        seen = {k: v for k, v in request.headers.items() if k.lower().startswith(("x-forwarded", "forwarded"))}
        request.app[FORWARDED].append(seen)
        return web.json_response(seen)

    app.router.add_get("/realms/master", realm)
    app.router.add_get("/echo", echo)
    return app


@pytest.fixture
async def upstream() -> AsyncIterator[TestServer]:
    """The fake Keycloak, started on a free loopback port."""
    server = TestServer(fake_keycloak(), host="127.0.0.1", port=free_port())
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's S3 API in this process on a free loopback port."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def fake_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake credentials and no way to reach a real AWS configuration."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
