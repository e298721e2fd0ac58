"""The drift monitor's peer follower (sidecar.drift.peers) over the real S3 protocol (versitygw).

The follower pulls each peer's prefix in a worker thread with an event loop of its own (so the
proxy's loop keeps answering); here it does so through our S3 driver against versitygw.
"""

from __future__ import annotations

from pathlib import Path

from sidecar.drift.peers import PeerFollower
from sidecar.harness.versitygw import S3Bucket
from sidecar.replicate.drivers import open_store
from tests.drift.test_peers import OWN, PEER, _role_granted, _trust, live_peer


async def test_the_follower_reads_a_peer_from_an_s3_bucket(versitygw_bucket: S3Bucket, tmp_path: Path) -> None:
    """A peer replicated to versitygw under node-b is found, read verified (in the worker thread), and followed as it grows."""
    bucket = versitygw_bucket
    async with live_peer(tmp_path, tmp_path / "unused", store_url=bucket.store_url("node-b")) as peer:
        for i in range(12):
            await peer.append(_role_granted("adm", f"u{i}", f"users/u{i}/role-mappings/realm"))
        await peer.shipped()
        root = open_store(bucket.store_url(""))
        follower = PeerFollower(
            _trust(tmp_path, peer.anchor, heartbeat_s=5.0),
            OWN,
            root,
            lambda p: open_store(bucket.store_url(p)),
            tmp_path / "cache",
        )
        try:
            await follower.refresh()
            first = follower.take()
            assert follower.peers[PEER].prefix == "node-b" and follower.peers[PEER].untrusted is None
            assert sum(r["event"]["type"] == "role.granted" for r in first) == 12
            await peer.write(_role_granted("adm", "late", "users/late/role-mappings/realm"))
            await follower.refresh()
            assert [r["event"]["target"]["id"] for r in follower.take() if r["event"]["type"] == "role.granted"] == [
                "late"
            ]
            assert follower.peers[PEER].coverage_ns is not None and not follower.stalled(PEER)
        finally:
            await root.close()
