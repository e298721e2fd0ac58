"""`sidecar verify --help` imports only what it needs (issue 14's start-up target, checked without timing)."""

from __future__ import annotations

import subprocess
import sys

# Modules `verify --help` used to import (directly or through the serve flags) and must not import again:
# the web stack, the crypto and metrics libraries, the benchmarks, the settings table and orjson.
DEFERRED = (
    "aiohttp",
    "asyncio",
    "cryptography",
    "orjson",
    "prometheus_client",
    "rich",
    "tomllib",
    "sidecar.app",
    "sidecar.bench",
    "sidecar.config",
    "sidecar.cli_serve",
    "sidecar.audit",
    "sidecar.core",
    "sidecar.ledger",
)


_SCRIPT = """
import sys
from sidecar.cli import main
try:
    main(sys.argv[1:], prog_name="sidecar")
except SystemExit:
    pass
print("\\n".join(sorted(sys.modules)), file=sys.stderr)
"""


def _imported(*args: str) -> set[str]:
    """The modules a fresh interpreter has loaded after running `sidecar ARGS` (a subprocess)."""
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, *args], capture_output=True, text=True, check=True, timeout=120
    )
    return set(out.stderr.split())


def test_verify_help_does_not_import_the_deferred_modules() -> None:
    """`sidecar verify --help` prints its help without importing any deferred module or package."""
    names = _imported("verify", "--help")
    assert "sidecar.cli" in names and "click" in names, sorted(names)
    heavy = sorted(n for n in names if any(n == d or n.startswith(d + ".") for d in DEFERRED))
    assert heavy == []


def test_serve_help_still_loads_its_flags() -> None:
    """`sidecar serve --help` loads the lazily registered serve command with the flags from the settings table."""
    names = _imported("serve", "--help")
    assert {"sidecar.cli_serve", "sidecar.config"} <= names
