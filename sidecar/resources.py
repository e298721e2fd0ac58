"""Files the product reads at run time, found inside the installed package (importlib.resources).

Role: the one way code names a shipped file (the default policy, the test realm, report assets),
so an installed wheel finds exactly what a source checkout finds. Invariant: every name here is
listed in pyproject's package-data; tests/deploy/test_wheel.py installs the built wheel and reads
each one from there.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from sidecar.errors import ConfigError


def resource(*parts: str) -> Path:
    """The shipped file ``sidecar/<parts...>`` as a path (the package must be installed unzipped)."""
    found = files("sidecar").joinpath(*parts)
    if not isinstance(found, Path):
        raise ConfigError(f"sidecar is installed in a form without files on disk; cannot read {'/'.join(parts)}")
    return found


DEFAULT_POLICY = resource("policies", "default.toml")
TEST_REALM = resource("harness", "realms", "ledger-test.json")
