"""Witnesses: submitting the ledger's checkpoints for cosignature (C2SP tlog-witness)."""
