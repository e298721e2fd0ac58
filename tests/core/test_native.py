"""The optional C extension is built where the tests run, and SIDECAR_NATIVE=0 turns it off.

CI installs the package with `pip install -e .` on a fresh machine (gcc, Python, zlib and OpenSSL
headers): this file fails there if the extension did not build, unless the run set SIDECAR_NATIVE=0
on purpose to test the pure-Python paths alone.
"""

from __future__ import annotations

import os
import subprocess
import sys

from sidecar.core import native

OFF = os.environ.get("SIDECAR_NATIVE") == "0"


def test_the_extension_is_built_and_used() -> None:
    """The C extension is importable (pip install built it) and used, unless SIDECAR_NATIVE=0 turned it off on purpose."""
    if OFF:
        assert not native.ENABLED and native.implementation() == "python"
    else:
        assert native.ext is not None, "sidecar/core/_native.c was not built: run `pip install -e .` with gcc"
        assert native.ENABLED and native.implementation() == "native"


def test_sidecar_native_0_turns_it_off() -> None:
    """In a process started with SIDECAR_NATIVE=0 the core runs its pure-Python paths, the extension notwithstanding."""
    probe = "from sidecar.core import merkle, native, verify; print(native.implementation(), verify.NATIVE, merkle._hash_pairs)"
    env = {**os.environ, "SIDECAR_NATIVE": "0"}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["python", "False", "None"]
