"""Tests for the auditor's side: `sidecar verify` on good, tampered and unusable input."""
