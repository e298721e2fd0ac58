"""Session fixture: the project built as a wheel and installed, without test extras, into a fresh
virtual environment outside the checkout, the way a platform team (or compose/Dockerfile) installs it.

`wheel_install.run("sidecar", ...)` runs a command from that environment with the checkout neither
the working directory nor on any path, so only what the wheel ships can be found.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class WheelInstall:
    wheel: Path
    venv: Path
    cwd: Path
    seconds: float  # build + install time

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME") and not k.startswith(("SIDECAR_", "KC_"))
        }
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        return {**env, **(extra or {})}

    def run(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 120, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin / args[0]), *args[1:]]
        return subprocess.run(
            cmd, cwd=self.cwd, env=self.env(env), capture_output=True, text=True, timeout=timeout, check=check
        )


def _pip(python: Path, *args: str, timeout: float = 900) -> None:
    proc = subprocess.run(
        [str(python), "-m", "pip", "--disable-pip-version-check", "-q", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"pip {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


@pytest.fixture(scope="session")
def wheel_install(tmp_path_factory: pytest.TempPathFactory) -> WheelInstall:
    """The built wheel installed with its runtime dependencies only, in a fresh venv outside the checkout."""
    began = time.monotonic()
    root = tmp_path_factory.mktemp("wheel")
    dist = root / "dist"
    _pip(Path(sys.executable), "wheel", "--no-deps", "--wheel-dir", str(dist), str(ROOT))
    wheels = sorted(dist.glob("keycloak_ledger_sidecar-*.whl"))
    assert len(wheels) == 1, wheels
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    _pip(venv / "bin" / "python", "install", str(wheels[0]))
    cwd = root / "work"
    cwd.mkdir()
    return WheelInstall(wheels[0], venv, cwd, time.monotonic() - began)
