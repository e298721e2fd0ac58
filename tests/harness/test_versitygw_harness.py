"""The versitygw harness: the cached binary, a restartable server that keeps its objects, kill and pause."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from sidecar.errors import ConfigError
from sidecar.harness.versitygw import VersityGW, ensure_binary, versitygw_bucket

pytestmark = pytest.mark.s3


def test_context_manager_yields_a_locked_bucket_and_stops(tmp_path: Path) -> None:
    """versitygw_bucket yields a bucket with Object Lock and a default COMPLIANCE retention; the port closes after."""
    with versitygw_bucket(tmp_path / "gw") as s3:
        assert s3.store_url("p").startswith(f"s3://{s3.bucket}/p?endpoint={s3.endpoint_url}")
        assert s3.secret_key not in repr(s3)
        client = s3.client()
        try:
            lock = client.get_object_lock_configuration(Bucket=s3.bucket)["ObjectLockConfiguration"]
        finally:
            client.close()
        assert lock == {"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}}}
        port = int(s3.endpoint_url.rsplit(":", 1)[1])
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "the server is gone after the block"


def test_objects_survive_a_kill_and_a_restart(tmp_path: Path) -> None:
    """SIGKILL then start() on the same port and directory: the bucket and its objects are still there."""
    server = VersityGW(tmp_path / "gw")
    server.start()
    try:
        bucket = server.create_bucket()
        client = server.client()
        client.put_object(Bucket=bucket.bucket, Key="k", Body=b"kept")
        client.close()
        pid = server.pid
        server.kill()
        assert not server.running
        server.start()
        assert server.pid != pid
        client = server.client()
        try:
            assert client.get_object(Bucket=bucket.bucket, Key="k")["Body"].read() == b"kept"
        finally:
            client.close()
    finally:
        server.stop()


def test_paused_server_accepts_but_never_answers(tmp_path: Path) -> None:
    """pause() (SIGSTOP) leaves the port accepting connections with no answer; resume() brings answers back."""
    with VersityGW(tmp_path / "gw") as server:
        server.pause()
        with socket.create_connection(("127.0.0.1", server.port), timeout=2) as s:
            s.settimeout(0.5)
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            with pytest.raises(TimeoutError):
                s.recv(1)
        server.resume()
        client = server.client()
        try:
            assert "Buckets" in client.list_buckets()
        finally:
            client.close()


def test_missing_binary_without_go_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no cached binary and no Go toolchain on PATH, ensure_binary fails naming the build command."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match=r"cannot build versitygw: .*go install github.com/versity/versitygw"):
        ensure_binary(tmp_path / "bin")


def test_cached_binary_is_reused() -> None:
    """The binary built once is found again without building."""
    assert ensure_binary() == ensure_binary()
    assert ensure_binary().is_file()
