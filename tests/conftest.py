"""Shared pytest configuration.

Fixtures live in plugin modules next to this file, one per outside world, and are listed here.
"""

# tests.fixtures_keycloak: the real Keycloak server (session-scoped; a missing dist fails, never skips).
# tests.fixtures_sidecar: the sidecar as a process in front of it, and the session's secret registry.
pytest_plugins = ["tests.fixtures_keycloak", "tests.fixtures_sidecar"]
