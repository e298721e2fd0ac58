"""harness: real outside parts for tests and the demo (Keycloak, versitygw, a witness, PostgreSQL). [dev only]

Not used by `sidecar serve` or any auditor command; no runtime module imports it (tests/test_layers.py).
"""
