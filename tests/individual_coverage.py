"""Each module of sidecar/core/ reaches full line coverage from its own test files.

Like mitmproxy's test/individual_coverage.py: for every `sidecar/core/X.py` the checker runs
`tests/core/test_X.py` alone under coverage, measuring only `X.py`, and compares the result with
the ratchet below. A module missing from RATCHET must reach 100% of its lines; a module in it
must not fall below its floor, and one that reaches 100% must leave the list (the ratchet only
tightens). A core module without its own test file fails the check, unless the ratchet lists it at 0.

Run: `.venv/bin/python tests/individual_coverage.py` (prints one line per module; exit 1 on a
failure). `make test` runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "sidecar" / "core"

# Module -> lowest line coverage (percent) its own test file may give; a module listed at 0 may still lack
# its test file. Only ever raise a floor or remove a line; the list is empty when every module is at 100%.
RATCHET: dict[str, float] = {}


def measure(module: Path) -> tuple[str, float | None, str]:
    """Run the module's own test files under coverage; return (name, percent or None, detail).

    A module's own tests are `tests/core/test_X.py` and any `tests/core/test_X_*.py` beside it (a large
    module may split its tests by part, e.g. verify's batched scan in test_verify_batched.py).
    """
    name = module.stem
    test = ROOT / "tests" / "core" / f"test_{name}.py"
    parts = sorted((ROOT / "tests" / "core").glob(f"test_{name}_*.py"))
    if not test.exists():
        return name, 0.0 if RATCHET.get(name) == 0.0 else None, f"no {test.relative_to(ROOT)}"
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / ".coverage"
        env = {**os.environ, "COVERAGE_FILE": str(data)}
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "coverage",
                "run",
                f"--include={module}",
                "-m",
                "pytest",
                "-q",
                "-x",
                "-p",
                "no:cacheprovider",
                "-p",
                "no:randomly",
                str(test),
                *map(str, parts),
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if run.returncode != 0:
            return name, None, f"{test.relative_to(ROOT)} failed:\n{run.stdout[-2000:]}{run.stderr[-2000:]}"
        out = Path(tmp) / "cov.json"
        subprocess.run(
            [sys.executable, "-m", "coverage", "json", "-q", "-o", str(out)],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
        report = json.loads(out.read_text())
    files = list(report["files"].values())
    if not files:
        return name, 0.0, "module never imported"
    summary = files[0]["summary"]
    statements, covered = summary["num_statements"], summary["covered_lines"]
    percent = 100.0 if statements == 0 else 100.0 * covered / statements
    missing = files[0]["missing_lines"]
    return name, percent, f"missing lines {missing}" if missing else ""


def main() -> int:
    modules = sorted(p for p in CORE.glob("*.py") if p.name != "__init__.py")
    workers = int(os.environ.get("COVERAGE_WORKERS", "2"))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(measure, modules))
    failed = False
    for name, percent, detail in results:
        floor = RATCHET.get(name)
        if percent is None:
            verdict, failed = "FAIL", True
        elif floor is None:
            verdict = "ok" if percent >= 100.0 else "FAIL"
        elif percent >= 100.0:
            verdict = "FAIL (reaches 100%: remove it from RATCHET)"
        else:
            verdict = "ok (ratchet)" if round(percent, 1) >= floor else f"FAIL (below its floor {floor:.1f}%)"
        failed = failed or verdict.startswith("FAIL")
        shown = "  -  " if percent is None else f"{percent:5.1f}%"
        print(f"sidecar/core/{name}.py {shown} {verdict} {detail}".rstrip())
    for name in sorted(set(RATCHET) - {m.stem for m in modules}):
        print(f"RATCHET names {name}, which is not a module of sidecar/core/")
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
