"""What happens when a record cannot be made durable: the failure policy applied. [pure]

The policy file says, per event class, "closed" (refuse: 503 + Retry-After, and
for an admin change Keycloak never sees the request) or "open_unsafe" (let it
through unrecorded, logged loudly). These functions turn that choice and the
storage error into a `Pushback` or a log line; the async layer only carries out
the verdict.
"""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.core.exchange import Pushback
from sidecar.errors import SidecarError
from sidecar.policy.schema import Policy


@dataclass(frozen=True, slots=True)
class Verdict:
    """Refuse with `pushback`, or go on and log `unrecorded` (an operator line) if it is set."""

    pushback: Pushback | None = None
    unrecorded: str | None = None


def _retry_after(exc: SidecarError) -> int:
    value = getattr(exc, "retry_after", 5)
    return value if isinstance(value, int) and value >= 0 else 5


def intent_not_durable(policy: Policy, method: str, exc: SidecarError) -> Verdict:
    """An admin change's intent record could not be written: refuse it, unless the policy says open_unsafe."""
    if policy.failure.admin_changes == "closed":
        return Verdict(
            Pushback(f"intent record for {method} admin request not durable: {exc}", retry_after=_retry_after(exc))
        )
    return Verdict(unrecorded=f"UNRECORDED admin change (failure.admin_changes=open_unsafe): {exc}")


def outcome_not_durable(policy: Policy, admin: bool, event_type: str, exc: SidecarError) -> Verdict:
    """An outcome record could not be written.

    An admin change has already been applied by Keycloak (its intent is durable):
    the response goes out and the gap is logged. A login's response is held back
    (503) when logins fail closed, so no one gets tokens the ledger does not show.
    """
    if admin:
        return Verdict(unrecorded=f"UNRECORDED {event_type} outcome (change already applied by Keycloak): {exc}")
    if policy.failure.logins == "closed":
        return Verdict(Pushback(f"{event_type} record not durable: {exc}", retry_after=_retry_after(exc)))
    return Verdict(unrecorded=f"UNRECORDED {event_type} outcome (failure.logins=open_unsafe): {exc}")
