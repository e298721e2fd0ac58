"""The session's sidecar process says which event loop it runs on: uvloop, the default."""

from __future__ import annotations

import pytest

from tests.fixtures_sidecar import SidecarProcess

pytestmark = [pytest.mark.keycloak]


def test_serve_runs_on_uvloop_by_default(sidecar: SidecarProcess) -> None:
    """`serve` without SIDECAR_UVLOOP logs once, at start, that it runs on uvloop."""
    lines = [line for line in sidecar.log_file.read_text(errors="replace").splitlines() if "event loop:" in line]
    assert len(lines) == 1 and lines[0].rstrip().endswith("event loop: uvloop"), lines
