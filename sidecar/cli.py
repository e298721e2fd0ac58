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

from sidecar.errors import SidecarError, StorageError


def _fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _print_json(obj: Any) -> None:
    import orjson

    click.echo(orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())


# Subcommands whose modules are imported only when they run (or `--help` lists them): `bench` pulls
# in rich, the harness and every benchmark, `serve` and `config` the settings table (sidecar.config),
# which no other command should pay for (tests/test_cli_startup.py keeps `verify --help` lean).
_LAZY_COMMANDS = {
    "bench": ("sidecar.bench.cli", "bench"),
    "serve": ("sidecar.cli_serve", "serve"),
    "config": ("sidecar.cli_serve", "config_group"),
    "subject": ("sidecar.cli_subject", "subject"),
    **{name: ("sidecar.cli_auditor", name) for name in ("timeline", "export", "drift", "report")},
}


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
            # The one place the error tree meets the terminal: the message, and the error's own exit code.
            if os.environ.get("SIDECAR_DEBUG"):
                raise
            _fail(str(exc), exc.exit_code)


@click.group(cls=_Group)
@click.version_option(package_name="keycloak-ledger-sidecar")
def main() -> None:
    """Keycloak ledger sidecar: record every login and permission change in a signed, replicated log."""


@main.command()
@click.option("--url", default="http://127.0.0.1:8443", show_default=True, help="the sidecar's base URL")
@click.option("--live", is_flag=True, help="check liveness only (the process serves), not readiness")
@click.option("--insecure", is_flag=True, help="do not check the TLS certificate (for a probe on loopback)")
def health(url: str, live: bool, insecure: bool) -> None:
    """Probe a running sidecar: exit 0 if ready (or live), 1 if not; for container health checks."""
    import ssl
    import urllib.error
    import urllib.request

    target = url.rstrip("/") + ("/.sidecar/health/live" if live else "/.sidecar/health/ready")
    context = None
    if insecure:  # a probe from inside the container: the certificate names the public host, not 127.0.0.1
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(target, timeout=5, context=context) as resp:
            click.echo(resp.read().decode(errors="replace"))
            sys.exit(0 if resp.status == 200 else 1)
    except urllib.error.HTTPError as exc:
        click.echo(exc.read().decode(errors="replace"))
        sys.exit(1)
    except (OSError, ValueError) as exc:
        _fail(f"{target}: {exc}", 1)


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
        click.echo(
            f"ledger keys created in {data_dir}\norigin: {anchor.origin}\n"
            f"trust anchor: {data_dir / 'trust.json'} (give this file to auditors)"
        )


@keys.command("show")
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path, exists=True))
@click.option(
    "--witness-vkey",
    is_flag=True,
    help="print the log witness key's vkey instead (what witnesses are configured with; created if missing)",
)
def keys_show(data_dir: Path, witness_vkey: bool) -> None:
    """Print the trust anchor (origin and first public key) as JSON."""
    from sidecar.ledger.keystore import KeyStore

    if witness_vkey:
        from sidecar.core.witness import log_vkey

        click.echo(log_vkey(KeyStore(data_dir).witness_signer().public))
        return
    _print_json(KeyStore(data_dir).trust().to_json())


