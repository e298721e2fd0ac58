"""Who may read the auditor endpoint now, and how refusals are recorded without flooding the ledger.

* `LiveRoles`: a token names its roles as they were when it was issued. Before a read
  is served, the auditor's *current* state is read from Keycloak (through the
  read-only state reader: the user is enabled and holds the role, directly, through a
  group or a composite) and cached for a few seconds, so removing the role or
  disabling the user stops access within that time, not at the token's expiry. When
  Keycloak cannot be asked the read is refused (fail closed).
* `DeniedReads`: a refused read by a known identity is an `audit.read failed` record,
  but a realm user must not be able to write one record per request. Per requester
  the first refusal of a window is recorded at once; the rest of that window are
  counted and written as one aggregated record when the window closes. Every refusal
  is still counted (`sidecar_audit_denied`). The number of requesters tracked is
  bounded; beyond it refusals share one anonymous aggregate.

Both take time from `time.monotonic` through a parameter, so tests pin it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DeniedReads", "LiveCheck", "LiveRoles", "Refusal"]

# (realm, user id) -> (enabled, effective realm role names), or None when Keycloak cannot say.
LiveCheck = Callable[[str, str], Awaitable[tuple[bool, frozenset[str]] | None]]
Now = Callable[[], float]


class LiveRoles:
    """The live role check, cached per user for ``ttl_s`` seconds."""

    def __init__(
        self, check: LiveCheck, ttl_s: float = 5.0, *, now: Now = time.monotonic, max_entries: int = 4096
    ) -> None:
        self._check = check
        self.ttl_s = ttl_s
        self._now = now
        self._max = max_entries
        self._cache: dict[tuple[str, str], tuple[float, tuple[bool, frozenset[str]]]] = {}

    async def refusal(self, realm: str, user_id: str, role: str) -> str | None:
        """None if the user is enabled and holds ``role`` now; else "revoked", "disabled" or "unconfirmed"."""
        key = (realm, user_id)
        now = self._now()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            state = cached[1]
        else:
            fetched = await self._check(realm, user_id)
            if fetched is None:
                return "unconfirmed"
            if len(self._cache) >= self._max:
                self._cache.clear()  # bounded; a miss costs one read of Keycloak
            self._cache[key] = (now + self.ttl_s, fetched)
            state = fetched
        enabled, roles = state
        if not enabled:
            return "disabled"
        return None if role in roles else "revoked"


@dataclass(slots=True)
class Refusal:
    """Who was refused, for the record: the verified claims worth keeping and the source address."""

    actor: dict[str, Any]
    source_ip: str | None
    what: str
    error: str


@dataclass(slots=True)
class _Window:
    opened: float
    last: Refusal
    suppressed: int = 0
    objects: set[str] = field(default_factory=set)


_ANONYMOUS = "*"


class DeniedReads:
    """Rate-limits `audit.read failed` records per requester: one at once, one aggregate per window."""

    def __init__(
        self, window_s: float = 60.0, *, now: Now = time.monotonic, max_requesters: int = 1024, max_objects: int = 16
    ) -> None:
        self.window_s = window_s
        self._now = now
        self._max = max_requesters
        self._max_objects = max_objects
        self._open: dict[str, _Window] = {}
        self._owed: list[tuple[Refusal, int, list[str]]] = []
        self.denied = 0  # every refusal seen, recorded or not

    def note(self, requester: str, refusal: Refusal) -> bool:
        """Count one refusal; True if it is to be recorded now (the first of its requester's window)."""
        self.denied += 1
        now = self._now()
        window = self._open.get(requester)
        if window is not None and now - window.opened < self.window_s:
            window.suppressed += 1
            window.last = refusal
            if len(window.objects) < self._max_objects:
                window.objects.add(refusal.what)
            return False
        if window is None and len(self._open) >= self._max and requester != _ANONYMOUS:
            # Too many requesters at once: the rest share one anonymous window.
            self.denied -= 1  # counted again in the call below
            return self.note(_ANONYMOUS, Refusal({}, None, refusal.what, refusal.error))
        if window is not None:
            self._close(window)
        self._open[requester] = _Window(now, refusal)
        return True

    def _close(self, window: _Window) -> None:
        if window.suppressed:
            self._owed.append((window.last, window.suppressed, sorted(window.objects)))

    def due(self, *, all_windows: bool = False) -> list[tuple[Refusal, int, list[str]]]:
        """Aggregates owed for closed windows (or every window): (last refusal, suppressed count, objects)."""
        now = self._now()
        for key, window in list(self._open.items()):
            if all_windows or now - window.opened >= self.window_s:
                del self._open[key]
                self._close(window)
        out, self._owed = self._owed, []
        return out
