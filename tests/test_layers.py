"""Each subpackage imports only what its dependency rule (docs/design.md, its __init__ docstring) allows."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import sidecar

_PACKAGE = Path(sidecar.__file__).parent
BASE = {"errors", "clock", "durable", "resources", "metrics", "logs"}
DEV = {"harness", "bench", "testing", "demo"}
WIRING = {"app", "config", "__main__"}  # and every cli*.py: the composition root and the commands
RULES: dict[str, set[str]] = {
    "core": set(),
    "policy": {"core"},
    "proxy": {"core"},
    "capture": {"core", "policy"},
    "ledger": {"core", "policy"},
    "replicate": {"core", "ledger"},
    "witness": {"core", "ledger"},
    "audit": {"core", "policy", "ledger", "replicate", "capture"},
    "drift": {"core", "policy", "ledger", "replicate", "audit", "capture"},
    "export": {"core", "ledger", "audit"},
    "report": {"core", "ledger", "audit", "drift", "export"},
}
CORE_THIRD_PARTY = {"orjson", "cryptography", "multidict"}


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, dotted name) of every import in the file, at the top or inside a function."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "sidecar":  # from sidecar import metrics
                found += [(node.lineno, f"sidecar.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def _part(path: Path) -> str:
    rel = path.relative_to(_PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _modules() -> list[Path]:
    return sorted(_PACKAGE.rglob("*.py"))


def test_every_subpackage_has_a_rule_and_states_it() -> None:
    """Every subpackage is in RULES or is dev-only, and its __init__ docstring states its dependency rule."""
    subpackages = {p.parent.name for p in _PACKAGE.glob("*/__init__.py")}
    assert subpackages - DEV <= set(RULES)
    for name in subpackages:
        doc = ast.get_docstring(ast.parse((_PACKAGE / name / "__init__.py").read_text())) or ""
        assert "Dependency rule" in doc or "dev only" in doc.lower(), name


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(_PACKAGE)))
def test_imports_follow_the_dependency_rules(path: Path) -> None:
    """A module imports the shared base and the subpackages its rule names; nothing at runtime imports dev code."""
    part = _part(path)
    if part in DEV or part in WIRING or part.startswith("cli"):
        return
    allowed = BASE | ({part} if part in RULES else set()) | RULES.get(part, set())
    bad = []
    for line, name in _imports(path):
        parts = name.split(".")
        if parts[0] == "sidecar":
            target = parts[1] if len(parts) > 1 else ""
            if target not in allowed:
                bad.append(f"{line}: {name}")
        elif part == "core" and parts[0] not in sys.stdlib_module_names and parts[0] not in CORE_THIRD_PARTY:
            bad.append(f"{line}: {name} (core imports only the standard library, orjson, cryptography, multidict)")
    assert bad == [], f"{path.relative_to(_PACKAGE)} ({part}) may import {sorted(allowed)}"


def test_core_imports_nothing_of_the_package_but_errors() -> None:
    """The pure core's only package import is the exception tree."""
    names = {name for p in (_PACKAGE / "core").glob("*.py") for _, name in _imports(p) if name.startswith("sidecar.")}
    assert {n for n in names if not n.startswith("sidecar.core")} == {"sidecar.errors"}
