"""Time as a seam: the ledger and the capture layer take a Clock, tests pin it."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now_ns(self) -> int: ...


class SystemClock:
    def now_ns(self) -> int:
        return time.time_ns()


class FixedClock:
    """A clock that only moves when told to (tests, vectors)."""

    def __init__(self, start_ns: int = 1_767_225_600_000_000_000, step_ns: int = 1_000) -> None:
        self.t = start_ns
        self.step = step_ns

    def now_ns(self) -> int:
        self.t += self.step
        return self.t
