"""`sidecar drift`: read Keycloak's live access state and compare it with the ledger's replay.

The live state is read through the same read-only service account the capture
layer uses (sidecar.capture.reader). Only targets the ledger holds a recorded
state for are compared; the report says how many were checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sidecar.audit.timeline import records
from sidecar.capture.reader import KeycloakReader
from sidecar.drift.replay import Drift, compare, expected_state


async def check(source: Path, reader: KeycloakReader) -> tuple[int, list[Drift]]:
    """(targets compared, drifts found)."""
    expected = expected_state(records(source))
    drifts: list[Drift] = []
    checked = 0
    await reader.start()
    try:
        for exp in expected.values():
            if exp.realm != reader.realm:
                continue
            live: dict[str, Any] | None = await reader.access(exp.realm, exp.kind, exp.id)
            checked += 1
            drifts.extend(compare(exp, live))
    finally:
        await reader.close()
    return checked, drifts
