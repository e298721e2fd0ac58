"""A global byte budget for the bodies the proxy holds in memory for capture.

Each captured request may hold up to the capture limit (1 MiB by policy) of request body,
its decoded copy and the response body; many at once would grow memory without bound. All
of them draw on one `ByteBudget`: a request takes a `Grant` before it reads, grows it as
bytes arrive and gives everything back when it ends. When the budget cannot cover a
request body the proxy answers 503 + Retry-After before Keycloak sees anything (P9).

Invariants: `used` is the sum of all open grants and never exceeds `limit`; a grant is
released exactly once (releasing twice is a no-op). Single event loop, no locks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ByteBudget", "Grant"]


@dataclass(slots=True)
class ByteBudget:
    """Bytes of captured bodies all requests together may hold at once."""

    limit: int
    used: int = 0
    peak: int = 0
    refused: int = 0  # requests (or growths) the budget could not cover, since start

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
