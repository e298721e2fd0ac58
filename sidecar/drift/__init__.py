"""Drift: Keycloak's live state compared with the state the ledger says it should have."""
