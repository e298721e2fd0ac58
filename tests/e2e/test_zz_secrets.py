"""Runs last in the e2e folder: no secret a test used or received reached any byte the sidecar wrote (P5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures_sidecar import SidecarProcess, holds_secret

pytestmark = [pytest.mark.keycloak]


def test_no_secret_in_anything_the_sidecar_wrote(sidecar: SidecarProcess, secrets_seen: set[str]) -> None:
    """Every password, client secret, token, code and cookie used in the session is absent from WAL, store, index and logs."""
    assert len(secrets_seen) >= 8, "the session should have collected the secrets it used"
    files = [p for root in (sidecar.data_dir, sidecar.store_dir) for p in Path(root).rglob("*") if p.is_file()]
    files.append(sidecar.log_file)
    assert any(p.suffix == ".seg" for p in files)
    blobs = {p: p.read_bytes() for p in files}
    leaks = [(str(p), s[:6] + "...") for p, blob in blobs.items() for s in secrets_seen if holds_secret(blob, s)]
    assert not leaks, f"secrets found at rest: {leaks}"
