"""The memory driver's test-only power: tampering, seen the way S3 versioning would show it."""

from __future__ import annotations

import pytest

from sidecar.errors import StoreIntegrityError
from sidecar.replicate.memory import MemoryStore


async def test_tamper_adds_a_version_that_versions_reveals() -> None:
    """tamper() adds a newer version behind the store's back; versions() lists both, oldest first."""
    store = MemoryStore()
    ours = await store.put("checkpoints/0001", b"original")
    theirs = store.tamper("checkpoints/0001", b"forged")

    assert [(v.version_id, v.size) for v in await store.versions("checkpoints/0001")] == [
        (ours.version_id, 8),
        (theirs, 6),
    ]
    assert await store.get("checkpoints/0001") == b"forged"
    with pytest.raises(StoreIntegrityError):
        await store.put("checkpoints/0001", b"original")


async def test_tamper_validates_the_key() -> None:
    """tamper() refuses bad keys like every other operation."""
    with pytest.raises(ValueError, match="invalid store key"):
        MemoryStore().tamper("../x", b"x")
