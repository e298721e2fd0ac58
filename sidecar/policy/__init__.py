"""Policies: which exchanges become records, what is never stored, and what fails closed."""
