"""The auditor's report: one self-contained HTML file built from a verified ledger."""
