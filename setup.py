"""The one thing pyproject.toml cannot say on setuptools 68: the optional C extension of the verifier.

`sidecar.core._native` is the batched segment scan's hot loop (sidecar/core/_native.c). It is optional:
on a machine without a compiler, Python headers, zlib or OpenSSL headers the build prints a warning
and the package installs without it; the verifier then runs its pure-Python path (the same findings).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "sidecar.core._native",
            ["sidecar/core/_native.c"],
            libraries=["crypto", "z"],  # OpenSSL's SHA-256, zlib's CRC-32
            extra_compile_args=["-O3", "-std=c99", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        )
    ]
)
