"""SIEM exports: OCSF and ECS mappings of ledger records, intent/outcome pairing, and --follow.

Dependency rule: imports `core`, `ledger`, `audit` (verified reading) and the shared base; nothing of
the write path (`proxy`, `capture`, `replicate`). See docs/design.md.
"""
