"""Intent/outcome pairing: one admin change is one exported event. [pure]

A mutating admin request leaves two records: an intent (`outcome=pending`,
`details.phase=intent`) written before Keycloak saw the request, and an outcome
record after the answer, whose `details.intent_seq` names the intent. A SIEM
wants one event per change, so `pair()` holds each intent until its outcome
arrives and yields the two together. An intent that never got an outcome (the
sidecar stopped in between, or the request never came back) is yielded alone at
the end, or when more than `max_pending` intents wait, so it is never lost: it
exports with an unknown status.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Paired:
    """The record to export and, when there was one, the intent written before it."""

    record: dict[str, Any]
    intent: dict[str, Any] | None = None

    @property
    def seqs(self) -> tuple[int, ...]:
        return (int(self.intent["seq"]), int(self.record["seq"])) if self.intent else (int(self.record["seq"]),)


def is_intent(rec: dict[str, Any]) -> bool:
    e = rec["event"]
    return e.get("outcome") == "pending" and (e.get("details") or {}).get("phase") == "intent"


class Pairer:
    """Incremental pairing (the streaming form of `pair`, for --follow)."""

    def __init__(self, max_pending: int = 10_000) -> None:
        self.pending: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self.max_pending = max_pending

    def feed(self, rec: dict[str, Any]) -> Iterator[Paired]:
        if is_intent(rec):
            self.pending[int(rec["seq"])] = rec
            while len(self.pending) > self.max_pending:
                yield Paired(self.pending.popitem(last=False)[1])
            return
        intent_seq = (rec["event"].get("details") or {}).get("intent_seq")
        intent = self.pending.pop(intent_seq, None) if isinstance(intent_seq, int) else None
        yield Paired(rec, intent)

    def flush(self, older_than_ns: int | None = None) -> Iterator[Paired]:
        """Intents still without an outcome (all, or those written before `older_than_ns`)."""
        for seq, rec in list(self.pending.items()):
            if older_than_ns is None or int(rec["ts"]) < older_than_ns:
                del self.pending[seq]
                yield Paired(rec)

    def oldest_pending(self) -> int | None:
        return min(self.pending) if self.pending else None


def pair(records: Iterable[dict[str, Any]]) -> Iterator[Paired]:
    pairer = Pairer()
    for rec in records:
        yield from pairer.feed(rec)
    yield from pairer.flush()
