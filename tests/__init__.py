"""Test suite; a package so that ``tests.fixtures_keycloak`` can be loaded as a pytest plugin."""
