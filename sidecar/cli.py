"""The `sidecar` command line: thin wrappers over the library.

Exit codes are part of the interface: `verify` gives 0 (intact), 1 (tampered
or incomplete, with findings), 2 (unusable input). Every command that a
machine might read has `--json`. Errors are one clear line on stderr, never a
traceback (set SIDECAR_DEBUG=1 for one).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
import orjson

from sidecar.errors import SidecarError, StorageError


def _fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _print_json(obj: Any) -> None:
    click.echo(orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())


# Subcommands whose modules are imported only when they run (or `--help` lists them): `bench` pulls
# in rich, the harness and every benchmark, which no other command should pay for.
_LAZY_COMMANDS = {"bench": ("sidecar.bench.cli", "bench"),
                  **{name: ("sidecar.cli_auditor", name) for name in ("timeline", "export", "drift", "report")}}


class _Group(click.Group):

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _LAZY_COMMANDS and cmd_name not in self.commands:
            import importlib

            module, attr = _LAZY_COMMANDS[cmd_name]
            self.add_command(getattr(importlib.import_module(module), attr), cmd_name)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SidecarError as exc:
            if os.environ.get("SIDECAR_DEBUG"):
                raise
            _fail(str(exc))


@click.group(cls=_Group)
@click.version_option(package_name="keycloak-ledger-sidecar")
def main() -> None:
    """Keycloak ledger sidecar: record every login and permission change in a signed, replicated log."""


# ---------------------------------------------------------------------------------------------- serve
@main.command()
@click.option("--upstream", required=True, help="Keycloak's base URL, e.g. http://127.0.0.1:8080")
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path), help="ledger data directory")
@click.option("--listen", default="127.0.0.1:8443", show_default=True, help="HOST:PORT to listen on")
@click.option("--policy", "policy_file", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="policy TOML (default: the shipped sidecar/policies/default.toml)")
@click.option("--init/--no-init", default=False, help="create keys first if the data directory has none")
@click.option("--origin", default=None, help="ledger origin name for --init")
@click.option("--segment-max-bytes", type=int, default=8 * 1024 * 1024, show_default=True)
@click.option("--segment-max-age", type=float, default=3600.0, show_default=True, help="seconds")
@click.option("--epoch", "epoch_s", type=float, default=3600.0, show_default=True,
              help="signing key lifetime in seconds (forward security)")
@click.option("--heartbeat", type=float, default=30.0, show_default=True, help="idle checkpoint interval, seconds")
@click.option("--store", "store_url", default=None,
              help="remote copy: a directory, file:///dir, or s3://bucket/prefix?endpoint=URL&region=R")
@click.option("--retention-days", type=int, default=365, show_default=True, help="S3 Object Lock retention")
@click.option("--high-water", "high_water_mb", type=int, default=256, show_default=True,
              help="MiB of unreplicated ledger before the failure policy applies")
@click.option("--replication-interval", type=float, default=0.2, show_default=True, help="seconds between steps")
@click.option("--auditor-realm", default="master", show_default=True,
              help="realm whose tokens may read the auditor endpoint")
@click.option("--auditor-role", default="ledger-auditor", show_default=True, help="realm role auditors need")
@click.option("--reader-realm", default=None, help="realm of the read-only service account (before/after state)")
@click.option("--reader-client-id", default=None, help="client id of that service account")
@click.option("--reader-secret-file", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="file holding its client secret (or env SIDECAR_READER_SECRET); never on the command line")
@click.option("--drift/--no-drift", "drift_on", default=True, show_default=True,
              help="run the drift monitor (needs the state reader's service account)")
@click.option("--drift-poll", type=float, default=10.0, show_default=True,
              help="seconds between reconciliations of Keycloak's event stores")
@click.option("--drift-sweep", type=float, default=300.0, show_default=True,
              help="seconds between full sweeps of the live access state")
@click.option("--drift-rate", type=float, default=50.0, show_default=True,
              help="most Keycloak reads per second the drift monitor makes")
@click.option("--capture-budget", "capture_budget_mb", type=int, default=64, show_default=True,
              help="MiB of captured bodies held at once (all requests); beyond it captured requests get 503")
@click.option("--identity-connections", type=int, default=64, show_default=True,
              help="upstream connections for captured requests (logins, tokens, admin writes)")
@click.option("--passthrough-connections", type=int, default=256, show_default=True,
              help="upstream connections for everything else (a separate pool)")
@click.option("--auditor-recheck", "auditor_recheck_s", type=float, default=5.0, show_default=True,
              help="seconds an auditor's live role and enabled check is cached")
@click.option("--auditor-denied-window", "auditor_denied_window_s", type=float, default=60.0, show_default=True,
              help="seconds per requester in which refused audit reads make one record plus one aggregate")
@click.option("--witnesses", "witness_file", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              default=None, help="witness list (kc-ledger-witnesses/1 JSON with urls): get checkpoints cosigned")
@click.option("--witness-quorum", type=click.IntRange(min=1), default=1, show_default=True,
              help="cosignatures a checkpoint needs")
@click.option("--witness-stale", "witness_stale_s", type=float, default=300.0, show_default=True,
              help="seconds the newest checkpoint may wait for its quorum before readiness fails")
@click.option("--log-level", default="INFO", show_default=True)
def serve(upstream: str, data_dir: Path, listen: str, policy_file: Path | None, init: bool, origin: str | None,
          segment_max_bytes: int, segment_max_age: float, epoch_s: float, heartbeat: float, store_url: str | None,
          retention_days: int, high_water_mb: int, replication_interval: float, auditor_realm: str,
          auditor_role: str, reader_realm: str | None, reader_client_id: str | None,
          reader_secret_file: Path | None, drift_on: bool, drift_poll: float, drift_sweep: float, drift_rate: float,
          capture_budget_mb: int, identity_connections: int, passthrough_connections: int,
          auditor_recheck_s: float, auditor_denied_window_s: float, witness_file: Path | None, witness_quorum: int,
          witness_stale_s: float, log_level: str) -> None:
    """Run the proxy in front of Keycloak, recording into the ledger."""
    import asyncio
    import logging

    from sidecar.app import Settings, make_app, serve_app
    from sidecar.drift.monitor import DriftConfig
    from sidecar.ledger.keystore import KeyStore
    from sidecar.ledger.writer import LedgerConfig

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from sidecar.proxy import logsafe

    logsafe.install()  # SECURITY: no other library's log record carries request bytes (see logsafe)
    host, _, port_s = listen.rpartition(":")
    if not host or not port_s.isdigit():
        _fail(f"--listen must be HOST:PORT, got {listen!r}")
    if init and not KeyStore(data_dir).exists():
        anchor = KeyStore(data_dir).init(origin or _default_origin())
        click.echo(f"created ledger keys for origin {anchor.origin} in {data_dir}", err=True)
    settings = Settings(upstream=upstream, data_dir=data_dir, host=host.strip("[]"), port=int(port_s),
                        policy_file=policy_file, store_url=store_url, store_retention_days=retention_days,
                        high_water_bytes=high_water_mb * 1024 * 1024, replication_interval_s=replication_interval,
                        auditor_realm=auditor_realm, auditor_role=auditor_role, reader_realm=reader_realm,
                        reader_client_id=reader_client_id,
                        reader_secret=(reader_secret_file.read_text().strip() if reader_secret_file
                                       else os.environ.get("SIDECAR_READER_SECRET")),
                        drift=DriftConfig(poll_s=drift_poll, sweep_s=drift_sweep, rate_per_s=drift_rate)
                        if drift_on else None,
                        ledger=LedgerConfig(segment_max_bytes=segment_max_bytes, segment_max_age_s=segment_max_age,
                                            epoch_s=epoch_s, heartbeat_s=heartbeat),
                        capture_budget_bytes=capture_budget_mb * 1024 * 1024,
                        identity_connections=identity_connections, passthrough_connections=passthrough_connections,
                        auditor_recheck_s=auditor_recheck_s, auditor_denied_window_s=auditor_denied_window_s,
                        witness_file=witness_file, witness_quorum=witness_quorum, witness_stale_s=witness_stale_s)
    app = make_app(settings)
    asyncio.run(serve_app(app, settings.host, settings.port))


def _default_origin() -> str:
    import secrets
    import socket

    host = "".join(ch for ch in socket.gethostname() if ch.isalnum() or ch in ".-") or "localhost"
    return f"{host}/keycloak-ledger/{secrets.token_hex(4)}"


# ---------------------------------------------------------------------------------------------- keys
@main.group()
def keys() -> None:
    """Create, rotate and show the ledger's signing keys."""