@keys.command("origins")
@click.argument("trust_files", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--heartbeat", type=click.FloatRange(min=0.001), required=True, help="the sidecars' heartbeat, seconds")
@click.option(
    "--max-silence",
    type=click.FloatRange(min=0.001),
    default=None,
    help="seconds without a checkpoint after which an origin is stalled (default: three heartbeats)",
)
def keys_origins(trust_files: tuple[Path, ...], heartbeat: float, max_silence: float | None) -> None:
    """Print an origins trust file (kc-ledger-origins/1) of the nodes' trust anchors, for verifying a bucket."""
    from sidecar.audit.origins import OriginsTrust
    from sidecar.audit.verifier import load_trust

    anchors = [load_trust(path) for path in trust_files]
    if len({a.origin for a in anchors}) != len(anchors):
        _fail("two trust files name the same origin: each node needs an origin of its own", 2)
    click.echo(OriginsTrust.of(anchors, heartbeat, max_silence).encode().decode(), nl=False)


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
    import orjson

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
@click.option(
    "--trust",
    "trust_file",
    type=click.Path(path_type=Path),
    required=True,
    help="the pinned trust anchor (from `sidecar keys show`)",
)
@click.option("--remote", default=None, help="also compare with this remote copy (finds a split view or lag)")
@click.option(
    "--token",
    envvar="SIDECAR_AUDIT_TOKEN",
    default=None,
    help="bearer token for a sidecar URL source (or SIDECAR_AUDIT_TOKEN)",
)
@click.option(
    "--checkpoint",
    "checkpoints",
    multiple=True,
    type=click.Path(path_type=Path),
    help="a signed checkpoint obtained elsewhere; finds a cut tail or a rollback",
)
@click.option(
    "--last-seen",
    "last_seen",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="the auditor's pinned newest checkpoint: checked against, and moved forward after a clean "
    "run (created on first use); finds a later cut tail or rolled-back store",
)
@click.option("--workers", type=int, default=None, help="processes (default: all cores)")
@click.option(
    "--thorough", is_flag=True, hidden=True, help="accepted for old scripts: verification is always the full procedure"
)
@click.option(
    "--witnesses",
    "witness_file",
    type=click.Path(path_type=Path),
    default=None,
    help="witness list (kc-ledger-witnesses/1 JSON): check cosignatures and ask the witnesses",
)
@click.option(
    "--quorum",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="with --witnesses: cosignatures required on the newest checkpoint",
)
@click.option("--json", "as_json", is_flag=True)
def verify(
    source: str,
    trust_file: Path,
    remote: str | None,
    token: str | None,
    checkpoints: tuple[Path, ...],
    last_seen: Path | None,
    workers: int | None,
    thorough: bool,
    witness_file: Path | None,
    quorum: int,
    as_json: bool,
) -> None:
    """Verify a ledger: a data directory, a pulled bundle, s3://bucket/prefix, or a sidecar URL.

    The newest signed checkpoint available is always used: a bundle's own, the store's newest,
    each --checkpoint, and the --last-seen pin. Exit 0 intact, 1 tampered or incomplete (with
    findings), 2 unusable input.
    """
    import asyncio
    import tempfile

    from rich.progress import Progress

    from sidecar.audit.origins import load_origins_trust
    from sidecar.audit.remote import compare_remote, pull_and_verify
    from sidecar.audit.verifier import LastSeen, UnusableInput, load_trust, read_checkpoints, verify_directory

    pin_state: dict[str, Any] | None = None
    try:
        origins_trust = load_origins_trust(trust_file)
        if origins_trust is not None:
            _verify_origins(source, origins_trust, workers, as_json)
        trust = load_trust(trust_file)
        external = read_checkpoints(checkpoints)
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
                report = asyncio.run(
                    pull_and_verify(
                        source,
                        verified,
                        trust,
                        external=external,
                        token=token,
                        workers=workers,
                        thorough=thorough,
                        progress=progress,
                    )
                )
            else:
                verified = Path(source)
                report = verify_directory(
                    verified, trust, external=external, workers=workers, thorough=thorough, progress=progress
                )
            if remote:
                asyncio.run(
                    compare_remote(
                        report, Path(source), remote, Path(tmp) / "remote", trust, token=token, workers=workers
                    )
                )
            if witness_file is not None:
                from sidecar.audit.witnesses import apply_witness_check, load_witness_list

                witnesses = load_witness_list(witness_file)
                if quorum > len(witnesses):
                    raise UnusableInput(f"quorum {quorum} is more than the {len(witnesses)} witnesses listed")
                apply_witness_check(
                    report, Path(tmp) if _is_remote(source) else Path(source), trust, witnesses, quorum, external
                )
            if pin is not None:
                # SECURITY: the pin only moves after a clean run, so a tampered ledger can never lower it.
                size, moved = pin.advance(verified) if report.ok else (None, False)
                pin_state = {"file": str(pin.path), "pinned_size": size, "updated": moved}
    except (UnusableInput, StorageError) as exc:
        if not as_json:
            raise  # _Group.invoke prints it and exits with its code
        _print_json({"verdict": "unusable-input", "error": str(exc)})
        sys.exit(exc.exit_code)
    if as_json:
        _print_json({**report.to_json(), **({"last_seen": pin_state} if pin_state else {})})
    else:
        _print_report(report, Path(source))
        if pin_state is not None:
            click.echo(
                f"last seen: {pin_state['file']} "
                + (
                    f"now pins tree size {pin_state['pinned_size']}"
                    if pin_state["updated"]
                    else "unchanged (only a clean run with a larger tree moves it)"
                )
            )
    sys.exit(0 if report.ok else 1)


def _looks_like_store(folder: Path) -> bool:
    """A folder in the remote-store layout, or one whose sub-folders are (a directory store of prefixes)."""
    return _is_remote(str(folder)) or any(_is_remote(str(p)) for p in folder.iterdir() if p.is_dir())


def _verify_origins(source: str, trust: Any, workers: int | None, as_json: bool) -> NoReturn:
    """`verify` with an origins trust file: every origin under source, each on its own, then the set."""
    import asyncio
    import tempfile
    import time

    from sidecar.audit.origins import bundles_in, pull_and_verify_origins, verify_bundles

    now = time.time_ns()
    with tempfile.TemporaryDirectory() as tmp:
        if _is_remote(source) or (Path(source).is_dir() and _looks_like_store(Path(source))):
            report = asyncio.run(pull_and_verify_origins(source, Path(tmp), trust, now_ns=now, workers=workers))
        else:
            report = verify_bundles(bundles_in(Path(source)), trust, now_ns=now, workers=workers)
    if as_json:
        _print_json(report.to_json())
    else:
        click.echo(f"verdict: {'INTACT' if report.ok else 'TAMPERED OR INCOMPLETE'} ({len(report.origins)} origins)")
        for o in report.origins:
            verdict = o.report.to_json()["verdict"] if o.report is not None else "not trusted"
            records = o.report.records if o.report is not None else "?"
            click.echo(f"  {o.origin or '?'} under {o.prefix or '.'}: {verdict}, {records} records")
        for f in report.all_findings():
            click.echo(f"  - {f}")
    sys.exit(0 if report.ok else 1)


def _pull_origins(source: str, out: Path, as_json: bool) -> NoReturn:
    """`pull` of a store that holds several ledgers under prefixes: each into out/<prefix>/."""
    import asyncio

    from sidecar.audit.origins import bundle_name, pull_all

    results = asyncio.run(pull_all(source, out))
    summary = {
        "source": source,
        "out": str(out),
        "origins": {
            prefix: {
                "out": str(out / bundle_name(prefix)),
                "objects": r.objects,
                "fetched": r.fetched,
                "segments": r.segments,
                "checkpoints": len(r.checkpoints),
                "findings": [f.to_json() for f in r.findings],
            }
            for prefix, r in results.items()
        },
    }
    bad = any(r.findings or not r.segments for r in results.values())
    if as_json:
        _print_json(summary)
    else:
        for prefix, r in results.items():
            click.echo(f"pulled {prefix}: {r.objects} objects, {r.segments} segments into {out / bundle_name(prefix)}")
            for f in r.findings:
                click.echo(f"  - {f}")
        click.echo(f"next: sidecar verify {out} --trust ORIGINS-TRUST.json")
    sys.exit(1 if bad else 0)


@main.command()
@click.argument("source")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="folder for the bundle")
@click.option(
    "--token",
    envvar="SIDECAR_AUDIT_TOKEN",
    default=None,
    help="bearer token for a sidecar URL source (or SIDECAR_AUDIT_TOKEN)",
)
@click.option("--json", "as_json", is_flag=True)
def pull(source: str, out: Path, token: str | None, as_json: bool) -> None:
    """Download a ledger (s3://bucket/prefix, a directory, or a sidecar URL) into a bundle; resumable."""
    import asyncio

    from rich.progress import Progress

    from sidecar.audit.pull import pull as do_pull
    from sidecar.audit.remote import check_pull_target, open_source

    async def run() -> Any:
        store = open_source(source, token)
        try:
            with Progress(transient=True, disable=as_json or not sys.stderr.isatty()) as bar:
                task = bar.add_task("pulling", total=None)
                return await do_pull(store, out, progress=lambda d, t: bar.update(task, completed=d, total=t))
        finally:
            await store.close()

    from sidecar.audit.origins import discover_url

    try:
        check_pull_target(source, out)
        if not source.startswith(("http://", "https://")) and asyncio.run(discover_url(source)) not in ([], [""]):
            _pull_origins(source, out, as_json)
        result = asyncio.run(run())
    except SidecarError:
        raise  # a StorageError is an OSError too; _Group.invoke prints it and exits with its code
    except OSError as exc:  # the bundle folder: a file in the way, no permission, disk full
        _fail(f"cannot write the bundle to {out}: {exc.strerror or exc}", 2)
    if result.segments == 0:
        _fail(f"{source} holds no ledger segments ({result.objects} other objects)", 2)
    summary = {
        "source": source,
        "out": str(out),
        "objects": result.objects,
        "fetched": result.fetched,
        "bytes_fetched": result.bytes_fetched,
        "segments": result.segments,
        "checkpoints": len(result.checkpoints),
        "findings": [f.to_json() for f in result.findings],
    }
    if as_json:
        _print_json(summary)
    else:
        click.echo(
            f"pulled {result.objects} objects ({result.fetched} fetched now, {result.bytes_fetched} bytes) "
            f"into {out}: {result.segments} segments, {len(result.checkpoints)} checkpoints"
        )
        for f in result.findings:
            click.echo(f"  - {f}")
        click.echo(
            f"next: sidecar verify {out} --trust TRUST.json --checkpoint "
            f"{result.newest_checkpoint() or '<newest checkpoint>'}"
        )
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
    import orjson

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
    click.echo(
        f"checked: {report.segments} segments, {report.records} records, {report.total_bytes} bytes, "
        f"{report.checkpoints} signed checkpoints/seals, {report.external_checkpoints} external checkpoints"
    )
    click.echo(f"span: {when(report.first_ts)} .. {when(report.last_ts)}")
    click.echo(f"keys: {', '.join(report.keys)}")
    click.echo(f"tree: size {report.size}, root {report.root.hex()}")
    formats = ", ".join(f"{n} {name}" for name, n in sorted(report.formats.items()))
    click.echo(f"formats: {formats or '-'}")
    if report.encrypted_records or report.withheld_records:
        click.echo(
            f"encrypted fields: {report.encrypted_records} records, {report.erased_records} of them of "
            f"{report.erased_subjects} erased subjects (unreadable by anyone); "
            f"{report.withheld_records} records written after an erasure with its values left out"
        )
    for limit in report.limitations:
        click.echo(f"weaker guarantee: {limit}")
    if report.ok:
        click.echo(
            "verdict: INTACT (framing, canonical records, hash chain, Merkle roots, signatures over every "
            "segment byte, key chain, seals)"
        )
        return
    click.echo(f"verdict: TAMPERED OR INCOMPLETE ({len(report.findings)} findings)")
    for finding in report.findings:
        click.echo(f"  - {finding}")


if __name__ == "__main__":
    main()
