"""Operations basics of a running sidecar: Prometheus metrics, the access log (text and JSON),
trusted proxies, and a TLS listener whose certificate is reloaded on SIGHUP."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import logging
import os
import signal
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sidecar.app import PARTS, Settings, TlsFiles, client_address, make_app, serve_app
from sidecar.core.events import EventType, IdentityEvent, Outcome, Party
from sidecar.harness.keycloak import free_port
from sidecar.ledger.keystore import KeyStore
from sidecar.logs import JsonFormatter
from tests.deploy.conftest import FORWARDED


def _settings(tmp_path: Path, upstream: TestServer, **kw: Any) -> Settings:
    data = tmp_path / "ledger"
    KeyStore(data).init("ops.test/ledger")
    return Settings(upstream=str(upstream.make_url("")).rstrip("/"), data_dir=data, **kw)


def _sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text format (labels must match exactly)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    key = f"{name}{{{want}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(key + " "):
            return float(line.split()[-1])
    return None


async def test_metrics_count_records_latency_503s_and_upstream(tmp_path: Path, upstream: TestServer) -> None:
    """/.sidecar/metrics counts records by type and outcome, times appends and Keycloak, shows queue depth, and labels a 503 by its reason."""
    app = make_app(_settings(tmp_path, upstream, store_url="memory://"))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:

            async def scrape() -> str:
                async with http.get(server.make_url("/.sidecar/metrics")) as resp:
                    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
                    return await resp.text()

            before = await scrape()
            unverified = Party(kind="unverified", client="x")
            from sidecar.app import _appender

            append = _appender(app[PARTS])
            await append(IdentityEvent(EventType.LOGIN_FAILED, Outcome.FAILED, realm="r"))
            await append(IdentityEvent(EventType.ROLE_GRANTED, Outcome.SUCCEEDED, realm="r", actor=unverified))
            async with http.get(server.make_url("/echo")) as resp:
                assert resp.status == 200
            after = await scrape()

        def grew(name: str, **labels: str) -> float:
            return (_sample(after, name, **labels) or 0) - (_sample(before, name, **labels) or 0)

        assert grew("sidecar_records_total", type="login.failed", outcome="failed") == 1
        assert grew("sidecar_unverified_tokens_total", type="role.granted") == 1
        assert grew("sidecar_append_seconds_count") == 2
        assert grew("sidecar_upstream_seconds_count", caller="proxy") >= 1
        assert _sample(after, "sidecar_ledger_queue_depth") == 0
        assert _sample(after, "sidecar_replication_state", state="ok") == 1
        assert _sample(after, "sidecar_ledger_records") is not None
        assert "sidecar_replication_backlog_bytes" in after and "sidecar_upstream_up 1.0" in after
    finally:
        await server.close()


async def test_a_503_is_counted_by_its_reason(tmp_path: Path, upstream: TestServer) -> None:
    """When the ledger cannot take a record the resulting 503 is counted under the reason the append gave."""
    from sidecar import metrics

    app = make_app(_settings(tmp_path, upstream))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        ledger = app[PARTS].ledger
        assert ledger is not None
        ledger.broken = "disk gone (test)"  # what the writer sets after a failed write it cannot cut back
        before = metrics.UNAVAILABLE.labels(reason="storage")._value.get()
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                server.make_url("/admin/realms/r/users/u/role-mappings/realm"),
                json=[{"id": "x", "name": "y"}],
                headers={"Authorization": "Bearer not-a-token"},
            ) as resp,
        ):
            assert resp.status == 503
        assert metrics.UNAVAILABLE.labels(reason="storage")._value.get() == before + 1
        async with aiohttp.ClientSession() as http, http.get(server.make_url("/.sidecar/health/ready")) as resp:
            assert resp.status == 503 and "disk gone" in (await resp.json())["reasons"]["ledger"]
    finally:
        await server.close()


async def test_access_log_has_one_line_per_request_without_query_or_secrets(
    tmp_path: Path, upstream: TestServer
) -> None:
    """Each request gets one access line (JSON when asked) with method, path, status and time, never its query string or headers."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("sidecar.access")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    server = TestServer(make_app(_settings(tmp_path, upstream)), host="127.0.0.1")
    await server.start_server()
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                server.make_url("/echo?code=s3cret-code&session_state=abc"),
                headers={"Authorization": "Bearer s3cret-token", "Cookie": "KEYCLOAK_IDENTITY=s3cret-cookie"},
            ) as resp,
        ):
            assert resp.status == 200
    finally:
        await server.close()
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    echo = [line for line in lines if line["http"]["path"] == "/echo"]
    assert len(echo) == 1
    assert (
        echo[0]["http"]["status"] == 200
        and echo[0]["http"]["method"] == "GET"
        and echo[0]["logger"] == "sidecar.access"
    )
    assert "s3cret" not in stream.getvalue()