@keys.command("init")
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path))
@click.option("--origin", default=None, help="a unique name for this ledger (default: host-based)")
@click.option("--json", "as_json", is_flag=True)
def keys_init(data_dir: Path, origin: str | None, as_json: bool) -> None:
    """Create the epoch 0 key (mode 0600) and the trust anchor."""
    from sidecar.ledger.keystore import KeyStore

    anchor = KeyStore(data_dir).init(origin or _default_origin())
    if as_json:
        _print_json(anchor.to_json())
    else:
        click.echo(f"ledger keys created in {data_dir}\norigin: {anchor.origin}\n"
                   f"trust anchor: {data_dir / 'trust.json'} (give this file to auditors)")


@keys.command("show")
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path, exists=True))
@click.option("--witness-vkey", is_flag=True,
              help="print the log witness key's vkey instead (what witnesses are configured with; created if missing)")
def keys_show(data_dir: Path, witness_vkey: bool) -> None:
    """Print the trust anchor (origin and first public key) as JSON."""
    from sidecar.ledger.keystore import KeyStore

    if witness_vkey:
        from sidecar.core.witness import log_vkey

        click.echo(log_vkey(KeyStore(data_dir).witness_signer().public))
        return
    _print_json(KeyStore(data_dir).trust().to_json())


