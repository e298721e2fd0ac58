"""What S3 Object Lock (as moto enforces it) and our S3 driver guarantee against someone rewriting."""

from __future__ import annotations

import base64
import hashlib
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from sidecar.errors import ConfigError, StoreIntegrityError
from sidecar.replicate.s3 import S3Store
from sidecar.replicate.store import StoreUnavailable

from .conftest import REGION, S3_PREFIX, MotoServer, free_port, new_bucket_name

pytestmark = pytest.mark.s3


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_locked_version_cannot_be_deleted(s3_store: S3Store, raw_s3: Any) -> None:
    """Deleting a COMPLIANCE-locked object version with the raw API is refused with AccessDenied."""
    result = await s3_store.put("segments/0001", b"sealed segment")
    with pytest.raises(ClientError) as caught:
        await raw_s3.delete_object(
            Bucket=s3_store.bucket, Key=f"{S3_PREFIX}/segments/0001", VersionId=result.version_id
        )
    assert caught.value.response["Error"]["Code"] == "AccessDenied"
    assert await s3_store.get("segments/0001") == b"sealed segment"


async def test_overwrite_behind_our_back_is_revealed(s3_store: S3Store, raw_s3: Any) -> None:
    """A raw PutObject of other bytes adds a second version; versions() shows both and put refuses."""
    ours = await s3_store.put("checkpoints/0001", b"original")
    await raw_s3.put_object(Bucket=s3_store.bucket, Key=f"{S3_PREFIX}/checkpoints/0001", Body=b"forged")

    versions = await s3_store.versions("checkpoints/0001")
    assert [(v.version_id, v.size) for v in versions] == [(ours.version_id, 8), (versions[1].version_id, 6)]
    assert versions[1].version_id != ours.version_id
    with pytest.raises(StoreIntegrityError) as caught:
        await s3_store.put("checkpoints/0001", b"original")
    assert str(caught.value) == (
        f"{s3_store.url}: 'checkpoints/0001' already holds different bytes: "
        f"expected sha256 {sha(b'original')}, found sha256 {sha(b'forged')}"
    )


async def test_delete_marker_hides_but_keeps_the_locked_version(s3_store: S3Store, raw_s3: Any) -> None:
    """An unversioned delete only hides the key; the locked version stays and put writes it back."""
    first = await s3_store.put("segments/0001", b"sealed")
    await raw_s3.delete_object(Bucket=s3_store.bucket, Key=f"{S3_PREFIX}/segments/0001")

    assert await s3_store.head("segments/0001") is None
    again = await s3_store.put("segments/0001", b"sealed")
    assert again.created is True
    assert [v.version_id for v in await s3_store.versions("segments/0001")] == [
        first.version_id,
        again.version_id,
    ]


async def test_put_locks_each_version_in_compliance_mode(s3_server: MotoServer, s3_bucket: str, raw_s3: Any) -> None:
    """Every put carries COMPLIANCE mode, retain-until = clock + retention_days, and a SHA-256 checksum."""
    now = datetime.now(UTC).replace(microsecond=0)
    store = S3Store(s3_bucket, endpoint_url=s3_server.endpoint_url, region=REGION, retention_days=30, clock=lambda: now)
    try:
        result = await store.put("segments/0001", b"sealed")
    finally:
        await store.close()
    head = await raw_s3.head_object(Bucket=s3_bucket, Key="segments/0001", ChecksumMode="ENABLED")
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ObjectLockRetainUntilDate"] == now + timedelta(days=30)
    assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(b"sealed").digest()).decode()
    assert head["VersionId"] == result.version_id


async def test_bucket_without_object_lock_is_config_error(s3_server: MotoServer, raw_s3: Any) -> None:
    """ensure_bucket on a bucket created without Object Lock raises ConfigError saying what to enable."""
    name = new_bucket_name()
    await raw_s3.create_bucket(Bucket=name)
    store = S3Store(name, endpoint_url=s3_server.endpoint_url, region=REGION)
    try:
        with pytest.raises(ConfigError) as caught:
            await store.ensure_bucket()
    finally:
        await store.close()
    message = str(caught.value)
    assert f"bucket {name!r} has no S3 Object Lock" in message
    assert "--object-lock-enabled-for-bucket" in message
    assert "put-object-lock-configuration" in message


async def test_missing_bucket_is_config_error_unless_created(s3_server: MotoServer, raw_s3: Any) -> None:
    """ensure_bucket on a missing bucket raises ConfigError; with create=True it makes a locked one."""
    name = new_bucket_name()
    store = S3Store(name, endpoint_url=s3_server.endpoint_url, region=REGION)
    try:
        with pytest.raises(ConfigError, match=f"bucket {name!r} does not exist"):
            await store.ensure_bucket()
        await store.ensure_bucket(create=True)
        await store.ensure_bucket(create=True)  # idempotent: the bucket is already ours
    finally:
        await store.close()
    lock = await raw_s3.get_object_lock_configuration(Bucket=name)
    assert lock["ObjectLockConfiguration"]["ObjectLockEnabled"] == "Enabled"
    assert (await raw_s3.get_bucket_versioning(Bucket=name))["Status"] == "Enabled"


async def test_unreachable_endpoint_fails_fast() -> None:
    """A store on a closed loopback port raises StoreUnavailable within a few seconds, not a hang."""
    port = free_port()  # nothing listens here: connections are refused
    store = S3Store("ledger-bucket", endpoint_url=f"http://127.0.0.1:{port}", region=REGION)
    started = time.monotonic()
    try:
        with pytest.raises(StoreUnavailable) as caught:
            await store.put("segments/0001", b"x")
    finally:
        await store.close()
    elapsed = time.monotonic() - started
    assert elapsed < 8, f"took {elapsed:.1f}s"
    assert str(caught.value).startswith(f"{store.url}: PutObject 'segments/0001': ")
    assert f"127.0.0.1:{port}" in str(caught.value)
