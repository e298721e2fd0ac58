"""What a reader shows of encrypted values (docs/format.md §5.2): names for an investigator, pseudonyms otherwise.

Every reader (timeline, export, report, drift) passes each verified record through one
`Revealer`. With the subject key store, values are decrypted; without it (an auditor), they are
left out and the opaque ids stand in for them. Values of an erased subject are never shown: the
erased set is the union of the ledger's own `subject.erased` records and the store's tombstones,
so even a store restored from an old backup cannot bring an erased name back into a reader's output
(the record says the subject was erased). Each revealed record names what is missing in `pii`.
Given a store, a value it cannot open (and whose subject was not erased) is KeyStoreMismatch: a
lost or foreign store is an error for a reader asked to decrypt, never a silent pseudonym.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sidecar.audit.verifier import segment_files
from sidecar.core import framing
from sidecar.core.canonical import parse
from sidecar.core.segment import SegmentHeader
from sidecar.errors import ConfigError
from sidecar.ledger.subjects import SubjectKeys, reveal

ERASED = "subject.erased"


class KeyStoreMismatch(ConfigError):
    """A reader was given a subject key store that cannot open this ledger's values."""


def erased_by(event: dict[str, Any]) -> list[str]:
    """The subject ids a `subject.erased` event erased: its subject and the name pseudonyms erased with it."""
    details = event.get("details") or {}
    subject = details.get("subject") if isinstance(details, dict) else None
    if event.get("type") != ERASED or not isinstance(subject, str):
        return []
    extra = details.get("pseudonyms")
    return [subject, *(p for p in (extra if isinstance(extra, list) else []) if isinstance(p, str))]


def erased_subjects(source: Path) -> set[str]:
    """Subject ids named by `subject.erased` records anywhere in the ledger (segments without one are skipped)."""
    out: set[str] = set()
    for path in segment_files(source):
        data = path.read_bytes()
        if b'"subject.erased"' not in data:
            continue
        for frame in framing.iter_frames(data):
            if isinstance(frame, framing.FrameDamage):
                break
            if frame.kind == framing.RECORD and b'"subject.erased"' in frame.body:
                event = parse(frame.body).get("event") or {}
                out.update(erased_by(event))
    return out


def ledger_origin(source: Path) -> str:
    files = segment_files(source)
    first = next(iter(framing.iter_frames(files[0].read_bytes())), None) if files else None
    if isinstance(first, framing.Frame) and first.kind == framing.HEADER:
        try:
            return SegmentHeader.decode(first.body).origin
        except ValueError:
            pass
    return ""


class Revealer:
    """Applies `sidecar.ledger.subjects.reveal` with this ledger's origin and erased subjects."""

    def __init__(self, source: Path, store: SubjectKeys | None, origin: str | None = None) -> None:
        self.store = store
        self.origin = origin if origin is not None else ledger_origin(source)
        self.erased = set(erased_subjects(source))

    def __call__(self, rec: dict[str, Any]) -> dict[str, Any]:
        self.erased.update(erased_by(rec.get("event") or {}))  # a following reader (export --follow) meets them live
        out = reveal(rec, origin=self.origin, store=self.store, erased=self.erased)
        if self.store is not None and (out.get("pii") or {}).get("encrypted"):
            # SECURITY: asked to decrypt, a value the store cannot open (its subject not erased) is a lost or
            # foreign key store: an error, never a silent mix of names and pseudonyms.
            raise KeyStoreMismatch(
                f"the subject key store {self.store.path} cannot open {', '.join(out['pii']['encrypted'])} of "
                f"record {rec.get('seq')} (the subject was not erased): it lost keys or is not this ledger's "
                "store; restore it from a backup, or read without --subjects (pseudonyms only)"
            )
        return out

    def subjects_named(self, name: str) -> list[str]:
        """Subject ids seen with this username or e-mail (keyed search in the store; erased ones never match)."""
        if self.store is None:
            return []
        return [s for s in self.store.find(name) if s not in self.erased]
