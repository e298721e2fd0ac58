"""Drift: Keycloak's live state compared with the state the ledger says it should have.

Dependency rule: imports `core`, `policy`, `ledger`, `replicate` and the shared base, and (inside
`check_once`) `audit` and `capture`; never `proxy`. See docs/design.md.
"""
