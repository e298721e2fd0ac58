"""Keycloak ledger sidecar: a reverse proxy that records identity events in a signed, hash-chained log."""

__version__ = "0.1.0"
