"""A global byte budget for the bodies the proxy holds in memory for capture.

Each captured request may hold up to the capture limit (1 MiB by policy) of request body,
its decoded copy and the response body; many at once would grow memory without bound. All
of them draw on one `ByteBudget`: a request takes a `Grant` before it reads, grows it as
bytes arrive and gives everything back when it ends. When the budget cannot cover a
request body the proxy answers 503 + Retry-After before Keycloak sees anything (P9).

Invariants: `used` is the sum of all open grants and never exceeds `limit`; a grant is
released exactly once (releasing twice is a no-op). Single event loop, no locks.

Bounded is not enough if freed memory never goes back: glibc keeps freed heap pages of a
burst of large bodies resident. `MemoryReturn` makes allocations of 128 KiB and more
their own mappings (returned on free) and, once a burst is over (the budget back at zero
after holding megabytes), asks malloc to hand free pages back (`malloc_trim`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["ByteBudget", "Grant", "MemoryReturn"]

_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


@dataclass(slots=True)
class ByteBudget:
    """Bytes of captured bodies all requests together may hold at once."""

    limit: int
    used: int = 0
    peak: int = 0
    refused: int = 0  # requests (or growths) the budget could not cover, since start
    high: int = 0  # the most held since `MemoryReturn` last returned memory

    def grant(self, nbytes: int = 0) -> Grant | None:
        """A new grant holding ``nbytes``, or None (and counted as refused) if they are not available."""
        g = Grant(self)
        return g if g.grow(nbytes) else None

    def status(self) -> dict[str, int]:
        return {"used": self.used, "limit": self.limit, "peak": self.peak, "refused": self.refused}


@dataclass(slots=True)
class Grant:
    """One request's share of a `ByteBudget`."""

    budget: ByteBudget
    held: int = 0
    _open: bool = field(default=True, repr=False)

    def grow(self, nbytes: int) -> bool:
        """Take ``nbytes`` more; False (nothing taken) if the budget cannot cover them."""
        b = self.budget
        if nbytes <= 0:
            return True
        if not self._open or b.used + nbytes > b.limit:
            b.refused += 1
            return False
        b.used += nbytes
        self.held += nbytes
        if b.used > b.high:
            b.high = b.used
            b.peak = max(b.peak, b.used)
        return True

    def headroom(self) -> int:
        """Bytes this grant could still grow by right now."""
        return max(0, self.budget.limit - self.budget.used) if self._open else 0

    def release(self) -> None:
        """Give every byte back; idempotent."""
        if self._open:
            self._open = False
            self.budget.used -= self.held
            self.held = 0


class MemoryReturn:
    """Gives freed capture memory back to the OS after a burst (glibc only; elsewhere it does nothing)."""

    def __init__(self, budget: ByteBudget, burst_bytes: int = 4 * 1024 * 1024) -> None:
        self._budget = budget
        self._burst = burst_bytes
        self._trim: Callable[[], object] | None = None
        self._refused = 0
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name) if name else None
            trim, mallopt = (libc.malloc_trim, libc.mallopt) if libc is not None else (None, None)
        except (OSError, AttributeError):  # not glibc
            trim = mallopt = None
        if trim is not None and mallopt is not None:
            trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            # A fixed threshold also stops glibc raising it after the first large free.
            mallopt(_M_MMAP_THRESHOLD, 128 * 1024)
            self._trim = lambda: trim(0)

    def due(self) -> bool:
        """True when a burst has just ended: nothing held now, and megabytes held (or refused) since the last return."""
        b = self._budget
        return self._trim is not None and b.used == 0 and (b.high >= self._burst or b.refused > self._refused)

    def run(self) -> None:
        if self._trim is not None and self._budget.used == 0:
            self._trim()
            self._budget.high = 0
            self._refused = self._budget.refused
