"""The event loop the sidecar runs on: uvloop where it is installed, Python's own asyncio loop otherwise.

uvloop (libuv under asyncio's API) makes the same code cheaper where the sidecar spends its time:
socket reads and writes, timers, and the ledger's file thread waking the loop (`call_soon_threadsafe`).
`SIDECAR_UVLOOP=0` (or `serve --no-uvloop`, or `uvloop = false` in the TOML file) selects asyncio's
own loop; `sidecar bench` honours the same variable for the sidecar and for its bare reference
proxy alike, so every ratio compares two processes on the same kind of loop.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

__all__ = ["ENV", "enabled", "factory", "kind", "planned", "run"]

ENV = "SIDECAR_UVLOOP"
_OFF = frozenset({"0", "false", "no", "off"})
T = TypeVar("T")


def enabled(env: Mapping[str, str] | None = None) -> bool:
    """Whether the environment asks for uvloop (the default; `SIDECAR_UVLOOP=0` says no)."""
    value = (os.environ if env is None else env).get(ENV, "")
    return value.strip().lower() not in _OFF


def factory(use_uvloop: bool = True) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory when asked for and installed; None means asyncio's default loop."""
    if not use_uvloop:
        return None
    try:
        import uvloop
    except ImportError:  # not on this platform (Windows) or not installed: asyncio's loop
        return None
    new_loop: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return new_loop


def kind(loop: asyncio.AbstractEventLoop | None = None) -> str:
    """ "uvloop" or "asyncio": the loop running now (or the one given)."""
    loop = loop or asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def _chosen(use_uvloop: bool | None) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory for an explicit choice, or for the environment's when there is none."""
    return factory(enabled() if use_uvloop is None else use_uvloop)


def planned(use_uvloop: bool | None = None) -> str:
    """ "uvloop" or "asyncio": the loop `run` would use (for reports written before any loop runs)."""
    return "asyncio" if _chosen(use_uvloop) is None else "uvloop"


def run(main: Coroutine[Any, Any, T], *, use_uvloop: bool | None = None) -> T:
    """`asyncio.run(main)` on the chosen loop (None: as the environment says)."""
    with asyncio.Runner(loop_factory=_chosen(use_uvloop)) as runner:
        return runner.run(main)
