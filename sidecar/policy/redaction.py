"""From an identity event to the record payload, with the redaction policy applied. [pure]

Redaction is by field, never by value. Records are built from an allowlist of
fields (sidecar.capture.classify): request and response bodies, headers and
cookies are never copied, so a known secret field (the policy's
`redaction.fields`), header (`redaction.headers`) or cookie (`redaction.cookies`)
has no path into a record. This module checks that promise on every record (a
detail named like any of them is dropped and the drop is logged), and it never
compares record strings with values from the exchange: that would let anyone who
can set a cookie or a form field erase the actor, the target or the outcome of
their own records.

Identity fields the sidecar derived (ids from the path, verified claims, type,
outcome, realm) are therefore never changed here. The one typed value that may
be a secret is a login name: a password typed into the username box. A failed
login whose name matches no user (`username_exists` is False, or unknown) keeps
only a keyed fingerprint of the name (`details.username_fp`), so attempts can
still be correlated, and the name itself never reaches the ledger (P5).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from sidecar.core.events import IdentityEvent, Outcome
from sidecar.policy.schema import Policy

log = logging.getLogger("sidecar.policy")

Fingerprint = Callable[[str], str]


def typed_username(event: IdentityEvent) -> str | None:
    """The login name of a failed attempt that no verified id backs (it may be a mistyped secret)."""
    actor = event.actor
    if event.outcome is not Outcome.FAILED or actor is None or actor.id or not actor.username:
        return None
    if event.details.get("via") == "registration":
        return None  # a name being registered: chosen to be public, and no user has it yet by definition
    return actor.username


class Redactor:
    """Applies a policy's redaction rules to events, by field."""

    def __init__(self, policy: Policy, fingerprint: Fingerprint) -> None:
        rules = policy.redaction
        self._fields = frozenset(f.lower() for f in (*rules.fields, *rules.headers, *rules.cookies))
        self._fingerprint = fingerprint

    def record(self, event: IdentityEvent, *, username_exists: bool | None = None) -> IdentityEvent:
        """`event` as the ledger may record it (still an `IdentityEvent`: the appender takes nothing else).

        `username_exists` answers `typed_username(event)` (looked up in Keycloak by the caller);
        anything but True keeps the name out of the record.
        """
        name = typed_username(event)
        if name is not None and username_exists is not True:
            assert event.actor is not None
            event = replace(
                event,
                actor=replace(event.actor, username=None),
                details={
                    **event.details,
                    "username_fp": self._fingerprint(name),
                    "username_status": "unknown-user" if username_exists is False else "unchecked",
                },
            )
        secret = sorted(k for k in event.details if k.lower() in self._fields)
        if secret:
            # SECURITY: a detail named like a secret field must never hold one; drop it, loudly.
            log.error(
                "dropped detail(s) named like secret fields from a %s record: %s",
                event.type.value,
                ", ".join(secret),
            )
            event = replace(event, details={k: v for k, v in event.details.items() if k not in secret})
        return event
