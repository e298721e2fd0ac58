"""Attacks on a ledger's files and what the offline verifier must report for each."""
