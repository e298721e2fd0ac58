"""`sidecar serve` and `sidecar config check`: loaded only when one of them runs (or `--help` lists them).

Their flags are made from `sidecar.config.OPTIONS`, whose import (TOML, URL and address parsing)
no other command needs; `sidecar/cli.py` names this module in its lazy command table.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from sidecar.cli import _default_origin, _print_json
from sidecar.errors import SidecarError

_CLICK_TYPES: dict[str, Any] = {"str": str, "path": click.Path(path_type=Path), "int": int, "float": float}


def _serve_options(fn: Any) -> Any:
    """The flags of `serve` and `config check`, made from sidecar.config.OPTIONS (defaults applied later)."""
    from sidecar.config import CONFIG_ENV, OPTIONS

    for opt in reversed(OPTIONS):
        if not opt.flag:
            continue
        shown = "" if opt.default in (None, ()) else f" [default: {opt.default}]"
        text = f"{opt.help}{shown} (env {opt.env})"
        if opt.kind == "bool":
            name = opt.key.replace("_", "-")
            fn = click.option(f"--{name}/--no-{name}", opt.key, default=None, help=text)(fn)
        elif opt.kind == "list":
            fn = click.option(opt.flag_name, opt.key, multiple=True, help=text)(fn)
        else:
            fn = click.option(opt.flag_name, opt.key, type=_CLICK_TYPES[opt.kind], default=None, help=text)(fn)
    return click.option(
        "--config",
        "config_file",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help=f"TOML file with any of these settings (env {CONFIG_ENV}); flags and SIDECAR_* "
        "environment variables override it",
    )(fn)


@click.command()
@_serve_options
def serve(config_file: Path | None, **flags: Any) -> None:
    """Run the proxy in front of Keycloak, recording into the ledger.

    Settings come from flags, then SIDECAR_* environment variables, then the --config TOML file,
    then the defaults (see `sidecar config check`).
    """
    import logging

    from sidecar import config, logs, loop
    from sidecar.app import TlsFiles, make_app, serve_app
    from sidecar.ledger.keystore import KeyStore

    resolved = config.resolve(flags, config_file=config_file)
    logs.configure(resolved["log_level"], resolved["log_format"])
    from sidecar.proxy import logsafe

    logsafe.install()  # SECURITY: no other library's log record carries request bytes (see logsafe)
    settings = config.settings(resolved)
    data_dir = settings.data_dir
    if resolved["init"] and not KeyStore(data_dir).exists():
        anchor = KeyStore(data_dir).init(resolved["origin"] or _default_origin())
        click.echo(f"created ledger keys for origin {anchor.origin} in {data_dir}", err=True)
    tls = TlsFiles(resolved["tls_cert"], resolved["tls_key"]) if resolved["tls_cert"] else None
    app = make_app(settings)

    async def main() -> None:
        logging.getLogger("sidecar").info("event loop: %s", loop.kind())
        await serve_app(app, settings.host, settings.port, tls=tls)

    loop.run(main(), use_uvloop=resolved["uvloop"])


@click.group("config")
def config_group() -> None:
    """Inspect the configuration `sidecar serve` would run with."""


@config_group.command("check")
@_serve_options
@click.option("--json", "as_json", is_flag=True)
def config_check(config_file: Path | None, as_json: bool, **flags: Any) -> None:
    """Print the effective serve configuration (secrets masked) and where each value came from.

    Exit 0 when it would start (listen address, policy, TLS files, trusted proxies and store URL
    all check out), 2 with the reason when it would not.
    """
    from sidecar import config

    resolved = config.resolve(flags, config_file=config_file)
    problems = _config_problems(resolved)
    rows = resolved.describe()
    if as_json:
        _print_json(
            {
                "config_file": str(resolved.config_file) if resolved.config_file else None,
                "settings": {k: {"value": v, "source": src} for k, v, src in rows},
                "problems": problems,
            }
        )
    else:
        click.echo(f"# config file: {resolved.config_file or '(none)'}")
        width = max(len(k) for k, _, _ in rows)
        for key, shown, source in rows:
            click.echo(f"{key:<{width}} = {shown}    # {source}")
        for problem in problems:
            click.echo(f"problem: {problem}", err=True)
    sys.exit(2 if problems else 0)


def _config_problems(resolved: Any) -> list[str]:
    """What would stop `serve` from starting, checked without opening the ledger or the network."""
    from sidecar import config
    from sidecar.app import TlsFiles, _networks
    from sidecar.core.witness import WitnessError
    from sidecar.ledger.keystore import KeyStore
    from sidecar.policy.schema import load_policy
    from sidecar.replicate.drivers import open_store

    problems: list[str] = []
    checks: list[tuple[str, Any]] = [
        ("listen", lambda: config.listen_address(resolved["listen"])),
        ("policy", lambda: load_policy(resolved["policy"])),
        ("trusted_proxies", lambda: _networks(resolved["trusted_proxies"])),
        ("reader_secret", lambda: config.reader_secret(resolved)),
    ]
    if resolved["tls_cert"]:
        checks.append(("tls", lambda: TlsFiles(resolved["tls_cert"], resolved["tls_key"])))
    if resolved["store"]:
        checks.append(("store", lambda: open_store(resolved["store"])))
    if resolved["witnesses"]:
        checks.append(("witnesses", lambda: _witness_list(resolved["witnesses"], resolved["witness_quorum"])))
    for name, check in checks:
        try:
            check()
        except (SidecarError, WitnessError) as exc:
            problems.append(f"{name}: {exc}")
    if not resolved["init"] and not KeyStore(resolved["data"]).exists():
        problems.append(f"data: no ledger keys in {resolved['data']} (run `sidecar keys init` or set init)")
    return problems


def _witness_list(path: Path, quorum: int) -> None:
    from sidecar.core.witness import WitnessError, parse_witness_list

    try:
        witnesses = parse_witness_list(path.read_bytes())
    except OSError as exc:
        raise WitnessError(f"{path}: {exc.strerror or exc}") from exc
    if quorum > len(witnesses):
        raise WitnessError(f"witness_quorum {quorum} is more than the {len(witnesses)} witnesses listed")
