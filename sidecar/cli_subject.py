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
from sidecar.ledger.subjects import SubjectKeys, erase_subject


def store_options(f: click.decorators.FC) -> click.decorators.FC:
    f = click.option(
        "--subjects-backup",
        "backups",
        multiple=True,
        type=click.Path(path_type=Path),
        help="a backup copy of the key store (repeatable); every write and erasure reaches it",
    )(f)
    return click.option(
        "--subjects",
        "subjects_dir",
        required=True,
        type=click.Path(path_type=Path),
        envvar="SIDECAR_SUBJECTS",
        help="subject key store directory (outside the ledger and the WORM store)",
    )(f)


@click.group()
def subject() -> None:
    """Per-person keys: list, find by name, and erase a person's data (crypto-shredding)."""


@subject.command("init")
@store_options
def subject_init(subjects_dir: Path, backups: tuple[Path, ...]) -> None:
    """Create an empty subject key store (and its backup copies)."""
    SubjectKeys.create(subjects_dir, backups)
    click.echo(f"subject key store created in {subjects_dir}" + "".join(f"\nbackup: {b}" for b in backups))


@subject.command("list")
@store_options
@click.option("--json", "as_json", is_flag=True)
def subject_list(subjects_dir: Path, backups: tuple[Path, ...], as_json: bool) -> None:
    """Every subject the store knows, live or erased (never a key)."""
    store = SubjectKeys.open(subjects_dir, backups)
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
def subject_find(subjects_dir: Path, backups: tuple[Path, ...], name: str, as_json: bool) -> None:
    """The subject ids seen with this username or e-mail address (erased subjects are not found)."""
    found = SubjectKeys.open(subjects_dir, backups).find(name)
    if as_json:
        _print_json(found)
    else:
        click.echo("\n".join(found) if found else "no subject found")


@subject.command("erase")
@store_options
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(path_type=Path, exists=True),
    help="ledger data directory (the sidecar must not be running on it)",
)
@click.argument("subject_id", metavar="SUBJECT")
@click.option("--reason", required=True, help="why (recorded in the ledger: no personal data here)")
@click.option("--by", default=None, help="who asked (recorded as the actor; default: the OS user)")
@click.option("--json", "as_json", is_flag=True)
def subject_erase(
    subjects_dir: Path,
    backups: tuple[Path, ...],
    data_dir: Path,
    subject_id: str,
    reason: str,
    by: str | None,
    as_json: bool,
) -> None:
    """Destroy SUBJECT's key in the store and every backup, and record a signed subject.erased."""
    store = SubjectKeys.open(subjects_dir, backups)
    result = asyncio.run(
        erase_subject(
            data_dir, store, subject_id, by=by or getpass.getuser(), reason=reason, now_ns=SystemClock().now_ns
        )
    )
    if as_json:
        _print_json(result)
    elif result["already"]:
        click.echo(f"subject {subject_id} was already erased (record {result['seq']})")
    else:
        click.echo(
            f"subject {subject_id} erased: key destroyed in {1 + len(backups)} copies, "
            f"subject.erased is record {result['seq']}"
        )
