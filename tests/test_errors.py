"""One exception tree: every exception class of the package is in sidecar/errors.py or drawn in its docstring."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from click.testing import CliRunner

import sidecar
from sidecar import errors
from sidecar.audit.reading import ReadRefused
from sidecar.cli import main

_PACKAGE = Path(sidecar.__file__).parent


def _exception_classes() -> list[tuple[str, str]]:
    """(module path, class name) of every class in the package whose bases name an exception."""
    known = {"Exception", "BaseException", "ValueError", "OSError", "ConnectionError", "KeyError", "RuntimeError"}
    found: list[tuple[str, str]] = []
    trees = {p: ast.parse(p.read_text()) for p in sorted(_PACKAGE.rglob("*.py"))}
    names = set(known) | {n for n in dir(errors) if isinstance(getattr(errors, n), type)}
    grew = True
    while grew:  # classes that derive from an exception class defined anywhere in the package
        grew = False
        for tree in trees.values():
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.ClassDef)
                    and node.name not in names
                    and any(isinstance(b, ast.Name) and b.id in names for b in node.bases)
                ):
                    names.add(node.name)
                    grew = True
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name in names - known:
                found.append((str(path.relative_to(_PACKAGE)), node.name))
    return found


def test_every_exception_class_is_defined_or_drawn_in_errors_py() -> None:
    """Each exception class outside errors.py is named in errors.py's drawing of the tree."""
    classes = _exception_classes()
    assert ("replicate/store.py", "PutResult") not in classes  # only exception classes are collected
    assert len(classes) >= 20
    doc = errors.__doc__ or ""
    missing = [(path, name) for path, name in classes if path != "errors.py" and name not in doc]
    assert missing == []
    undrawn = [name for path, name in classes if path == "errors.py" and name not in doc]
    assert undrawn == []


def test_cli_facing_errors_carry_their_exit_code() -> None:
    """Unusable input and configuration exit 2; a failed verification (integrity, refused read) exits 1."""
    assert errors.SidecarError.exit_code == errors.ConfigError.exit_code == errors.UnusableInput.exit_code == 2
    assert errors.StorageError.exit_code == errors.UpstreamError.exit_code == 2
    assert errors.IntegrityError.exit_code == ReadRefused.exit_code == 1


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["verify", "/nonexistent/ledger", "--trust", "/nonexistent/trust.json"], 2),
        (["timeline", "/nonexistent/ledger", "--trust", "/nonexistent/trust.json"], 2),
    ],
)
def test_the_command_line_maps_the_tree_in_one_place(args: list[str], code: int) -> None:
    """A SidecarError raised by any command is printed as `error: ...` and exits with the error's code."""
    result = CliRunner().invoke(main, args)
    assert result.exit_code == code, result.output
    assert "error: " in result.output and "Traceback" not in result.output


def test_upstream_error_keeps_its_reason() -> None:
    """UpstreamError is a ConnectionError with a stable reason label (504 for a timeout, else 502)."""
    err = errors.UpstreamError("TimeoutError", reason="upstream_timeout")
    assert isinstance(err, ConnectionError) and err.reason == "upstream_timeout" and str(err) == "TimeoutError"
    assert errors.UpstreamError("x").reason == "upstream_failed"
