"""The optional C extension of the core (sidecar/core/_native.c), and the switch that turns it off.

`pip install` builds `sidecar.core._native` when a C compiler, the Python headers, zlib and OpenSSL
are there (setup.py; the build is optional, so a machine without them installs the pure package).
It holds two fast paths: the batched segment scan's record loop (`scan_records`, used by
verify.py) and the Merkle tree's level of node hashes (`hash_pairs`, used by merkle.py). Each only
computes what the Python code would compute, and the Python code stays and decides.

`ENABLED` is whether they are used: when the extension was built, unless the environment variable
SIDECAR_NATIVE=0 forces the pure-Python paths (the tests run both; they give the same findings).
"""

from __future__ import annotations

import os

__all__ = ["ENABLED", "ext", "implementation"]

try:
    from sidecar.core import _native as ext
except ImportError:  # pragma: no cover - a machine without a compiler installs the pure package
    ext = None  # type: ignore[assignment]  # the pure-Python paths run instead (the same findings)

ENABLED = ext is not None and os.environ.get("SIDECAR_NATIVE", "1") != "0"


def implementation() -> str:
    """Which path the core's hot loops take in this process: "native" or "python" (for reports)."""
    return "native" if ENABLED else "python"
