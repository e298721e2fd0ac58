"""The writer's queue is bounded (overload is a 503, never growth) and idle ledgers keep checkpointing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sidecar.capture.hooks import LedgerHooks
from sidecar.core import framing
from sidecar.errors import OverloadError
from sidecar.ledger.keystore import KeyStore
from sidecar.ledger.writer import Ledger, LedgerConfig


async def test_full_queue_raises_overload_at_once(tmp_path: Path) -> None:
    """With the queue full, append raises OverloadError with a Retry-After hint instead of waiting or growing."""
    KeyStore(tmp_path).init("bounds.test/ledger")
    ledger = await Ledger.open(tmp_path, config=LedgerConfig(queue_max=4), start_task=False)
    waiting = [asyncio.ensure_future(ledger.append({"type": "login.succeeded", "outcome": "succeeded"}))
               for _ in range(4)]
    await asyncio.sleep(0)
    with pytest.raises(OverloadError) as err:
        await ledger.append({"type": "login.succeeded", "outcome": "succeeded"})
    assert err.value.retry_after >= 1 and "queue full" in str(err.value)
    ledger.start()  # the writer drains what was accepted: nothing accepted is lost
    receipts = await asyncio.gather(*waiting)
    assert sorted(r.seq for r in receipts) == [1, 2, 3, 4]
    await ledger.close()


async def test_overload_becomes_pushback_for_admin_changes(tmp_path: Path) -> None:
    """The capture hooks turn an overloaded ledger into a 503 Pushback for a mutating admin request."""
    from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

    from sidecar.capture.sessions import SessionDirectory
    from sidecar.capture.tokens import TokenVerifier
    from sidecar.core.exchange import Pushback, RequestHead, RequestView
    from sidecar.policy.schema import load_policy

    async def overloaded(event: object) -> object:
        raise OverloadError("ledger queue full (4 waiting)", retry_after=2)

    async def no_jwks(realm: str) -> None:
        return None

    async def no_whoami(realm: str, token: str, username: str | None) -> None:
        return None

    hooks = LedgerHooks(overloaded, load_policy(), TokenVerifier(no_jwks), SessionDirectory(b"k" * 32), no_whoami,
                        b"f" * 32)
    head = RequestHead("POST", "/admin/realms/r/users/u1/role-mappings/realm", "/admin/realms/r/users/u1/role-mappings/realm",
                       MultiDictProxy(MultiDict()), CIMultiDictProxy(CIMultiDict({"Content-Type": "application/json"})),
                       "127.0.0.1", "http", "h", "rid")
    answer = await hooks.before_forward(RequestView(head, b'[{"id":"x","name":"viewer"}]', False))
    assert isinstance(answer, Pushback) and answer.retry_after == 2


async def test_idle_ledger_writes_heartbeat_checkpoints(tmp_path: Path) -> None:
    """With nothing to append, the writer still signs a checkpoint every heartbeat, so silence is provable."""
    KeyStore(tmp_path).init("bounds.test/ledger")
    ledger = await Ledger.open(tmp_path, config=LedgerConfig(heartbeat_s=0.05))
    await asyncio.sleep(0.4)
    await ledger.close()
    data = (tmp_path / "segments" / "00000000.seg").read_bytes()
    kinds = [f.kind for f in framing.iter_frames(data) if isinstance(f, framing.Frame)]
    assert kinds.count(framing.RECORD) == 1  # ledger.started only
    assert kinds.count(framing.CHECKPOINT) >= 4, "a checkpoint per heartbeat while idle"