@keys.command("rotate")
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path, exists=True))
@click.option("--json", "as_json", is_flag=True)
def keys_rotate(data_dir: Path, as_json: bool) -> None:
    """Rotate to a new epoch key now (the sidecar must not be running); the old key is destroyed."""
    import asyncio

    from sidecar.ledger.writer import Ledger, LedgerConfig

    async def run() -> dict[str, Any]:
        ledger = await Ledger.open(data_dir, config=LedgerConfig(epoch_s=0.0), start_task=False)
        key = ledger.public_key
        await ledger.close()
        return {"key": key.to_json(), "records": ledger.size}

    result = asyncio.run(run())
    if as_json:
        _print_json(result)
    else:
        click.echo(f"signing key is now {result['key']['name']} ({result['key']['key_id']})")


# ---------------------------------------------------------------------------------------------- verify
def _verify_bundle(path: Path, trust: Any, as_json: bool) -> NoReturn:
    from sidecar.core.proof import verify_bundle
    from sidecar.errors import IntegrityError

    try:
        bundle = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        _fail(f"{path}: not a readable JSON proof bundle: {exc}", 2)
    try:
        what = verify_bundle(bundle, trust)
    except IntegrityError as exc:
        if as_json:
            _print_json({"verdict": "invalid", "finding": str(exc)})
        else:
            click.echo(f"verdict: INVALID PROOF\n  - {exc}")
        sys.exit(1)
    if as_json:
        _print_json({"verdict": "valid", "statement": what})
    else:
        click.echo(f"verdict: VALID PROOF\n  {what}")
    sys.exit(0)


def _is_remote(source: str) -> bool:
    """A URL, or a directory in the remote-store layout (a directory store), is pulled before verifying."""
    if source.startswith(("s3://", "file://", "http://", "https://", "memory://")):
        return True
    path = Path(source)
    return (path / "tail").is_dir() or ((path / "checkpoints").is_dir() and not (path / "objects").is_dir())


@main.command()
@click.argument("source")
@click.option("--trust", "trust_file", type=click.Path(path_type=Path), required=True,
              help="the pinned trust anchor (from `sidecar keys show`)")
@click.option("--remote", default=None, help="also compare with this remote copy (finds a split view or lag)")
@click.option("--token", envvar="SIDECAR_AUDIT_TOKEN", default=None,
              help="bearer token for a sidecar URL source (or SIDECAR_AUDIT_TOKEN)")
@click.option("--checkpoint", "checkpoints", multiple=True, type=click.Path(path_type=Path),
              help="a signed checkpoint obtained elsewhere; finds a cut tail or a rollback")
@click.option("--last-seen", "last_seen", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="the auditor's pinned newest checkpoint: checked against, and moved forward after a clean "
                   "run (created on first use); finds a later cut tail or rolled-back store")
@click.option("--workers", type=int, default=None, help="processes (default: all cores)")
@click.option("--thorough", is_flag=True, hidden=True,
              help="accepted for old scripts: verification is always the full procedure")
@click.option("--witnesses", "witness_file", type=click.Path(path_type=Path), default=None,
              help="witness list (kc-ledger-witnesses/1 JSON): check cosignatures and ask the witnesses")
@click.option("--quorum", type=click.IntRange(min=1), default=1, show_default=True,
              help="with --witnesses: cosignatures required on the newest checkpoint")
