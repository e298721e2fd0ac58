"""The auditor's witness check: `sidecar verify --witnesses FILE --quorum K` (docs/format.md §14.1).

Given a verified ledger (its `Report`), the witnessed checkpoints found beside it and the
witness list, it (1) checks every witnessed checkpoint as an external checkpoint, (2) asks
each witness with a URL for its view by submitting the newest witnessed checkpoint
(`add-checkpoint`; a 409 tells the witness's size, answered with a consistency proof from
the ledger's own records), and (3) requires K listed witnesses' cosignatures on the
ledger's newest checkpoint. A witness ahead of the ledger is `tail-cut`, one that refuses
the ledger's history is `witness-conflict`, too few cosignatures is `witness-quorum`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import aiohttp

from sidecar.core import framing, merkle
from sidecar.core.note import Note, NoteError, parse_note, signed_by
from sidecar.core.record import record_hash
from sidecar.core.trust import TrustAnchor
from sidecar.core.verify import Finding, Report, check_external, valid_keys
from sidecar.core.witness import (
    Witness,
    WitnessError,
    WitnessView,
    add_checkpoint_body,
    cosignature_lines,
    count_cosignatures,
    parse_size_body,
)

WITNESS_DIR = "witness"


def witnessed_notes(source: Path) -> list[bytes]:
    """The witnessed checkpoints kept beside a ledger (data directory or pulled bundle)."""
    folder = source / WITNESS_DIR
    if not folder.is_dir() and source.name == "segments":
        folder = source.parent / WITNESS_DIR
    return [p.read_bytes() for p in sorted(folder.glob("*.note"))] if folder.is_dir() else []


def ledger_leaves(files: list[Path]) -> list[bytes]:
    leaves: list[bytes] = []
    for path in files:
        for frame in framing.iter_frames(path.read_bytes()):
            if isinstance(frame, framing.FrameDamage):
                break
            if frame.kind == framing.RECORD:
                leaves.append(record_hash(frame.body))
    return leaves


async def probe(
    witnesses: list[Witness], note: bytes, leaves: list[bytes], ledger_size: int, timeout_s: float = 10.0
) -> list[WitnessView]:
    """Ask each witness with a URL what it cosigned, by submitting `note` (§14.1 step 2)."""
    parsed = parse_note(note)
    size = parsed.checkpoint.size
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:

        async def ask(w: Witness) -> WitnessView:
            view = WitnessView(w.name)
            if w.url is None:
                return view
            old = size
            try:
                for _ in range(3):
                    proof = merkle.consistency_proof(old, leaves[:size]) if 0 < old < size else []
                    async with session.post(
                        f"{w.url}/add-checkpoint", data=add_checkpoint_body(old, proof, note)
                    ) as resp:
                        body = await resp.read()
                        if resp.status == 200:
                            cosignature_lines(body, w, note)
                            view.size, view.outcome = size, "cosigned"
                            return view
                        if resp.status == 409:
                            seen = parse_size_body(body)
                            view.size = seen
                            if seen > ledger_size:
                                view.outcome = "ahead"
                                return view
                            if seen > size:
                                view.outcome, view.detail = "ahead-of-bundle", "no witnessed checkpoint that large"
                                return view
                            old = seen
                            continue
                        view.outcome = {422: "conflict", 404: "unknown-log", 403: "refused"}.get(resp.status, "error")
                        view.detail = f"add-checkpoint answered {resp.status}"
                        return view
                view.outcome, view.detail = "error", "the witness's size kept changing"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                view.outcome, view.detail = "unreachable", f"{type(exc).__name__}: {exc}"[:200]
            except WitnessError as exc:
                view.outcome, view.detail = "error", str(exc)[:200]
            return view

        return list(await asyncio.gather(*(ask(w) for w in witnesses)))


def check_witnesses(
    report: Report,
    trust: TrustAnchor,
    notes: list[bytes],
    witnesses: list[Witness],
    quorum: int,
    views: list[WitnessView],
) -> None:
    """Add the witness findings and the `witnesses` summary to `report` (§14.1 steps 1 and 3)."""
    add = report.findings.append
    head_cosigners: set[str] = set()
    cosigned_at: dict[str, int] = {}
    for note in notes:
        check_external(note, trust, report, report.roots, report.schedule, source="witnessed checkpoint")
        try:
            parsed: Note = parse_note(note)
        except NoteError:
            continue
        cp = parsed.checkpoint
        if not any(signed_by(parsed, k) for k in valid_keys(report.schedule, cp.size)):
            continue
        for name in count_cosignatures(parsed, witnesses):
            cosigned_at[name] = max(cosigned_at.get(name, -1), cp.size)
            if cp.size == report.size and cp.root == report.root:
                head_cosigners.add(name)
    for view in views:
        if view.outcome == "ahead":
            add(
                Finding(
                    "tail-cut",
                    f"witness {view.name} has cosigned {view.size} records, the ledger holds only "
                    f"{report.size}: the tail was cut or the ledger rolled back",
                    seq=report.size,
                )
            )
        elif view.outcome == "conflict":
            add(
                Finding(
                    "witness-conflict",
                    f"witness {view.name} refuses the ledger's history as inconsistent with "
                    f"the checkpoints it cosigned ({view.detail}): a split view",
                )
            )
        elif view.outcome == "cosigned" and view.size == report.size:
            head_cosigners.add(view.name)
        if view.size is not None:
            cosigned_at[view.name] = max(cosigned_at.get(view.name, -1), view.size)
    if len(head_cosigners) < quorum:
        seen = ", ".join(
            f"{w.name} at size {cosigned_at[w.name]}" if w.name in cosigned_at else f"{w.name} none" for w in witnesses
        )
        add(
            Finding(
                "witness-quorum",
                f"the newest checkpoint (size {report.size}) has {len(head_cosigners)} of the "
                f"{quorum} witness cosignatures required; cosigned: {seen}",
            )
        )
    report.witnesses = {
        "quorum": quorum,
        "cosigned_newest": sorted(head_cosigners),
        "views": [v.to_json() for v in views],
    }


def load_witness_list(path: Path) -> list[Witness]:
    """Read a witness list file; UnusableInput (exit 2) if it cannot be used."""
    from sidecar.audit.verifier import UnusableInput
    from sidecar.core.witness import parse_witness_list

    try:
        return parse_witness_list(path.read_bytes())
    except OSError as exc:
        raise UnusableInput(f"cannot read witness list {path}: {exc.strerror}") from exc
    except WitnessError as exc:
        raise UnusableInput(f"{path}: {exc}") from exc


def apply_witness_check(
    report: Report,
    source: Path,
    trust: TrustAnchor,
    witnesses: list[Witness],
    quorum: int,
    extra: Sequence[bytes] = (),
    *,
    ask: bool = True,
) -> None:
    """The whole of §14.1 for a ledger at `source` already verified into `report` (I/O: files, witnesses)."""
    from sidecar.audit.verifier import segment_files

    notes = [*witnessed_notes(source), *extra]
    views: list[WitnessView] = []
    parsed = []
    for n in notes:
        try:
            parsed.append((parse_note(n).checkpoint.size, n))
        except NoteError:
            continue
    if ask and parsed:
        head = max(parsed, key=lambda item: item[0])[1]
        views = asyncio.run(probe(witnesses, head, ledger_leaves(segment_files(source)), report.size))
    check_witnesses(report, trust, notes, witnesses, quorum, views)
