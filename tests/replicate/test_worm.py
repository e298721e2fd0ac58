"""WORM on a server that enforces it: versitygw with Object Lock, attacked with the raw S3 API.

moto accepts shortening a COMPLIANCE retention, so these claims are proven on versitygw only:
a version our driver wrote cannot be deleted, replaced in place, or unlocked early, and the
sidecar refuses to start on a bucket without Object Lock or without a default retention.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from botocore.exceptions import ClientError

from sidecar.app import Settings, make_app
from sidecar.errors import ConfigError, StoreIntegrityError
from sidecar.harness.versitygw import S3Bucket, VersityGW
from sidecar.replicate.s3 import S3Store

from .conftest import REGION, S3_PREFIX, free_port
from .support import init_keys

pytestmark = pytest.mark.s3


def refused(call: Any, **params: Any) -> str:
    """The S3 error code of a call that must fail."""
    with pytest.raises(ClientError) as caught:
        call(**params)
    return str(caught.value.response["Error"]["Code"])


@pytest.fixture
def raw(versitygw_env: VersityGW) -> Any:
    """A raw S3 client with the server's root credentials: the strongest attacker the store knows."""
    client = versitygw_env.client()
    try:
        yield client
    finally:
        client.close()


async def test_locked_version_cannot_be_deleted(versitygw_store: S3Store, raw: Any) -> None:
    """A version our driver wrote refuses deletion by version id, also with a governance bypass."""
    result = await versitygw_store.put("segments/00000000.seg", b"sealed segment")
    key = f"{S3_PREFIX}/segments/00000000.seg"
    bucket = versitygw_store.bucket
    assert refused(raw.delete_object, Bucket=bucket, Key=key, VersionId=result.version_id) == "AccessDenied"
    assert (
        refused(raw.delete_object, Bucket=bucket, Key=key, VersionId=result.version_id, BypassGovernanceRetention=True)
        == "AccessDenied"
    )
    assert await versitygw_store.get("segments/00000000.seg") == b"sealed segment"


async def test_locked_version_cannot_be_overwritten_in_place(versitygw_store: S3Store, raw: Any) -> None:
    """A raw PutObject adds a version beside ours; our bytes stay under their version id and put refuses the key."""
    ours = await versitygw_store.put("checkpoints/000000000001-00000000000000000001.note", b"original")
    key = f"{S3_PREFIX}/checkpoints/000000000001-00000000000000000001.note"
    bucket = versitygw_store.bucket
    assert refused(raw.put_object, Bucket=bucket, Key=key, Body=b"forged", IfNoneMatch="*") == "PreconditionFailed"
    raw.put_object(Bucket=bucket, Key=key, Body=b"forged")  # without the condition: a new version
    kept = raw.get_object(Bucket=bucket, Key=key, VersionId=ours.version_id)["Body"].read()
    assert kept == b"original"
    versions = await versitygw_store.versions(key.split("/", 1)[1])
    assert versions[0].version_id == ours.version_id and len(versions) == 2
    with pytest.raises(StoreIntegrityError, match="already holds different bytes"):
        await versitygw_store.put("checkpoints/000000000001-00000000000000000001.note", b"original")


async def test_retention_cannot_be_shortened(versitygw_store: S3Store, raw: Any) -> None:
    """A COMPLIANCE retain-until date cannot be moved earlier, nor the lock removed, even with a bypass."""
    result = await versitygw_store.put("segments/00000001.seg", b"sealed")
    key = f"{S3_PREFIX}/segments/00000001.seg"
    bucket = versitygw_store.bucket
    head = raw.head_object(Bucket=bucket, Key=key, VersionId=result.version_id)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    until = head["ObjectLockRetainUntilDate"]
    assert until > datetime.now(UTC) + timedelta(days=300)  # the driver's 365 days
    sooner = {"Mode": "COMPLIANCE", "RetainUntilDate": datetime.now(UTC) + timedelta(days=1)}
    assert (
        refused(raw.put_object_retention, Bucket=bucket, Key=key, VersionId=result.version_id, Retention=sooner)
        == "AccessDenied"
    )
    assert (
        refused(
            raw.put_object_retention,
            Bucket=bucket,
            Key=key,
            VersionId=result.version_id,
            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": sooner["RetainUntilDate"]},
            BypassGovernanceRetention=True,
        )
        == "AccessDenied"
    )
    again = raw.head_object(Bucket=bucket, Key=key, VersionId=result.version_id)
    assert (again["ObjectLockMode"], again["ObjectLockRetainUntilDate"]) == ("COMPLIANCE", until)


def store_on(bucket: S3Bucket) -> S3Store:
    return S3Store(bucket.bucket, S3_PREFIX, endpoint_url=bucket.endpoint_url, region=REGION, **bucket.credentials())


async def test_bucket_without_object_lock_is_refused(versitygw_env: VersityGW) -> None:
    """ensure_ready on a plain bucket is a ConfigError naming what to enable."""
    store = store_on(versitygw_env.create_bucket(object_lock=False))
    try:
        with pytest.raises(ConfigError, match=r"has no S3 Object Lock|Object Lock disabled") as caught:
            await store.ensure_ready()
    finally:
        await store.close()
    assert "--object-lock-enabled-for-bucket" in str(caught.value)


async def test_bucket_without_default_retention_is_refused(versitygw_env: VersityGW) -> None:
    """ensure_ready on an Object Lock bucket with no default retention is a ConfigError saying how to set one."""
    store = store_on(versitygw_env.create_bucket(retention_days=None))
    try:
        with pytest.raises(ConfigError, match="no default retention") as caught:
            await store.ensure_ready()
    finally:
        await store.close()
    assert "DefaultRetention={Mode=COMPLIANCE,Days=365}" in str(caught.value)


async def test_bucket_with_lock_and_default_retention_is_accepted(versitygw_bucket: S3Bucket) -> None:
    """ensure_ready passes on a bucket with Object Lock and a default COMPLIANCE retention."""
    store = store_on(versitygw_bucket)
    try:
        await store.ensure_ready()
    finally:
        await store.close()


async def test_sidecar_start_refuses_a_bucket_without_default_retention(
    versitygw_env: VersityGW, tmp_path: Path
) -> None:
    """`serve`'s start stops with ConfigError on a bucket that lacks a default retention; nothing is served."""
    bucket = versitygw_env.create_bucket(retention_days=None)
    data = tmp_path / "ledger"
    init_keys(data)
    app = make_app(
        Settings(upstream=f"http://127.0.0.1:{free_port()}", data_dir=data, store_url=bucket.store_url(S3_PREFIX))
    )
    server = TestServer(app, host="127.0.0.1")
    try:
        with pytest.raises(ConfigError, match="no default retention"):
            await server.start_server()
    finally:
        await server.close()
