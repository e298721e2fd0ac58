"""Verifying remote copies: pull into a folder, verify it, and compare it with a local WAL.

* `pull_and_verify(url, ...)`: pulls a store (s3://, a directory, or a sidecar's
  auditor endpoint) into a folder and verifies it, using the newest checkpoint
  the store holds as an external checkpoint; pull findings (objects the layout
  does not account for, overwritten versions, chunk gaps) join the report.
* `compare_remote(report, local_dir, url, ...)`: the local WAL and its remote
  copy must tell one story. The remote's newest checkpoint (and the newest one
  within the local ledger's size) must be consistent with the local records
  (same root at that size), or it is a `split-view`; a remote that holds fewer
  records than the local WAL is `remote-behind`; a local WAL with fewer records
  than the remote's checkpoint was cut or rolled back (`tail-cut`). Findings of
  the remote copy itself join the report with a `remote-` prefix.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sidecar.audit.pull import pull
from sidecar.audit.verifier import UnusableInput, verify_directory
from sidecar.core.trust import TrustAnchor
from sidecar.core.verify import Finding, Report
from sidecar.replicate.drivers import is_store_url, open_store
from sidecar.replicate.store import ObjectStore


def check_pull_target(source: str, out: Path) -> None:
    """Refuse, before any work, a local source that is not a store directory and an --out that cannot
    be a bundle folder (`UnusableInput`, one line each)."""
    if not source.startswith(("http://", "https://")) and not is_store_url(source):
        path = Path(source)
        if not path.exists():
            raise UnusableInput(f"{source} does not exist")
        if not path.is_dir():
            raise UnusableInput(f"{source} is a file, not a store directory")
        if out.absolute() == path.absolute() or path.absolute() in out.absolute().parents:
            raise UnusableInput(f"--out {out} is inside the store {source}; pull into a folder of its own")
    if out.exists() and not out.is_dir():
        raise UnusableInput(f"--out {out} is a file, not a folder")
    for parent in out.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise UnusableInput(f"--out {out}: {parent} is a file, not a folder")
            break


def open_source(url: str, token: str | None) -> ObjectStore:
    if url.startswith(("http://", "https://")):
        from sidecar.audit.http_source import SidecarSource

        return SidecarSource(url, token)
    return open_store(url)


async def pull_and_verify(
    url: str,
    out: Path,
    trust: TrustAnchor,
    *,
    external: list[bytes] | None = None,
    token: str | None = None,
    workers: int | None = None,
    thorough: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Report:
    store = open_source(url, token)
    try:
        result = await pull(store, out, progress=progress)
    finally:
        await store.close()
    if result.segments == 0:
        raise UnusableInput(f"{url} holds no ledger segments")
    notes = list(external or [])
    newest = result.newest_checkpoint()
    if newest is not None:
        notes.append(newest.read_bytes())
    report = verify_directory(out, trust, external=notes, workers=workers, thorough=thorough)
    report.findings.extend(result.findings)
    return report


async def compare_remote(
    report: Report,
    local: Path,
    url: str,
    out: Path,
    trust: TrustAnchor,
    *,
    token: str | None = None,
    workers: int | None = None,
) -> None:
    """Add split-view / lag findings to the local `report` by checking the remote copy against it."""
    try:
        remote = await pull_and_verify(url, out, trust, token=token, workers=workers)
    except UnusableInput:
        if any((out / "objects").rglob("*")):
            raise  # the store holds objects but no segment: that is not "behind", it is unusable
        report.findings.append(
            Finding(
                "remote-behind",
                f"the remote copy {url} holds no ledger segments, "
                f"the local ledger {report.size} records: nothing was replicated",
            )
        )
        return
    for f in remote.findings:
        report.findings.append(
            Finding(
                "remote-" + f.code if not f.code.startswith("remote") else f.code,
                f"remote copy: {f.message}",
                f.segment,
                f.seq,
            )
        )
    # The remote's checkpoints checked against the local records: a larger size than the local
    # ledger holds means the local WAL lost its tail; a different root at a size both hold is a
    # split view. The newest checkpoint the local ledger can check is used too, so a fork is
    # found even when the remote copy is also longer.
    notes = sorted((out / "checkpoints").glob("*.note"))
    chosen: list[Path] = []
    if notes:
        chosen.append(notes[-1])
        within = [n for n in notes if (size := _size(n)) is not None and size <= report.size]
        if within and within[-1] != notes[-1]:
            chosen.append(within[-1])
    if chosen:
        external = [n.read_bytes() for n in chosen]
        local_again = verify_directory(local, trust, external=external, workers=workers)
        for f in local_again.findings:
            if f.code in ("tail-cut", "split-view") and f not in report.findings:
                report.findings.append(f)
    if remote.size < report.size:
        report.findings.append(
            Finding(
                "remote-behind",
                f"the remote copy holds {remote.size} records, the "
                f"local ledger {report.size}: {report.size - remote.size} not yet "
                "replicated",
            )
        )


def _size(note: Path) -> int | None:
    """The tree size a pulled checkpoint's file name (<size>-<time>.note) states."""
    head = note.name.split("-", 1)[0]
    return int(head) if head.isdigit() else None
