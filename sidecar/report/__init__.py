"""The auditor's report: one self-contained HTML file built from a verified ledger.

Dependency rule: imports `core`, `ledger`, `audit`, `drift`, `export` and the shared base; nothing of
the write path (`proxy`, `capture`, `replicate`). See docs/design.md.
"""
