"""`sidecar subject`: the subject key store (init, list, find) and erasure (docs/operations.md).

Thin wrappers over sidecar.ledger.subjects. No command prints a key.
"""

from __future__ import annotations

import asyncio
import getpass
from pathlib import Path
from typing import Any

import click

from sidecar.cli import _print_json
from sidecar.clock import SystemClock
from sidecar.control import request_erase
from sidecar.ledger.subjects import SubjectKeys, check_store_of, default_dir, erase_subject


def store_options(f: click.decorators.FC) -> click.decorators.FC:
    f = click.option(
        "--subjects-backup",
        "backups",
        multiple=True,
        type=click.Path(path_type=Path),
        help="a backup copy of the key store (repeatable); every write and erasure reaches it",
    )(f)
    f = click.option(
        "--data",
        "data_dir",
        type=click.Path(path_type=Path),
        default=None,
        envvar="SIDECAR_DATA",
        help="the ledger's data directory (its key store is <data>/subjects unless --subjects says otherwise)",
    )(f)
    return click.option(
        "--subjects",
        "subjects_dir",
        type=click.Path(path_type=Path),
        default=None,
        envvar="SIDECAR_SUBJECTS",
        help="subject key store directory (default: <data>/subjects; never inside the WORM store)",
    )(f)


def _where(subjects_dir: Path | None, data_dir: Path | None) -> Path:
    if subjects_dir is not None:
        return subjects_dir
    if data_dir is not None:
        return default_dir(data_dir)
    raise click.UsageError("give --data DIR (the key store is DIR/subjects) or --subjects DIR")


def _open(subjects_dir: Path | None, data_dir: Path | None, backups: tuple[Path, ...]) -> SubjectKeys:
    store = SubjectKeys.open(_where(subjects_dir, data_dir), backups)
    if data_dir is not None:
        check_store_of(data_dir, store)
    return store


@click.group()
def subject() -> None:
    """Per-person keys: list, find by name, and erase a person's data (crypto-shredding)."""


@subject.command("init")
@store_options
def subject_init(subjects_dir: Path | None, data_dir: Path | None, backups: tuple[Path, ...]) -> None:
    """Create an empty subject key store (and its backup copies); `serve` creates one itself if none exists."""
    where = _where(subjects_dir, data_dir)
    SubjectKeys.create(where, backups)
    click.echo(f"subject key store created in {where}" + "".join(f"\nbackup: {b}" for b in backups))


@subject.command("list")
@store_options
@click.option("--json", "as_json", is_flag=True)
def subject_list(subjects_dir: Path | None, data_dir: Path | None, backups: tuple[Path, ...], as_json: bool) -> None:
    """Every subject the store knows, live or erased (never a key)."""
    store = _open(subjects_dir, data_dir, backups)
    rows: list[dict[str, Any]] = [
        {"subject": e.subject, "erased": e.erased, "seq": e.seq}
        if e.erased is not None
        else {"subject": e.subject, "created": str(e.created), "names": len(e.names)}
        for e in store.entries()
    ]
    if as_json:
        _print_json(rows)
        return
    for row in rows:
        state = f"erased (seq {row['seq']}): {row['erased']['reason']}" if row.get("erased") else "live"
        click.echo(f"{row['subject']}  {state}")


@subject.command("find")
@store_options
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
def subject_find(
    subjects_dir: Path | None, data_dir: Path | None, backups: tuple[Path, ...], name: str, as_json: bool
) -> None:
    """The subject ids seen with this username or e-mail address (erased subjects are not found)."""
    found = _open(subjects_dir, data_dir, backups).find(name)
    if as_json:
        _print_json(found)
    else:
        click.echo("\n".join(found) if found else "no subject found")


@subject.command("erase")
@store_options
@click.argument("subject_id", metavar="SUBJECT")
@click.option("--reason", required=True, help="why (recorded in the ledger: no personal data here)")
@click.option("--by", default=None, help="who asked (recorded as the actor; default: the OS user)")
@click.option("--json", "as_json", is_flag=True)
def subject_erase(
    subjects_dir: Path | None,
    data_dir: Path | None,
    backups: tuple[Path, ...],
    subject_id: str,
    reason: str,
    by: str | None,
    as_json: bool,
) -> None:
    """Destroy SUBJECT's key in the store and every backup, and record a signed subject.erased.

    With the sidecar running on --data, it does the erasure (over its control channel, <data>/control.sock):
    its own store and backups, its memory, its ledger. Without one, this command opens the ledger itself.
    """
    if data_dir is None or not data_dir.is_dir():
        raise click.UsageError("--data DIR: the ledger's data directory (an existing directory)")
    who = by or getpass.getuser()
    result = asyncio.run(request_erase(data_dir, subject_id, who, reason))
    if result is None:  # no sidecar runs on this ledger: erase here
        store = _open(subjects_dir, data_dir, backups)
        result = asyncio.run(
            erase_subject(data_dir, store, subject_id, by=who, reason=reason, now_ns=SystemClock().now_ns)
        )
        result["via"] = "cli"
    if as_json:
        _print_json(result)
    elif result["already"]:
        click.echo(f"subject {subject_id} was already erased (record {result['seq']})")
    else:
        by_whom = "by the running sidecar" if result["via"] == "sidecar" else "with no sidecar running"
        click.echo(
            f"subject {subject_id} erased {by_whom}: key destroyed in {result.get('copies', 1)} copies, "
            f"subject.erased is record {result['seq']}"
        )
