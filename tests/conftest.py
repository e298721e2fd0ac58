"""Shared pytest configuration.

Fixtures live in plugin modules next to this file, one per outside world, and are listed here.
"""

# tests.fixtures_keycloak: the real Keycloak server (session-scoped; a missing dist fails, never skips).
# tests.fixtures_sidecar: the sidecar as a process in front of it, and the session's secret registry.
# tests.fixtures_wheel: the built wheel installed without test extras in a fresh venv (session-scoped).
pytest_plugins = ["tests.fixtures_keycloak", "tests.fixtures_sidecar", "tests.fixtures_wheel"]
