"""SIEM exports: OCSF and ECS mappings of ledger records, intent/outcome pairing, and --follow."""
