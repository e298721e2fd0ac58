"""Tests for sidecar.core."""
