"""The ``ledger-test`` realm that tests and the demo import into Keycloak, as constants.

Role: one typed home for the names and test secrets in ``sidecar/harness/realms/ledger-test.json``, so code never
repeats a password or client secret literally. Invariant: every value here matches that file; the
harness tests log in with these values, so a drift fails loudly.

The passwords and secrets are throwaway test values for a loopback-only server.
``REALM_FILE`` ships inside the package (importlib.resources), so an installed wheel has it too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from sidecar.resources import TEST_REALM as REALM_FILE


@dataclass(frozen=True)
class RealmUser:
    """A user with a password grant-able credential."""

    username: str
    password: str
    email: str


@dataclass(frozen=True)
class RealmClient:
    """An OIDC client; ``secret`` is None for public clients."""

    client_id: str
    secret: str | None


@dataclass(frozen=True)
class TestRealm:
    """Names and credentials of the imported realm (see the JSON file for the full configuration).

    * alice, bob: plain users with the realm's default roles.
    * carol: realm admin of ``ledger-test`` (``realm-management``/``realm-admin``).
    * dave: no role mappings at all (not even the default roles).
    * ledger-app: confidential, standard flow + direct grants. ledger-spa: public, PKCE S256 required.
      ledger-robot: confidential, service account only, with read-only realm-management roles.
    * Redirect URIs of ledger-app and ledger-spa are ``http://127.0.0.1/*`` and ``http://localhost/*``;
      Keycloak ignores the port of loopback redirect URIs (RFC 8252), so any callback port matches.
    """

    __test__: ClassVar[bool] = False  # not a pytest test class, despite the name

    name: str = "ledger-test"
    alice: RealmUser = RealmUser("alice", "Alice-pw-7431!", "alice@example.test")
    bob: RealmUser = RealmUser("bob", "Bob-pw-9902!", "bob@example.test")
    carol: RealmUser = RealmUser("carol", "Carol-pw-5517!", "carol@example.test")
    dave: RealmUser = RealmUser("dave", "Dave-pw-2284!", "dave@example.test")
    app: RealmClient = RealmClient("ledger-app", "ledger-app-secret-4417")
    spa: RealmClient = RealmClient("ledger-spa", None)
    robot: RealmClient = RealmClient("ledger-robot", "ledger-robot-secret-8812")
    robot_service_account: str = "service-account-ledger-robot"
    robot_roles: tuple[str, ...] = (
        "view-users",
        "query-users",
        "view-clients",
        "view-events",
        "query-groups",
        "view-realm",
        "view-identity-providers",
    )
    realm_roles: tuple[str, ...] = ("auditor", "operator", "viewer", "ledger-auditor")
    app_client_roles: tuple[str, ...] = ("app-admin", "app-user")
    groups: tuple[str, ...] = ("ops", "devs")
    events_enabled: bool = True
    admin_events_enabled: bool = True
    admin_events_details_enabled: bool = True
    file: Path = field(default=REALM_FILE)

    @property
    def users(self) -> tuple[RealmUser, ...]:
        return (self.alice, self.bob, self.carol, self.dave)


REALM = TestRealm()
