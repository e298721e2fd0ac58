"""Witnesses: submitting the ledger's checkpoints for cosignature (C2SP tlog-witness).

Dependency rule: imports `core`, `ledger` (the `Commit` value) and the shared base. See docs/design.md.
"""
