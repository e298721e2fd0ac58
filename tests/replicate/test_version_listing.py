"""Version counts from a real versitygw listing longer than one page.

versitygw 's ListObjectVersions repeats the last entry of a page at the start of the next one. Counted
as entries, that repeat made one object look overwritten (a false `remote-overwritten` on an intact
ledger in `bench replication`); counted as distinct version ids, only a real second version counts.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from sidecar.harness.versitygw import S3Bucket, VersityGW
from sidecar.replicate.s3 import S3Store

from .conftest import S3_PREFIX

pytestmark = pytest.mark.s3

OBJECTS = 1010  # more than one ListObjectVersions page (1,000 entries)


async def test_counts_are_distinct_versions_across_pages(
    versitygw_env: VersityGW, versitygw_bucket: S3Bucket, versitygw_store: S3Store
) -> None:
    """Across a page boundary every object counts one version, and only the overwritten one counts two."""
    keys = [f"tail/00000001/{i:012d}-{i + 1:012d}.chunk" for i in range(OBJECTS)]
    client: Any = versitygw_env.client()
    try:
        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda k: client.put_object(Bucket=versitygw_bucket.bucket, Key=f"{S3_PREFIX}/{k}", Body=b"x"), keys
                )
            )
        overwritten = keys[3]
        client.put_object(Bucket=versitygw_bucket.bucket, Key=f"{S3_PREFIX}/{overwritten}", Body=b"other")
    finally:
        client.close()

    listed = await versitygw_store.list("tail/")
    assert [info.key for info in listed] == keys
    counts = {info.key: info.versions for info in listed}
    assert counts.pop(overwritten) == 2
    assert set(counts.values()) == {1}
    for key in keys[995:1005]:  # the page boundary falls here
        assert len(await versitygw_store.versions(key)) == 1
    assert len(await versitygw_store.versions(overwritten)) == 2
