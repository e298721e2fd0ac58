"""The auditor's commands: `timeline`, `export`, `drift`, `report` (thin wrappers over the library).

Every one of them verifies what it reads against the pinned trust file first and refuses with
exit code 1 and the findings when that fails; `--unverified` (forensics on a damaged ledger)
reads anyway and marks every output line as unverified. Exit code 2 is unusable input.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import click
import orjson


def _fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _refused(exc: Any, as_json: bool = False) -> NoReturn:
    """Verification failed: say so with the findings, exit 1."""
    if as_json:
        click.echo(
            orjson.dumps(
                {"verdict": "refused", "error": str(exc), "findings": [f.to_json() for f in exc.findings]}
            ).decode()
        )
    else:
        click.echo(f"error: {exc}", err=True)
        for f in exc.findings[:50]:
            click.echo(f"  - {f}", err=True)
        if len(exc.findings) > 50:
            click.echo(f"  ... and {len(exc.findings) - 50} more", err=True)
    sys.exit(1)


def _ns(value: str | None) -> int | None:
    if value is None:
        return None
    from datetime import UTC, datetime

    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        _fail(f"not an ISO 8601 time: {value!r}")
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1e9)


def _filter(
    actor: str | None,
    target: str | None,
    session: str | None,
    realm: str | None,
    types: tuple[str, ...],
    since: str | None,
    until: str | None,
) -> Any:
    from sidecar.audit.timeline import Filter

    return Filter(actor, target, session, realm, types, _ns(since), _ns(until))


_FILTERS = [
    click.option("--actor", default=None, help="user id, username or client id of who acted"),
    click.option("--target", default=None, help="user id, username, client or name acted upon"),
    click.option("--session", default=None, help="a Keycloak session id"),
    click.option("--realm", default=None),
    click.option("--type", "types", multiple=True, help="event type or family (login, role.granted, ...)"),
    click.option("--since", default=None, help="ISO 8601 time (UTC unless it names a zone)"),
    click.option("--until", default=None, help="ISO 8601 time (UTC unless it names a zone)"),
]
_TRUST = [
    click.option(
        "--trust",
        "trust_file",
        type=click.Path(path_type=Path),
        default=None,
        help="the pinned trust anchor (from `sidecar keys show`); required unless --unverified",
    ),
    click.option(
        "--unverified", is_flag=True, help="forensics: read without verifying; every output line is marked unverified"
    ),
]


_SUBJECTS = [
    click.option(
        "--subjects",
        "subjects_dir",
        type=click.Path(path_type=Path),
        default=None,
        help="subject key store: show the names and addresses encrypted in records (an investigator); "
        "without it encrypted values are left out and ids stand in for them",
    ),
]


def _revealer(source: Path, subjects_dir: Path | None) -> Any:
    from sidecar.audit.pseudonyms import Revealer
    from sidecar.ledger.subjects import SubjectKeys, check_store_of

    store = SubjectKeys.open(subjects_dir) if subjects_dir is not None else None
    if store is not None:
        check_store_of(source, store)  # a data directory names its store; a pulled bundle does not
    return Revealer(source, store)


def _pii_note(rec: dict[str, Any]) -> str:
    pii = rec.get("pii") or {}
    parts = [f"erased: {', '.join(pii['erased'])}"] if pii.get("erased") else []
    if pii.get("encrypted"):
        parts.append(f"encrypted: {', '.join(pii['encrypted'])}")
    return f"  [{'; '.join(parts)}]" if parts else ""


def _with(options: list[Any]) -> Callable[[Any], Any]:
    def deco(fn: Any) -> Any:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return deco


def _trust(trust_file: Path | None, unverified: bool) -> Any:
    from sidecar.audit.verifier import load_trust

    if trust_file is None:
        if unverified:
            return None
        _fail("--trust TRUST.json is required to verify what is read (or --unverified for forensics)")
    return load_trust(trust_file)


def _records(source: Path, trust: Any, keep: Any, unverified: bool) -> Iterator[dict[str, Any]]:
    from sidecar.audit.reading import read_unverified, read_verified

    if unverified:
        return read_unverified(source, keep)
    return read_verified(source, trust, keep)


# ---------------------------------------------------------------------------------------------- timeline
@click.command()
@click.argument("source", type=click.Path(path_type=Path))
@_with(_FILTERS)
@_with(_TRUST)
@click.option(
    "--full-scan",
    is_flag=True,
    help="verify and read the whole ledger even when the index could answer --actor/--target",
)
@_with(_SUBJECTS)
@click.option("--json", "as_json", is_flag=True, help="JSON lines, one record each")
def timeline(
    source: Path,
    actor: str | None,
    target: str | None,
    session: str | None,
    realm: str | None,
    types: tuple[str, ...],
    since: str | None,
    until: str | None,
    trust_file: Path | None,
    unverified: bool,
    full_scan: bool,
    subjects_dir: Path | None,
    as_json: bool,
) -> None:
    """Who did what to whom, when: a verified timeline of a ledger.

    With --actor or --target and the sidecar's index beside the segments, only the records the
    index names are read, each checked against a signed checkpoint of its segment. With --subjects,
    a username or e-mail given to --actor/--target is found through the key store's keyed tokens.
    """
    from datetime import UTC, datetime

    from sidecar.audit.reading import ReadRefused, has_index, lookup_verified
    from sidecar.audit.timeline import describe

    def show(rec: dict[str, Any], mark: dict[str, Any]) -> None:
        if as_json:
            click.echo(orjson.dumps({**rec, **mark}).decode())
            return
        when = datetime.fromtimestamp(int(rec["ts"]) / 1e9, UTC).isoformat(timespec="milliseconds")
        e = rec["event"]
        flag = "UNVERIFIED " if unverified else ""
        click.echo(
            f"{flag}{when} #{rec['seq']:<7} {e.get('realm') or '-':12} {describe(rec)}"
            f"{'  from ' + e['ip'] if e.get('ip') else ''}{_pii_note(rec)}"
        )

    if source.is_dir() and not (source / "segments").is_dir():
        _timeline_of_origins(
            source, trust_file, unverified, _filter(actor, target, session, realm, types, since, until), as_json
        )
        return
    try:
        trust = _trust(trust_file, unverified)
        revealer = _revealer(source, subjects_dir)
        base = _filter(actor, target, session, realm, types, since, until)

        def keep(rec: dict[str, Any]) -> bool:
            return bool(base(revealer(rec)))  # names are matched on what the reader may see

        if (actor or target) and not unverified and not full_scan and has_index(source):
            # The index holds no encrypted value: a name is looked up as the ids the key store knows for it.
            wanted = [
                (a, t)
                for a in ([actor, *revealer.subjects_named(actor)] if actor else [None])
                for t in ([target, *revealer.subjects_named(target)] if target else [None])
            ]
            seen: dict[int, Any] = {}
            for a, t in wanted:
                for checked in lookup_verified(source, trust, keep, actor=a, target=t):
                    seen.setdefault(int(checked.record["seq"]), checked)
            for _seq, checked in sorted(seen.items()):
                show(
                    revealer(checked.record),
                    {
                        "verified": {
                            "checkpoint_size": checked.checkpoint_size,
                            "root": checked.checkpoint_root,
                            "key": checked.key,
                        }
                    },
                )
            return
        for rec in _records(source, trust, keep, unverified):
            show(revealer(rec), {"unverified": True} if unverified else {})
    except ReadRefused as exc:
        _refused(exc, as_json)


def _timeline_of_origins(folder: Path, trust_file: Path | None, unverified: bool, keep: Any, as_json: bool) -> None:
    """A folder of bundles (one per origin, as `sidecar pull` of a cluster's bucket writes): one merged timeline.

    The first line states how the order is made (docs/operations.md §10.3); each record names its origin,
    and one whose order against another origin's record is uncertain within the skew bound is marked.
    """
    from datetime import UTC, datetime

    from sidecar.audit.origins import bundles_in, load_origins_trust, merged, origin_streams
    from sidecar.audit.reading import ReadRefused, read_unverified, read_verified
    from sidecar.audit.timeline import describe

    try:
        trust = None
        if not unverified:
            if trust_file is None:
                _fail("--trust ORIGINS.json is required to verify what is read (or --unverified for forensics)")
            trust = load_origins_trust(trust_file)
            if trust is None:
                _fail(f"{trust_file} names one ledger; a folder of origins needs an origins trust file")

        def read(bundle: Path, anchor: Any) -> Iterator[dict[str, Any]]:
            return read_unverified(bundle, keep) if anchor is None else read_verified(bundle, anchor, keep)

        ordering, rows = merged(origin_streams(bundles_in(folder), trust, read))
    except ReadRefused as exc:
        _refused(exc, as_json)
    if as_json:
        click.echo(orjson.dumps({"ordering": ordering.to_json()}).decode())
    else:
        click.echo(ordering.describe())
    for origin, rec, uncertain in rows:
        if as_json:
            mark = {"unverified": True} if unverified else {}
            click.echo(orjson.dumps({**rec, "origin": origin, "order_uncertain": uncertain, **mark}).decode())
            continue
        when = datetime.fromtimestamp(int(rec["ts"]) / 1e9, UTC).isoformat(timespec="milliseconds")
        e = rec["event"]
        click.echo(
            f"{'UNVERIFIED ' if unverified else ''}{'~' if uncertain else ' '}{when} {origin} #{rec['seq']:<6} "
            f"{e.get('realm') or '-':12} {describe(rec)}{'  from ' + e['ip'] if e.get('ip') else ''}"
        )


# ---------------------------------------------------------------------------------------------- export
@click.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["jsonl", "ocsf", "ecs"]), default="jsonl", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="file (default: stdout)")
@click.option("--follow", is_flag=True, help="keep running: stream new records as they are committed")
@click.option(
    "--cursor",
    "cursor_file",
    type=click.Path(path_type=Path),
    default=None,
    help="with --follow: resume from and save progress to this file",
)
@click.option("--interval", type=float, default=1.0, show_default=True, help="with --follow: seconds between polls")
@click.option("--max-polls", type=int, default=None, hidden=True, help="with --follow: stop after N polls (tests)")
@_with(_FILTERS)
@_with(_TRUST)
@_with(_SUBJECTS)
def export(
    source: Path,
    fmt: str,
    out: Path | None,
    follow: bool,
    cursor_file: Path | None,
    interval: float,
    max_polls: int | None,
    actor: str | None,
    target: str | None,
    session: str | None,
    realm: str | None,
    types: tuple[str, ...],
    since: str | None,
    until: str | None,
    trust_file: Path | None,
    unverified: bool,
    subjects_dir: Path | None,
) -> None:
    """Export verified records as JSON lines, OCSF 1.4.0 or ECS events for a SIEM (docs/export.md).

    OCSF and ECS export an intent and its outcome as one event. Nothing secret is in the ledger,
    so nothing secret is in an export. Encrypted values are exported decrypted only with --subjects,
    never for an erased subject; each event names the fields left out (docs/export.md).
    """
    from sidecar.audit.reading import ReadRefused
    from sidecar.export.ecs import to_ecs
    from sidecar.export.ocsf import to_ocsf
    from sidecar.export.pairs import Paired, pair

    try:
        trust = _trust(trust_file, unverified)
        revealer = _revealer(source, subjects_dir)
        base = _filter(actor, target, session, realm, types, since, until)

        def keep(rec: dict[str, Any]) -> bool:
            return bool(base(revealer(rec)))

        from sidecar.audit.pseudonyms import ledger_origin

        origin = ledger_origin(source) or "ledger"
        verified = not unverified

        def line(item: Paired) -> bytes:
            if fmt == "ocsf":
                return orjson.dumps(to_ocsf(item, origin, verified=verified)) + b"\n"
            if fmt == "ecs":
                return orjson.dumps(to_ecs(item, origin, verified=verified)) + b"\n"
            rec = item.record
            return orjson.dumps({**rec, "unverified": True} if unverified else rec) + b"\n"

        if follow:
            if unverified:
                _fail("--follow streams verified records only")
            _follow(source, trust, keep, fmt, out, cursor_file, interval, max_polls, line, revealer)
            return
        if cursor_file is not None:
            _fail("--cursor goes with --follow")
        tmp = out.with_name(out.name + ".partial") if out else None
        sink = tmp.open("wb") if tmp else sys.stdout.buffer
        count = 0
        try:
            recs = (revealer(r) for r in _records(source, trust, keep, unverified))
            items = pair(recs) if fmt != "jsonl" else (Paired(r) for r in recs)
            for item in items:
                sink.write(line(item))
                count += 1
        except BaseException:
            if tmp:
                sink.close()
                tmp.unlink(missing_ok=True)  # a refused export leaves no half file behind
            raise
        if tmp and out:
            sink.close()
            os.replace(tmp, out)
            click.echo(f"exported {count} {'unverified ' if unverified else 'verified '}events to {out}", err=True)
    except ReadRefused as exc:
        _refused(exc)


def _follow(
    source: Path,
    trust: Any,
    keep: Any,
    fmt: str,
    out: Path | None,
    cursor_file: Path | None,
    interval: float,
    max_polls: int | None,
    line: Any,
    revealer: Any,
) -> None:
    from sidecar.export.follow import Cursor, follow
    from sidecar.export.pairs import Paired

    cursor = Cursor(cursor_file)
    polls = 0

    def stop() -> bool:
        nonlocal polls
        polls += 1
        return max_polls is not None and polls >= max_polls

    sink = out.open("ab") if out else sys.stdout.buffer
    try:
        for batch in follow(source, trust, cursor, interval_s=interval, keep=keep, stop=stop):
            for item in batch:
                item = Paired(revealer(item.record), revealer(item.intent) if item.intent is not None else None)
                sink.write(line(item if fmt != "jsonl" else Paired(item.record)))
                if fmt == "jsonl" and item.intent is not None:
                    sink.write(line(Paired(item.intent)))
            sink.flush()
            if out:
                os.fsync(sink.fileno())  # written before the cursor moves past it
    except KeyboardInterrupt:
        pass
    finally:
        if out:
            sink.close()


# ---------------------------------------------------------------------------------------------- drift
@click.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--keycloak", "keycloak_url", required=True, help="Keycloak's base URL (direct, not the sidecar)")
@click.option("--realm", required=True, help="realm to compare (the reader's service account lives there)")
@click.option("--client-id", required=True, help="read-only service account client id")
@click.option(
    "--secret-file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="file with its secret (or env SIDECAR_READER_SECRET)",
)
@_with(_TRUST)
@_with(_SUBJECTS)
@click.option("--json", "as_json", is_flag=True)
def drift(
    source: Path,
    keycloak_url: str,
    realm: str,
    client_id: str,
    secret_file: Path | None,
    trust_file: Path | None,
    unverified: bool,
    subjects_dir: Path | None,
    as_json: bool,
) -> None:
    """Compare Keycloak's live access state and event stores with the verified ledger.

    Exit 0 no drift, 1 drift found (or the ledger did not verify), 2 could not check:
    Keycloak unreachable, credentials refused, or nothing in the ledger to compare against.
    """
    import asyncio

    from sidecar.audit.reading import ReadRefused
    from sidecar.audit.verifier import UnusableInput
    from sidecar.drift.monitor import CannotCheck, check_once

    secret = secret_file.read_text().strip() if secret_file else os.environ.get("SIDECAR_READER_SECRET")
    if not secret:
        _fail("the reader's client secret is needed: --secret-file or SIDECAR_READER_SECRET")
    try:
        trust = _trust(trust_file, unverified)
        revealer = _revealer(source, subjects_dir)
        result = asyncio.run(
            check_once(
                source,
                trust,
                keycloak_url,
                realm,
                client_id,
                secret,
                unverified=unverified,
                subjects=revealer.store,
                origin=revealer.origin,
                reveal_record=revealer,
            )
        )
    except ReadRefused as exc:
        _refused(exc, as_json)
    except (CannotCheck, UnusableInput) as exc:
        if as_json:
            click.echo(orjson.dumps({"verdict": "could-not-check", "error": str(exc)}).decode())
            sys.exit(exc.exit_code)
        _fail(f"could not check: {exc}", exc.exit_code)
    if as_json:
        click.echo(orjson.dumps(result.to_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(result.summary())
        for d in result.drifts:
            click.echo(f"  - {d}")
    sys.exit(1 if result.drifts else 0)


# ---------------------------------------------------------------------------------------------- report
@click.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option(
    "--trust",
    "trust_file",
    type=click.Path(path_type=Path),
    required=True,
    help="the pinned trust anchor (from `sidecar keys show`)",
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="the HTML file to write")
@click.option(
    "--checkpoint",
    "checkpoints",
    multiple=True,
    type=click.Path(path_type=Path),
    help="a signed checkpoint obtained elsewhere (finds a cut tail or a rollback)",
)
@_with(_SUBJECTS)
def report(source: Path, trust_file: Path, out: Path, checkpoints: tuple[Path, ...], subjects_dir: Path | None) -> None:
    """Write one self-contained HTML report an auditor opens offline (verdict, coverage, drift, timelines).

    Exit 0 when the ledger verified, 1 when it did not (the report then shows the findings), 2 unusable input.
    """
    from sidecar.audit.origins import load_origins_trust
    from sidecar.audit.verifier import load_trust, read_checkpoints
    from sidecar.report.build import build_report

    origins = load_origins_trust(trust_file)
    if origins is not None:  # a folder of bundles, one per origin (a cluster's bucket, pulled)
        from sidecar.report.origins import build_origins_report

        merged = build_origins_report(source, origins, out)
        click.echo(f"wrote {out}: {merged.verdict}, {merged.records} records of all origins", err=True)
        sys.exit(0 if merged.ok else 1)
    trust = load_trust(trust_file)
    external = read_checkpoints(checkpoints)
    summary = build_report(source, trust, out, external=external, reveal=_revealer(source, subjects_dir))
    click.echo(f"wrote {out}: {summary.verdict}, {summary.records} records", err=True)
    sys.exit(0 if summary.ok else 1)


COMMANDS = [timeline, export, drift, report]
