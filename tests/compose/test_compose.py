"""compose/ is checked by parsing (Docker cannot run here) and by the same topology run as processes.

The e2e suite runs that topology (Keycloak with --hostname at the sidecar and xforwarded proxy headers,
the sidecar in front with a directory replica); these tests pin that compose/ describes the same thing
and that its sidecar command line is accepted by the real CLI parser.
"""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from sidecar.cli import main

COMPOSE = Path(__file__).resolve().parents[2] / "compose" / "docker-compose.yml"


def _doc() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load(COMPOSE.read_text())


def test_keycloak_points_its_public_url_at_the_sidecar() -> None:
    """Keycloak's hostname is the sidecar's public URL, it trusts X-Forwarded-*, and it is not published."""
    kc = _doc()["services"]["keycloak"]
    assert any(a.startswith("--hostname=") for a in kc["command"])
    assert "--proxy-headers=xforwarded" in kc["command"]
    assert "ports" not in kc, "only the sidecar may be reachable from outside"


def test_sidecar_command_line_is_accepted_by_the_cli() -> None:
    """The sidecar service's arguments parse with the real `sidecar serve` options (environment defaults filled in)."""
    svc = _doc()["services"]["sidecar"]
    args = [a.replace("${LEDGER_ORIGIN:-localhost/keycloak-ledger}", "localhost/keycloak-ledger") for a in svc["command"]]
    assert args[0] == "serve"
    command = main.get_command(click.Context(main), "serve")
    assert isinstance(command, click.Command)
    sub_ctx = command.make_context("serve", args[1:])
    assert sub_ctx.params["upstream"] == "http://keycloak:8080"
    assert sub_ctx.params["store_url"] == "/replica"
    assert svc["ports"] == ["8443:8443"]


def test_dockerfile_installs_the_package_and_runs_the_cli() -> None:
    """The image installs this package, runs as a non-root user and has `sidecar` as its entry point."""
    text = (COMPOSE.parent / "Dockerfile").read_text()
    assert "pip install --no-cache-dir ." in text and "USER sidecar" in text
    assert 'ENTRYPOINT ["sidecar"]' in text