@click.option("--json", "as_json", is_flag=True)
def verify(source: str, trust_file: Path, remote: str | None, token: str | None, checkpoints: tuple[Path, ...],
           last_seen: Path | None, workers: int | None, thorough: bool, witness_file: Path | None, quorum: int,
           as_json: bool) -> None:
    """Verify a ledger: a data directory, a pulled bundle, s3://bucket/prefix, or a sidecar URL.

    The newest signed checkpoint available is always used: a bundle's own, the store's newest,
    each --checkpoint, and the --last-seen pin. Exit 0 intact, 1 tampered or incomplete (with
    findings), 2 unusable input.
    """
    import asyncio
    import tempfile

    from rich.progress import Progress

    from sidecar.audit.remote import compare_remote, pull_and_verify
    from sidecar.audit.verifier import LastSeen, UnusableInput, load_trust, verify_directory

    pin_state: dict[str, Any] | None = None
    try:
        trust = load_trust(trust_file)
        external = []
        for cp in checkpoints:
            try:
                external.append(cp.read_bytes())
            except OSError as exc:
                raise UnusableInput(f"cannot read checkpoint {cp}: {exc.strerror}") from exc
        pin = LastSeen(last_seen) if last_seen is not None else None
        pinned = pin.note() if pin is not None else None
        if pinned is not None:
            external.append(pinned)
        show = not as_json and sys.stderr.isatty()
        with Progress(transient=True, disable=not show) as bar, tempfile.TemporaryDirectory() as tmp:
            task = bar.add_task("verifying", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            if source.endswith(".json") and Path(source).is_file():
                _verify_bundle(Path(source), trust, as_json)
            if _is_remote(source):
                verified = Path(tmp)
                report = asyncio.run(pull_and_verify(source, verified, trust, external=external, token=token,
                                                     workers=workers, thorough=thorough, progress=progress))
            else:
                verified = Path(source)
                report = verify_directory(verified, trust, external=external, workers=workers,
                                          thorough=thorough, progress=progress)
            if remote:
                asyncio.run(compare_remote(report, Path(source), remote, Path(tmp) / "remote", trust,
                                           token=token, workers=workers))
            if witness_file is not None:
                from sidecar.audit.witnesses import apply_witness_check, load_witness_list

                witnesses = load_witness_list(witness_file)
                if quorum > len(witnesses):
                    raise UnusableInput(f"quorum {quorum} is more than the {len(witnesses)} witnesses listed")
                apply_witness_check(report, Path(tmp) if _is_remote(source) else Path(source), trust, witnesses,
                                    quorum, external)
            if pin is not None:
                # SECURITY: the pin only moves after a clean run, so a tampered ledger can never lower it.
                size, moved = pin.advance(verified) if report.ok else (None, False)
                pin_state = {"file": str(pin.path), "pinned_size": size, "updated": moved}
    except (UnusableInput, StorageError) as exc:
        if as_json:
            _print_json({"verdict": "unusable-input", "error": str(exc)})
            sys.exit(2)
        _fail(str(exc), 2)
    if as_json:
        _print_json({**report.to_json(), **({"last_seen": pin_state} if pin_state else {})})
    else:
        _print_report(report, Path(source))
        if pin_state is not None:
            click.echo(f"last seen: {pin_state['file']} "
                       + (f"now pins tree size {pin_state['pinned_size']}" if pin_state["updated"]
                          else "unchanged (only a clean run with a larger tree moves it)"))
    sys.exit(0 if report.ok else 1)


@main.command()
@click.argument("source")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="folder for the bundle")
@click.option("--token", envvar="SIDECAR_AUDIT_TOKEN", default=None,
              help="bearer token for a sidecar URL source (or SIDECAR_AUDIT_TOKEN)")
