"""The ObjectStore contract, run unchanged against the memory, directory and S3 (moto) drivers."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.errors import ConfigError, StorageError, StoreIntegrityError
from sidecar.replicate.directory import DirectoryStore
from sidecar.replicate.drivers import open_store
from sidecar.replicate.memory import MemoryStore
from sidecar.replicate.s3 import S3Store
from sidecar.replicate.store import (
    MAX_KEY_LENGTH,
    ObjectNotFound,
    ObjectStore,
    validate_key,
)

BAD_KEYS = [
    pytest.param("", id="empty"),
    pytest.param("..", id="dotdot"),
    pytest.param("a/../b", id="dotdot-segment"),
    pytest.param("/abs", id="absolute"),
    pytest.param("a//b", id="empty-segment"),
    pytest.param("a/", id="trailing-slash"),
    pytest.param("%2e%2e", id="url-encoded-dotdot"),
    pytest.param("a/%2e%2e/b", id="url-encoded-dotdot-segment"),
    pytest.param("./a", id="dot-segment"),
    pytest.param("a/.tmp-x", id="hidden-segment"),
    pytest.param("a b", id="space"),
    pytest.param("a\\b", id="backslash"),
    pytest.param("a\x00b", id="nul"),
    pytest.param("é", id="non-ascii"),
    pytest.param("k" * (MAX_KEY_LENGTH + 1), id="too-long"),
]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("data", [b"segment bytes\n", b""], ids=["bytes", "empty"])
async def test_put_get_roundtrip(store: ObjectStore, data: bytes) -> None:
    """A put stores the exact bytes, reports their digest and size, and get returns them."""
    result = await store.put("segments/00000001.wal", data)
    assert (result.key, result.sha256, result.size, result.created) == (
        "segments/00000001.wal",
        sha(data),
        len(data),
        True,
    )
    assert await store.get("segments/00000001.wal") == data


async def test_identical_reput_is_not_created(store: ObjectStore) -> None:
    """Putting identical bytes again succeeds with created=False and the same version."""
    first = await store.put("checkpoints/0001", b"checkpoint")
    again = await store.put("checkpoints/0001", b"checkpoint")
    assert again.created is False
    assert (again.sha256, again.size, again.version_id) == (first.sha256, first.size, first.version_id)
    assert len(await store.versions("checkpoints/0001")) == 1


async def test_different_reput_raises_integrity_error(store: ObjectStore) -> None:
    """Putting different bytes under a written key raises StoreIntegrityError naming key and digests."""
    await store.put("checkpoints/0001", b"original")
    with pytest.raises(StoreIntegrityError) as caught:
        await store.put("checkpoints/0001", b"forged")
    assert str(caught.value) == (
        f"{store.url}: 'checkpoints/0001' already holds different bytes: "
        f"expected sha256 {sha(b'forged')}, found sha256 {sha(b'original')}"
    )
    assert await store.get("checkpoints/0001") == b"original"


async def test_list_sorted_with_prefix_filter(store: ObjectStore) -> None:
    """list returns every object under a string prefix, sorted by key, with sizes."""
    for key in ["segments/0002", "checkpoints/0001", "segments/0001", "segments/0010/tail", "segmentsX"]:
        await store.put(key, key.encode())
    assert [(i.key, i.size) for i in await store.list("segments/")] == [
        ("segments/0001", 13),
        ("segments/0002", 13),
        ("segments/0010/tail", 18),
    ]
    assert [i.key for i in await store.list("segments")] == [
        "segments/0001",
        "segments/0002",
        "segments/0010/tail",
        "segmentsX",
    ]
    assert [i.key for i in await store.list("segments/000")] == ["segments/0001", "segments/0002"]
    assert [i.key for i in await store.list()] == sorted(
        ["checkpoints/0001", "segments/0001", "segments/0002", "segments/0010/tail", "segmentsX"]
    )
    assert await store.list("nothing/") == []


async def test_head_missing_is_none(store: ObjectStore) -> None:
    """head of a missing key is None; of a stored key, its size and version."""
    assert await store.head("segments/0001") is None
    result = await store.put("segments/0001", b"12345")
    info = await store.head("segments/0001")
    assert info is not None
    assert (info.key, info.size, info.version_id) == ("segments/0001", 5, result.version_id)


async def test_get_missing_raises_object_not_found(store: ObjectStore) -> None:
    """get of a missing key raises ObjectNotFound, which is both a StorageError and a KeyError."""
    with pytest.raises(ObjectNotFound) as caught:
        await store.get("segments/0001")
    assert isinstance(caught.value, StorageError)
    assert isinstance(caught.value, KeyError)
    assert caught.value.key == "segments/0001"
    assert str(caught.value) == f"{store.url}: no object 'segments/0001'"


async def test_versions_lists_the_one_version_we_wrote(store: ObjectStore) -> None:
    """versions of a missing key is empty, and of a written key holds exactly the version put made."""
    assert await store.versions("segments/0001") == []
    result = await store.put("segments/0001", b"abc")
    [only] = await store.versions("segments/0001")
    assert (only.key, only.size, only.version_id) == ("segments/0001", 3, result.version_id)


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_bad_keys_rejected(store: ObjectStore, key: str) -> None:
    """Every operation refuses a bad key with ValueError naming the key, before touching storage."""
    attempts: list[Callable[[], Awaitable[object]]] = [
        lambda: store.put(key, b"x"),
        lambda: store.get(key),
        lambda: store.head(key),
        lambda: store.versions(key),
    ]
    for attempt in attempts:
        with pytest.raises(ValueError, match="invalid store key") as caught:
            await attempt()
        assert repr(key)[:40] in str(caught.value)
    assert await store.list() == []


async def test_bad_list_prefix_rejected(store: ObjectStore) -> None:
    """list refuses a prefix no valid key could start with."""
    for prefix in ["/abs", "a//", "../", "a/..", "%2e"]:
        with pytest.raises(ValueError, match="invalid store prefix"):
            await store.list(prefix)


async def test_large_object_roundtrip(store: ObjectStore) -> None:
    """An 8 MiB object (a big WAL segment) round-trips byte for byte."""
    data = os.urandom(8 * 1024 * 1024)
    result = await store.put("segments/big", data)
    assert (result.size, result.sha256) == (len(data), sha(data))
    assert await store.get("segments/big") == data


async def test_concurrent_identical_puts_both_succeed(store: ObjectStore) -> None:
    """Concurrent puts of the same key with identical bytes all succeed and leave one object."""
    data = b"tail chunk" * 1000
    results = await asyncio.gather(*(store.put("tail/0007", data) for _ in range(4)))
    assert {r.sha256 for r in results} == {sha(data)}
    # SECURITY: exactly one writer created it; the rest found it. (If-None-Match on S3, link on disk.)
    assert sorted(r.created for r in results) == [False, False, False, True]
    assert len(await store.versions("tail/0007")) == 1
    assert await store.get("tail/0007") == data


async def test_concurrent_different_puts_one_wins(store: ObjectStore) -> None:
    """Concurrent puts of different bytes to one key: one is stored, every other raises."""
    outcomes = await asyncio.gather(
        *(store.put("checkpoints/race", bytes([i]) * 100) for i in range(3)), return_exceptions=True
    )
    stored = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(stored) == 1
    assert all(isinstance(o, StoreIntegrityError) for o in outcomes if o not in stored)
    assert sha(await store.get("checkpoints/race")) == stored[0].sha256


# -- key rules, shared by every driver ---------------------------------------------------------------

_segment = st.text(alphabet="abcXYZ019._-", min_size=1, max_size=12).filter(lambda s: not s.startswith("."))


@given(st.lists(_segment, min_size=1, max_size=6))
def test_keys_of_valid_segments_are_accepted(segments: list[str]) -> None:
    """Any '/'-join of segments from [A-Za-z0-9._-] not starting with '.' is a valid key."""
    key = "/".join(segments)
    assert validate_key(key) == key


@given(st.text(min_size=1, max_size=20), st.characters(exclude_characters="/"))
def test_keys_with_foreign_characters_are_rejected(text: str, bad: str) -> None:
    """A key containing any character outside [A-Za-z0-9._/-] is rejected."""
    if bad.isascii() and (bad.isalnum() or bad in "._-"):
        return
    with pytest.raises(ValueError, match="invalid store key"):
        validate_key(text + bad)


# -- opening a store by URL ----------------------------------------------------------------------------


def test_open_store_file_url_and_plain_path(tmp_path: Path) -> None:
    """file:///abs/dir and a plain path both open a DirectoryStore on that directory."""
    by_url = open_store(f"file://{tmp_path}/a")
    by_path = open_store(str(tmp_path / "b"))
    assert isinstance(by_url, DirectoryStore) and by_url.root == tmp_path / "a"
    assert isinstance(by_path, DirectoryStore) and by_path.root == tmp_path / "b"
    assert by_url.url == (tmp_path / "a").as_uri()