@pytest.mark.parametrize(
    ("peer", "xff", "proto", "expected"),
    [
        ("203.0.113.9", ["198.51.100.7"], "https", ("203.0.113.9", None)),  # untrusted peer: headers ignored
        ("10.0.0.5", ["198.51.100.7"], "https", ("198.51.100.7", "https")),  # the load balancer saw the client
        (
            "10.0.0.5",
            ["6.6.6.6, 198.51.100.7"],
            "http",
            ("198.51.100.7", "http"),
        ),  # a spoofed hop before it is not believed
        ("10.0.0.5", ["198.51.100.7, 10.0.0.9"], None, ("198.51.100.7", None)),  # trusted hops are skipped
        ("10.0.0.5", ["not-an-ip"], None, ("10.0.0.5", None)),  # garbage stops the walk at the trusted peer
    ],
)
def test_client_address_believes_only_trusted_proxies(
    peer: str, xff: list[str], proto: str | None, expected: tuple[str, str | None]
) -> None:
    """X-Forwarded-For is read right to left from a trusted peer only; the first untrusted hop is the client."""
    from sidecar.app import _networks

    assert client_address(peer, xff, proto, _networks(("10.0.0.0/8",))) == expected


async def test_forwarded_for_is_overwritten_unless_the_peer_is_a_trusted_proxy(
    tmp_path: Path, upstream: TestServer
) -> None:
    """A spoofed X-Forwarded-For from an untrusted client is replaced by its socket address; from a trusted load balancer the client it names is forwarded."""
    for trusted, expected in (((), "127.0.0.1"), (("127.0.0.0/8",), "198.51.100.7")):
        server = TestServer(
            make_app(_settings(tmp_path / str(len(trusted)), upstream, trusted_proxies=trusted)), host="127.0.0.1"
        )
        await server.start_server()
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.get(
                    server.make_url("/echo"), headers={"X-Forwarded-For": "198.51.100.7", "X-Forwarded-Proto": "https"}
                ) as resp,
            ):
                seen = await resp.json()
            assert seen["X-Forwarded-For"] == expected
            assert seen["X-Forwarded-Proto"] == ("https" if trusted else "http")
        finally:
            await server.close()
    assert len(upstream.app[FORWARDED]) == 2


def _cert(directory: Path, name: str) -> tuple[Path, Path, int]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file, cert.serial_number


async def _served_serial(port: int) -> int:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    _reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    await writer.wait_closed()
    return x509.load_der_x509_certificate(der).serial_number


async def test_tls_listener_reloads_its_certificate_on_sighup(tmp_path: Path, upstream: TestServer) -> None:
    """serve_app answers over TLS with the configured certificate; after the files change, SIGHUP makes new handshakes use the new one, and a broken pair is refused while the old one stays."""
    cert, key, first = _cert(tmp_path, "one.example")
    settings = _settings(tmp_path, upstream, port=free_port())
    tls = TlsFiles(cert, key)
    started = asyncio.Event()
    task = asyncio.create_task(
        serve_app(make_app(settings), "127.0.0.1", settings.port, tls=tls, ready=lambda _addrs: started.set())
    )
    try:
        await asyncio.wait_for(started.wait(), 30)
        assert await _served_serial(settings.port) == first
        _, _, second = _cert(tmp_path, "two.example")  # overwrites cert.pem and key.pem
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(100):
            if await _served_serial(settings.port) == second:
                break
            await asyncio.sleep(0.02)
        assert await _served_serial(settings.port) == second
        key.write_text("not a key")
        assert tls.reload() is False
        assert await _served_serial(settings.port) == second
    finally:
        os.kill(os.getpid(), signal.SIGTERM)  # serve_app's own handler: a clean stop
        await asyncio.wait_for(task, 30)
