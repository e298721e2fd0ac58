"""The S3 driver: write-once objects in a bucket with S3 Object Lock, through aiobotocore.

Same contract as every `ObjectStore` (see `sidecar.replicate.store`). How this driver keeps it:

* **Write-once.** `put` PUTs with ``If-None-Match: *``; if the key holds an object S3 answers
  412 and `put` HEADs it, GETs that exact version and compares SHA-256 (identical:
  ``created=False``; different: `StoreIntegrityError`), never stacking a second version. A store that rejects
  ``If-None-Match`` as unsupported (HTTP 501 ``NotImplemented``, or a 400 naming the header) is
  remembered and from then on HEAD + compare come first and the PUT goes without it, with a
  warning: a race then leaves two versions, which `versions` shows. moto 5.2 and AWS S3 support it.
* **Nobody can rewrite.** Every PUT carries ``ObjectLockMode=COMPLIANCE`` and a retain-until date
  ``retention_days`` ahead, so not even the account root can delete or overwrite that version
  before then. S3 still lets anyone with ``s3:PutObject`` add a *newer* version, or a delete
  marker that hides the key; Object Lock keeps the old version, and `versions` lists every data
  version oldest first so the audit can notice. (Delete markers are not listed; a hidden key looks
  missing to `head`/`get`, and `put` then writes it again as a new version.)
* **Integrity on the wire.** PUTs send ``x-amz-checksum-sha256`` (S3 verifies it and refuses
  corrupt uploads) plus ``x-amz-sdk-checksum-algorithm`` and ``Content-MD5``: S3 requires one of
  these with lock headers, moto only accepts the algorithm header or Content-MD5 (not the
  checksum header alone), and older MinIO only Content-MD5. GETs validate returned checksums.
* **Fail fast.** connect 2 s, read 10 s, 2 retries: an unreachable store is a `StoreUnavailable`
  in seconds, and the replicator's backlog, not this call, decides what waits.
* **One mapping.** `map_s3_errors` turns botocore/aiobotocore errors into the sidecar's tree;
  every client call in this module goes through it, and no other module catches them.

`ensure_bucket` checks (and for tests and the demo creates) a bucket with versioning, Object
Lock and a default retention; call it once at start (`ensure_ready`) so a wrong bucket stops the
sidecar instead of silently losing WORM.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import contextlib
import hashlib
import logging
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
    ProfileNotFound,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from sidecar.errors import ConfigError, SidecarError, StorageError
from sidecar.errors import S3RequestError as S3RequestError  # re-exported for callers of this driver
from sidecar.replicate.store import (
    ObjectInfo,
    ObjectNotFound,
    PutResult,
    StoreUnavailable,
    conflict,
    key_problem,
    sha256_hex,
    validate_key,
    validate_prefix,
)

_log = logging.getLogger(__name__)

LockMode = Literal["COMPLIANCE", "GOVERNANCE"]
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound"})
_RACE = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})
_TRANSIENT = frozenset(
    {"500", "502", "503", "504", "InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"}
)
_MAX_PUT_ROUNDS = 3


@contextlib.contextmanager
def map_s3_errors(store: str, operation: str, key: str = "") -> Iterator[None]:
    """Turn botocore/aiobotocore errors raised inside the block into the sidecar's error tree.

    A missing object is `ObjectNotFound`; unreachable, timed-out or overloaded S3 is
    `StoreUnavailable`; absent credentials or region are `ConfigError`; any other S3 error is an
    `S3RequestError` carrying the S3 code. Messages name the store, the operation and the key.
    """
    where = f"{store}: {operation}" + (f" {key!r}" if key else "")
    try:
        yield
    except SidecarError:
        raise
    except ClientError as e:
        error = e.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        text = str(error.get("Message", "")) or "no message"
        if code in _NOT_FOUND:
            raise ObjectNotFound(store, key) from e
        message = f"{where}: {code} (HTTP {status}): {text}"
        if code in _TRANSIENT:
            raise StoreUnavailable(message) from e
        raise S3RequestError(message, code=code, status=status, server_message=text) from e
    except (NoCredentialsError, PartialCredentialsError, ProfileNotFound, NoRegionError) as e:
        raise ConfigError(f"{where}: {e} (set AWS credentials/region in the environment or options)") from e
    except (BotoConnectionError, HTTPClientError, CredentialRetrievalError) as e:
        # BotoConnectionError covers EndpointConnectionError and ConnectTimeoutError;
        # HTTPClientError covers ReadTimeoutError and a connection closed mid-response.
        raise StoreUnavailable(f"{where}: {e}") from e
    except ParamValidationError:
        raise  # a bug in this module, not a storage condition
    except BotoCoreError as e:
        raise StorageError(f"{where}: {e}") from e
    except (aiohttp.ClientError, TimeoutError) as e:
        # A body being streamed after the call returned fails with aiohttp's own errors.
        raise StoreUnavailable(f"{where}: {type(e).__name__}: {e}") from e


class _LostRace(Exception):
    """Our conditional PUT lost to another writer; compare with what it wrote."""


class S3Store:
    """Write-once objects under ``s3://bucket/prefix/``, each version locked for retention_days."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        retention_days: int = 365,
        mode: LockMode = "COMPLIANCE",
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        profile: str | None = None,
        connect_timeout: float = 2.0,
        read_timeout: float = 10.0,
        max_retries: int = 2,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        prefix = prefix.strip("/")
        where = f"s3://{bucket}/{prefix}"
        if not _BUCKET.fullmatch(bucket):
            raise ConfigError(f"{where}: {bucket!r} is not a valid S3 bucket name")
        if prefix and key_problem(prefix) is not None:
            raise ConfigError(f"{where}: prefix {prefix!r}: {key_problem(prefix)}")
        if isinstance(retention_days, bool) or not isinstance(retention_days, int) or retention_days < 1:
            raise ConfigError(f"{where}: retention_days must be a whole number of days >= 1, not {retention_days!r}")
        if mode not in ("COMPLIANCE", "GOVERNANCE"):
            raise ConfigError(f"{where}: Object Lock mode must be COMPLIANCE or GOVERNANCE, not {mode!r}")
        if endpoint_url is not None and not re.match(r"https?://[^/?#]+/?$", endpoint_url):
            raise ConfigError(f"{where}: endpoint {endpoint_url!r} must look like http(s)://host:port")
        if (aws_access_key_id is None) != (aws_secret_access_key is None):
            raise ConfigError(f"{where}: give both aws_access_key_id and aws_secret_access_key, or neither")
        self._bucket = bucket
        self._prefix = f"{prefix}/" if prefix else ""
        self._endpoint_url = endpoint_url
        self._region = region
        self._retention = timedelta(days=retention_days)
        self._mode = mode
        self._credentials = {
            "aws_access_key_id": aws_access_key_id,
            "aws_secret_access_key": aws_secret_access_key,
            "aws_session_token": aws_session_token,
        }
        self._profile = profile
        self._config = AioConfig(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": max_retries, "mode": "standard"},
            # Path-style for custom endpoints: MinIO, moto and IP addresses have no bucket subdomains.
            s3={"addressing_style": "path"} if endpoint_url else None,
        )
        self._clock = clock or (lambda: datetime.now(UTC))
        self._if_none_match = True
        # aiobotocore ships no type hints; the client is a dynamic object.
        self._client: Any = None
        self._stack = contextlib.AsyncExitStack()
        self._open_lock = asyncio.Lock()
        self._closed = False
        self._url = f"s3://{bucket}/{self._prefix}" + (f"?endpoint={endpoint_url}" if endpoint_url else "")

    @property
    def url(self) -> str:
        return self._url

    @property
    def bucket(self) -> str:
        return self._bucket

    # -- the ObjectStore protocol ----------------------------------------------------------------

    async def put(self, key: str, data: bytes) -> PutResult:
        validate_key(key)
        digest = sha256_hex(data)
        for attempt in range(_MAX_PUT_ROUNDS):
            # With conditional PUT the store itself refuses an existing key (412), so the first try
            # goes straight to PUT: one request for the common case, a comparison only on a refusal.
            if attempt > 0 or not self._if_none_match:
                existing = await self._compare_existing(key, digest)
                if existing is not None:
                    return existing
            try:
                version_id = await self._put_new(key, data, digest)
            except _LostRace:
                continue  # the key holds an object (ours from an earlier try, or not): compare with it
            return PutResult(key, digest, len(data), version_id, created=True)
        raise StorageError(f"{self.url}: PutObject {key!r}: conditional write kept conflicting, giving up")

    async def get(self, key: str) -> bytes:
        validate_key(key)
        return await self._get(key, None)

    async def head(self, key: str) -> ObjectInfo | None:
        validate_key(key)
        client = await self._s3()
        try:
            with map_s3_errors(self.url, "HeadObject", key):
                resp = await client.head_object(Bucket=self._bucket, Key=self._prefix + key)
        except ObjectNotFound:
            return None
        return ObjectInfo(key, int(resp["ContentLength"]), resp.get("VersionId"))

    async def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        """Current objects under prefix, each with its count of data versions (one bulk listing).

        Listed from ListObjectVersions, so an auditor learns of every overwrite without a request
        per key. A key whose newest entry is a delete marker is hidden, as in ListObjectsV2.
        """
        validate_prefix(prefix)
        client = await self._s3()
        current: dict[str, ObjectInfo] = {}
        # Version ids per key, not a count of listed entries: versitygw repeats the last version of
        # one page at the start of the next, and a repeat is not a second version.
        ids: dict[str, set[str | None]] = {}
        hidden: set[str] = set()
        pages = client.get_paginator("list_object_versions").paginate(Bucket=self._bucket, Prefix=self._prefix + prefix)
        with map_s3_errors(self.url, "ListObjectVersions", prefix):
            async for page in pages:
                for item in page.get("Versions", []):
                    key = item["Key"][len(self._prefix) :]
                    ids.setdefault(key, set()).add(item.get("VersionId"))
                    if item.get("IsLatest"):
                        current[key] = ObjectInfo(key, int(item["Size"]), item.get("VersionId"))
                for marker in page.get("DeleteMarkers", []):
                    if marker.get("IsLatest"):
                        hidden.add(marker["Key"][len(self._prefix) :])
        found: builtins.list[ObjectInfo] = []
        for key, info in current.items():
            if key in hidden:
                continue
            if key_problem(key) is not None:
                _log.warning("%s: ignoring object %r: not a valid store key", self.url, self._prefix + key)
                continue
            found.append(ObjectInfo(key, info.size, info.version_id, len(ids[key])))
        found.sort(key=lambda info: info.key)
        return found

    async def versions(self, key: str) -> builtins.list[ObjectInfo]:
        validate_key(key)
        client = await self._s3()
        full = self._prefix + key
        newest_first: dict[str | None, ObjectInfo] = {}  # by version id: a page may repeat the last one
        pages = client.get_paginator("list_object_versions").paginate(Bucket=self._bucket, Prefix=full)
        with map_s3_errors(self.url, "ListObjectVersions", key):
            async for page in pages:
                # S3 lists the versions of one key newest first; the prefix also matches longer keys.
                for v in page.get("Versions", []):
                    if v["Key"] == full:
                        newest_first.setdefault(v.get("VersionId"), ObjectInfo(key, int(v["Size"]), v.get("VersionId")))
        return builtins.list(newest_first.values())[::-1]

    async def close(self) -> None:
        self._closed = True
        await self._stack.aclose()
        self._client = None

    # -- bucket checks -----------------------------------------------------------------------------

    async def ensure_bucket(self, *, create: bool = False) -> None:
        """Check the bucket is versioned with Object Lock on and a default retention; with create, make
        it first if missing (and give it this store's retention as its default if it has none).

        Raises `ConfigError` telling the operator what to enable: without Object Lock, anyone with
        delete rights can erase the replica and the WORM claim is false.
        """
        client = await self._s3()
        bucket = self._bucket
        if create:
            params: dict[str, Any] = {"Bucket": bucket, "ObjectLockEnabledForBucket": True}
            region = client.meta.region_name
            if region and region != "us-east-1":  # us-east-1 rejects an explicit LocationConstraint
                params["CreateBucketConfiguration"] = {"LocationConstraint": region}
            try:
                with map_s3_errors(self.url, "CreateBucket"):
                    await client.create_bucket(**params)
            except S3RequestError as e:
                if e.code != "BucketAlreadyOwnedByYou":
                    raise
        enable = (
            f"create it with Object Lock (aws s3api create-bucket --bucket {bucket} "
            "--object-lock-enabled-for-bucket), or enable versioning and then Object Lock "
            f"(aws s3api put-object-lock-configuration --bucket {bucket} "
            "--object-lock-configuration ObjectLockEnabled=Enabled)"
        )
        try:
            with map_s3_errors(self.url, "GetObjectLockConfiguration"):
                lock = await client.get_object_lock_configuration(Bucket=bucket)
        except S3RequestError as e:
            if e.code == "NoSuchBucket":
                raise ConfigError(f"{self.url}: bucket {bucket!r} does not exist; {enable}") from e
            if e.code == "ObjectLockConfigurationNotFoundError":
                raise ConfigError(f"{self.url}: bucket {bucket!r} has no S3 Object Lock; {enable}") from e
            raise
        config = lock.get("ObjectLockConfiguration", {})
        if config.get("ObjectLockEnabled") != "Enabled":
            raise ConfigError(f"{self.url}: bucket {bucket!r} has S3 Object Lock disabled; {enable}")
        if not config.get("Rule", {}).get("DefaultRetention"):
            if not create:
                # Every put here carries its own COMPLIANCE retention; the bucket's default covers an
                # object written any other way (a tool, a misconfigured second writer) as well.
                raise ConfigError(
                    f"{self.url}: bucket {bucket!r} has Object Lock but no default retention; set one "
                    f"(aws s3api put-object-lock-configuration --bucket {bucket} --object-lock-configuration "
                    f"'ObjectLockEnabled=Enabled,Rule={{DefaultRetention={{Mode=COMPLIANCE,Days="
                    f"{self._retention.days}}}}}')"
                )
            with map_s3_errors(self.url, "PutObjectLockConfiguration"):
                await client.put_object_lock_configuration(
                    Bucket=bucket,
                    ObjectLockConfiguration={
                        "ObjectLockEnabled": "Enabled",
                        "Rule": {"DefaultRetention": {"Mode": self._mode, "Days": self._retention.days}},
                    },
                )
        with map_s3_errors(self.url, "GetBucketVersioning"):
            versioning = await client.get_bucket_versioning(Bucket=bucket)
        if versioning.get("Status") != "Enabled":
            raise ConfigError(
                f"{self.url}: bucket {bucket!r} has versioning "
                f"{versioning.get('Status', 'never enabled')!r}; "
                "Object Lock needs it Enabled (aws s3api put-bucket-versioning "
                f"--bucket {bucket} --versioning-configuration Status=Enabled)"
            )

    async def ensure_ready(self, *, create: bool = False) -> None:
        """The `ObjectStore` start check: `ensure_bucket`."""
        await self.ensure_bucket(create=create)

    # -- internals -----------------------------------------------------------------------------------

    async def _s3(self) -> Any:
        if self._closed:
            raise StorageError(f"{self.url}: store is closed")
        if self._client is None:
            async with self._open_lock:
                if self._client is None:
                    session = AioSession(profile=self._profile)
                    with map_s3_errors(self.url, "connect"):
                        self._client = await self._stack.enter_async_context(
                            session.create_client(
                                "s3",
                                region_name=self._region,
                                endpoint_url=self._endpoint_url,
                                config=self._config,
                                **self._credentials,
                            )
                        )
        return self._client

    async def _get(self, key: str, version_id: str | None) -> bytes:
        client = await self._s3()
        params: dict[str, Any] = {"Bucket": self._bucket, "Key": self._prefix + key}
        if version_id is not None:
            params["VersionId"] = version_id
        with map_s3_errors(self.url, "GetObject", key):
            resp = await client.get_object(**params)
            async with resp["Body"] as body:
                data: bytes = await body.read()
        return data

    async def _compare_existing(self, key: str, digest: str) -> PutResult | None:
        """None if key is free; the existing object's PutResult if it holds our bytes; else raise."""
        info = await self.head(key)
        if info is None:
            return None
        try:
            # The exact version HEAD saw, so a newer upload cannot slip between HEAD and GET.
            existing = await self._get(key, info.version_id)
        except ObjectNotFound:
            return None  # hidden by a delete marker since our HEAD; write it again
        found = sha256_hex(existing)
        if found != digest:
            raise conflict(self.url, key, digest, found)
        return PutResult(key, digest, len(existing), info.version_id, created=False)

    async def _put_new(self, key: str, data: bytes, digest: str) -> str | None:
        client = await self._s3()
        params: dict[str, Any] = {
            "Bucket": self._bucket,
            "Key": self._prefix + key,
            "Body": data,
            "ChecksumAlgorithm": "SHA256",
            "ChecksumSHA256": base64.b64encode(bytes.fromhex(digest)).decode("ascii"),
            "ContentMD5": base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode("ascii"),
            "ObjectLockMode": self._mode,
            "ObjectLockRetainUntilDate": self._clock() + self._retention,
        }
        if self._if_none_match:
            params["IfNoneMatch"] = "*"
        try:
            with map_s3_errors(self.url, "PutObject", key):
                resp = await client.put_object(**params)
        except S3RequestError as e:
            if e.code in _RACE:
                raise _LostRace from e
            if self._if_none_match and _rejects_if_none_match(e):
                _log.warning(
                    "%s: the store does not support If-None-Match on PUT (%s); writing without it, so "
                    "a concurrent writer can add a second version (versions() will show it)",
                    self.url,
                    e,
                )
                self._if_none_match = False
                return await self._put_new(key, data, digest)
            raise
        version_id: str | None = resp.get("VersionId")
        return version_id


def _rejects_if_none_match(error: S3RequestError) -> bool:
    """Whether S3 refused the request because it does not implement conditional PUT."""
    if error.code == "NotImplemented" or error.status == 501:
        return True
    return error.status == 400 and "if-none-match" in error.server_message.lower()