def test_open_store_memory() -> None:
    """memory:// opens a fresh MemoryStore."""
    assert isinstance(open_store("memory://"), MemoryStore)


def test_open_store_s3_url() -> None:
    """s3://bucket/prefix?endpoint=…&region=… opens an S3Store on that bucket and prefix."""
    s3 = open_store("s3://audit-bucket/ledger/prod?endpoint=http://127.0.0.1:5000&region=eu-west-1")
    assert isinstance(s3, S3Store)
    assert s3.bucket == "audit-bucket"
    assert s3.url == "s3://audit-bucket/ledger/prod/?endpoint=http://127.0.0.1:5000"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://host/dir", "unsupported scheme 'ftp'"),
        ("", "store URL is empty"),
        ("s3:/bucket", "looks like a URL but has no '://'"),
        ("file://host/dir", "expected file:///absolute/directory"),
        ("memory://x", "expected exactly memory://"),
        ("s3:///prefix", "no bucket"),
        ("s3://Bad_Bucket/p", "not a valid S3 bucket name"),
        ("s3://bucket/p?colour=red", "unknown parameter 'colour'"),
        ("s3://bucket/p?endpoint=ftp://x", "must look like http(s)://host:port"),
        ("s3://bucket/../p", "prefix '../p'"),
    ],
)
def test_open_store_rejects_bad_urls(url: str, message: str) -> None:
    """A URL naming no usable store is a ConfigError that quotes the URL and says why."""
    with pytest.raises(ConfigError) as caught:
        open_store(url)
    assert message in str(caught.value)
    assert repr(url) in str(caught.value) or url == ""


def test_open_store_rejects_bad_retention() -> None:
    """An S3 retention under one day is a ConfigError."""
    with pytest.raises(ConfigError, match="retention_days"):
        open_store("s3://bucket/p", retention_days=0)


def test_open_store_rejects_s3_options_for_local_store(tmp_path: Path) -> None:
    """S3 options given for a directory store are a ConfigError, not silently ignored."""
    with pytest.raises(ConfigError, match="S3 options"):
        open_store(str(tmp_path), endpoint_url="http://127.0.0.1:1")
