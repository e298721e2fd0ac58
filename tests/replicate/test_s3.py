"""The S3 driver's own behaviour: error mapping, conditional-write races and fallback, outages."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import pytest
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)

from sidecar.errors import ConfigError, StorageError, StoreIntegrityError
from sidecar.replicate.s3 import S3RequestError, S3Store, map_s3_errors
from sidecar.replicate.store import ObjectNotFound, StoreUnavailable

from .conftest import REGION, S3_PREFIX, MotoServer

STORE = "s3://b/p/"


def client_error(code: str, status: int, message: str = "says S3") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op"
    )


@pytest.mark.parametrize(
    ("raised", "expected", "message"),
    [
        (client_error("NoSuchKey", 404), ObjectNotFound, "s3://b/p/: no object 'k/1'"),
        (client_error("404", 404), ObjectNotFound, "s3://b/p/: no object 'k/1'"),
        (
            client_error("AccessDenied", 403, "Access Denied"),
            S3RequestError,
            "s3://b/p/: GetObject 'k/1': AccessDenied (HTTP 403): Access Denied",
        ),
        (
            client_error("SlowDown", 503),
            StoreUnavailable,
            "s3://b/p/: GetObject 'k/1': SlowDown (HTTP 503): says S3",
        ),
        (
            EndpointConnectionError(endpoint_url="http://127.0.0.1:1/b"),
            StoreUnavailable,
            "s3://b/p/: GetObject 'k/1': Could not connect to the endpoint URL: \"http://127.0.0.1:1/b\"",
        ),
        (
            ReadTimeoutError(endpoint_url="http://127.0.0.1:1/b"),
            StoreUnavailable,
            "s3://b/p/: GetObject 'k/1': Read timeout on endpoint URL: \"http://127.0.0.1:1/b\"",
        ),
        (
            TimeoutError("body stalled"),
            StoreUnavailable,
            "s3://b/p/: GetObject 'k/1': TimeoutError: body stalled",
        ),
        (NoCredentialsError(), ConfigError, "s3://b/p/: GetObject 'k/1': Unable to locate credentials"),
    ],
    ids=["NoSuchKey", "404", "AccessDenied", "SlowDown", "connect", "read-timeout", "timeout", "credentials"],
)
def test_map_s3_errors(raised: Exception, expected: type[Exception], message: str) -> None:
    """Each botocore/aiobotocore failure maps to one sidecar error whose message names op and key."""
    with pytest.raises(expected) as caught, map_s3_errors(STORE, "GetObject", "k/1"):
        raise raised
    assert str(caught.value).startswith(message)
    assert caught.value.__cause__ is raised


def test_map_s3_errors_keeps_the_s3_code() -> None:
    """An S3 error with no special meaning becomes S3RequestError carrying code and status."""
    with pytest.raises(S3RequestError) as caught, map_s3_errors(STORE, "PutObject", "k/1"):
        raise client_error("InvalidRequest", 400, "nope")
    assert (caught.value.code, caught.value.status, caught.value.server_message) == (
        "InvalidRequest",
        400,
        "nope",
    )
    assert isinstance(caught.value, StorageError)


def test_map_s3_errors_lets_bugs_through() -> None:
    """A botocore parameter validation error is our bug and is not disguised as a storage error."""
    with pytest.raises(ParamValidationError), map_s3_errors(STORE, "PutObject", "k/1"):
        raise ParamValidationError(report="bad")


@pytest.mark.s3
async def test_writer_that_wins_the_race_with_other_bytes_is_detected(s3_store: S3Store, raw_s3: Any) -> None:
    """If someone writes other bytes between our HEAD and PUT, If-None-Match stops us and put raises."""
    full_key = f"{S3_PREFIX}/checkpoints/0001"
    forged_first = False

    async def forge_once(**kwargs: Any) -> None:
        nonlocal forged_first
        if not forged_first:
            forged_first = True
            await raw_s3.put_object(Bucket=s3_store.bucket, Key=full_key, Body=b"forged")

    client = await s3_store._s3()  # the store's own client, to hook in between HEAD and PUT
    client.meta.events.register("before-call.s3.PutObject", forge_once)
    with pytest.raises(StoreIntegrityError, match="already holds different bytes"):
        await s3_store.put("checkpoints/0001", b"original")
    assert forged_first
    assert len(await s3_store.versions("checkpoints/0001")) == 1  # ours never landed


@pytest.mark.s3
async def test_store_without_conditional_put_falls_back(s3_store: S3Store, caplog: pytest.LogCaptureFixture) -> None:
    """A store answering 501 to If-None-Match is written without it after one warning."""
    refused: list[str] = []

    class Http:  # the two attributes botocore reads from an HTTP response here
        status_code = 501
        headers: ClassVar[dict[str, str]] = {}

    def refuse_conditional_put(params: dict[str, Any], **kwargs: Any) -> Any:
        if "If-None-Match" not in params["headers"]:
            return None
        refused.append(params["url_path"])
        error = {
            "Code": "NotImplemented",
            "Message": "A header you provided implies unimplemented functionality",
        }
        return Http(), {"Error": error, "ResponseMetadata": {"HTTPStatusCode": 501}}

    client = await s3_store._s3()  # the store's own client, to play an older S3 implementation
    client.meta.events.register("before-call.s3.PutObject", refuse_conditional_put)
    with caplog.at_level(logging.WARNING, logger="sidecar.replicate.s3"):
        first = await s3_store.put("segments/0001", b"one")
        second = await s3_store.put("segments/0002", b"two")
    assert (first.created, second.created) == (True, True)
    assert len(refused) == 1  # detected once, then remembered
    assert [r.message for r in caplog.records if "If-None-Match" in r.message] != []
    assert (await s3_store.put("segments/0001", b"one")).created is False


@pytest.mark.s3
async def test_outage_and_restart_keep_objects(s3_server: MotoServer, s3_store: S3Store) -> None:
    """While the server is stopped calls fail fast with StoreUnavailable; after restart objects are back."""
    await s3_store.put("segments/0001", b"before outage")
    s3_server.stop()
    try:
        with pytest.raises(StoreUnavailable):
            await s3_store.get("segments/0001")
    finally:
        s3_server.start()
    assert await s3_store.get("segments/0001") == b"before outage"


@pytest.mark.s3
async def test_missing_credentials_is_config_error(
    s3_server: MotoServer, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no credentials anywhere, the first call raises ConfigError naming the operation."""
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    store = S3Store(s3_bucket, endpoint_url=s3_server.endpoint_url, region=REGION)
    try:
        with pytest.raises(ConfigError, match="PutObject 'k': Unable to locate credentials"):
            await store.put("k", b"x")
    finally:
        await store.close()


@pytest.mark.s3
async def test_closed_store_refuses_calls(s3_store: S3Store) -> None:
    """After close(), every call raises StorageError instead of reopening a client."""
    await s3_store.close()
    with pytest.raises(StorageError, match="store is closed"):
        await s3_store.get("k")
