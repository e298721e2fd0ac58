"""Session fixtures for the real Keycloak server (see ``sidecar.harness.keycloak``).

One server per test session: starting Keycloak costs 12-35 s on this machine, so tests share it and must
not depend on each other's leftovers (use fresh users or roles where a test changes state). Keycloak is
started with ``--hostname`` set to the sidecar's future address (``ports["sidecar"]``), so tokens and
redirects name the sidecar even when a test talks to Keycloak directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.harness.keycloak import KeycloakServer, ensure_distribution, free_port
from sidecar.harness.realm import REALM

ADMIN_USERNAME = "admin"
ADMIN_PASSWORD = "admin-pw-ledger-1"


@pytest.fixture(scope="session")
def kc_dist() -> Path:
    """The unpacked Keycloak distribution; fetched with mvn on first use. Fails (no skip) if it cannot be."""
    return ensure_distribution()


@pytest.fixture(scope="session")
def ports() -> dict[str, int]:
    """Free loopback ports for this session: ``sidecar``, ``keycloak_http``, ``keycloak_mgmt``."""
    chosen: dict[str, int] = {}
    for name in ("sidecar", "keycloak_http", "keycloak_mgmt"):
        port = free_port()
        while port in chosen.values():  # free_port() may hand out the same port twice in a row
            port = free_port()
        chosen[name] = port
    return chosen


@pytest.fixture(scope="session")
def keycloak(
    kc_dist: Path, ports: dict[str, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KeycloakServer]:
    """A started Keycloak with the ``ledger-test`` realm imported; stopped at the end of the session."""
    work = tmp_path_factory.mktemp("keycloak")
    server = KeycloakServer(
        kc_dist,
        work,
        http_port=ports["keycloak_http"],
        management_port=ports["keycloak_mgmt"],
        public_url=f"http://127.0.0.1:{ports['sidecar']}",
        admin_username=ADMIN_USERNAME,
        admin_password=ADMIN_PASSWORD,
        realm_files=[REALM.file],
        log_file=work / "keycloak.log",
    )
    with server:
        yield server