@click.option("--json", "as_json", is_flag=True)
def pull(source: str, out: Path, token: str | None, as_json: bool) -> None:
    """Download a ledger (s3://bucket/prefix, a directory, or a sidecar URL) into a bundle; resumable."""
    import asyncio

    from rich.progress import Progress

    from sidecar.audit.pull import pull as do_pull
    from sidecar.audit.remote import check_pull_target, open_source
    from sidecar.audit.verifier import UnusableInput

    async def run() -> Any:
        store = open_source(source, token)
        try:
            with Progress(transient=True, disable=as_json or not sys.stderr.isatty()) as bar:
                task = bar.add_task("pulling", total=None)
                return await do_pull(store, out, progress=lambda d, t: bar.update(task, completed=d, total=t))
        finally:
            await store.close()

    try:
        check_pull_target(source, out)
        result = asyncio.run(run())
    except (UnusableInput, StorageError) as exc:
        _fail(str(exc), 2)
    except OSError as exc:  # the bundle folder: a file in the way, no permission, disk full
        _fail(f"cannot write the bundle to {out}: {exc.strerror or exc}", 2)
    if result.segments == 0:
        _fail(f"{source} holds no ledger segments ({result.objects} other objects)", 2)
    summary = {"source": source, "out": str(out), "objects": result.objects, "fetched": result.fetched,
               "bytes_fetched": result.bytes_fetched, "segments": result.segments,
               "checkpoints": len(result.checkpoints), "findings": [f.to_json() for f in result.findings]}
    if as_json:
        _print_json(summary)
    else:
        click.echo(f"pulled {result.objects} objects ({result.fetched} fetched now, {result.bytes_fetched} bytes) "
                   f"into {out}: {result.segments} segments, {len(result.checkpoints)} checkpoints")
        for f in result.findings:
            click.echo(f"  - {f}")
        click.echo(f"next: sidecar verify {out} --trust TRUST.json --checkpoint "
                   f"{result.newest_checkpoint() or '<newest checkpoint>'}")
    sys.exit(1 if result.findings else 0)


@main.group()
def proof() -> None:
    """Export stand-alone proofs that `sidecar verify BUNDLE.json --trust` checks without the ledger."""


@proof.command("inclusion")
@click.argument("source", type=click.Path(path_type=Path, exists=True))
@click.option("--seq", type=int, required=True, help="the record to prove")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="write here instead of stdout")
def proof_inclusion(source: Path, seq: int, out: Path | None) -> None:
    """One record, its inclusion proof, the newest signed checkpoint and the key chain."""
    from sidecar.audit.proofs import prove_inclusion

    _emit(prove_inclusion(source, seq), out)


@proof.command("consistency")
@click.argument("source", type=click.Path(path_type=Path, exists=True))
@click.option("--old-size", type=int, required=True, help="tree size of the older checkpoint")
@click.option("--new-size", type=int, default=None, help="tree size of the newer one (default: newest)")
@click.option("--out", type=click.Path(path_type=Path), default=None)
def proof_consistency(source: Path, old_size: int, new_size: int | None, out: Path | None) -> None:
    """Two signed checkpoints and the proof that the newer tree extends the older one."""
    from sidecar.audit.proofs import prove_consistency

    _emit(prove_consistency(source, old_size, new_size), out)


def _emit(bundle: dict[str, Any], out: Path | None) -> None:
    data = orjson.dumps(bundle, option=orjson.OPT_INDENT_2)
    if out is None:
        click.echo(data.decode())
    else:
        out.write_bytes(data + b"\n")
        click.echo(f"wrote {out}", err=True)


def _print_report(report: Any, source: Path) -> None:
    from datetime import UTC, datetime

    def when(ns: int | None) -> str:
        return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="seconds") if ns else "-"

    click.echo(f"ledger: {source}")
    click.echo(f"checked: {report.segments} segments, {report.records} records, {report.total_bytes} bytes, "
               f"{report.checkpoints} signed checkpoints/seals, {report.external_checkpoints} external checkpoints")
    click.echo(f"span: {when(report.first_ts)} .. {when(report.last_ts)}")
    click.echo(f"keys: {', '.join(report.keys)}")
    click.echo(f"tree: size {report.size}, root {report.root.hex()}")
    formats = ", ".join(f"{n} {name}" for name, n in sorted(report.formats.items()))
    click.echo(f"formats: {formats or '-'}")
    if report.encrypted_records:
        click.echo(f"encrypted fields: {report.encrypted_records} records, {report.erased_records} of them of "
                   f"{report.erased_subjects} erased subjects (unreadable by anyone)")
    for limit in report.limitations:
        click.echo(f"weaker guarantee: {limit}")
    if report.ok:
        click.echo("verdict: INTACT (framing, canonical records, hash chain, Merkle roots, signatures over every "
                   "segment byte, key chain, seals)")
        return
    click.echo(f"verdict: TAMPERED OR INCOMPLETE ({len(report.findings)} findings)")
    for finding in report.findings:
        click.echo(f"  - {finding}")


if __name__ == "__main__":
    main()
