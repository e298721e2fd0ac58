"""The event loop `serve` runs on: uvloop by default, asyncio's own with SIDECAR_UVLOOP=0, the ledger on both."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sidecar import config, loop
from sidecar.audit.verifier import verify_directory
from sidecar.core.events import EventType, IdentityEvent, Outcome
from sidecar.ledger.keystore import KeyStore
from sidecar.ledger.writer import Ledger


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, True),
        ({"SIDECAR_UVLOOP": "1"}, True),
        ({"SIDECAR_UVLOOP": "0"}, False),
        ({"SIDECAR_UVLOOP": " Off "}, False),
    ],
)
def test_environment_chooses_the_loop(env: dict[str, str], expected: bool) -> None:
    """uvloop unless the variable says no, in the words the config file's booleans use."""
    assert loop.enabled(env) is expected
    required = {"SIDECAR_UPSTREAM": "http://127.0.0.1:9", "SIDECAR_DATA": "/nonexistent"}
    assert config.resolve({}, env={**required, **env})["uvloop"] is expected  # serve reads the same variable


@pytest.mark.parametrize(("use", "kind"), [(True, "uvloop"), (False, "asyncio")])
def test_run_uses_the_chosen_loop(use: bool, kind: str) -> None:
    """`loop.run` runs the coroutine on uvloop when asked (it is a dependency) and on asyncio's loop when not."""

    async def which() -> str:
        return loop.kind()

    assert loop.run(which(), use_uvloop=use) == kind
    assert loop.planned(use) == kind


@pytest.mark.parametrize("use", [True, False])
def test_ledger_commits_and_verifies_on_either_loop(tmp_path: Path, use: bool) -> None:
    """The writer's file thread wakes either loop: appends are acknowledged in order and the ledger verifies."""
    KeyStore(tmp_path).init("loop.test/ledger")

    async def write() -> list[int]:
        ledger = await Ledger.open(tmp_path)
        try:
            receipts = await asyncio.gather(
                *(
                    ledger.append(
                        IdentityEvent(EventType.LOGIN_SUCCEEDED, Outcome.SUCCEEDED, realm="r", request_id=f"{i}")
                    )
                    for i in range(50)
                )
            )
        finally:
            await ledger.close()
        return [r.seq for r in receipts]

    seqs = loop.run(write(), use_uvloop=use)
    assert seqs == sorted(seqs) and len(set(seqs)) == 50
    report = verify_directory(tmp_path, KeyStore(tmp_path).trust())
    assert report.ok, report.findings
    assert report.records >= 50
