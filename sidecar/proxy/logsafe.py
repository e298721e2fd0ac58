"""Log lines that cannot carry request bytes, and log lines that cannot flood.

aiohttp logs a malformed request with the parser's exception, whose message quotes the
offending bytes: a request line with its query (``code=``), an ``Authorization: Bearer``
header, a ``Cookie: KEYCLOAK_IDENTITY=`` header. Other libraries' records (asyncio's
"Task exception was never retrieved", aiohttp's client warnings) can hold reprs of the
same values. Two defences:

* `SERVER_LOGGER` is handed to aiohttp's server as its logger (`HANDLER_ARGS` in
  `sidecar.proxy.forward`): every record it gets is reduced to the message template and
  the exception's type (and HTTP status), never its text, arguments or traceback.
* `SafeRecordFilter`, installed on the process's log handlers by `install()`, does the
  same to every record from a logger outside ``sidecar.*``. The sidecar's own lines are
  written to carry method, path without query, status and reasons only.

`Throttle` rate-limits a log line that hostile traffic could repeat per request (a 503,
a 413, an unreachable upstream): at most one line per interval per key, the next one
saying how many were suppressed.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Final

__all__ = ["SERVER_LOGGER", "SafeRecordFilter", "Throttle", "install", "make_safe"]

_MAX_TEMPLATE: Final = 120
_PLACEHOLDER: Final = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(?:\d+|\*)?(?:\.\d+)?[diouxXeEfFgGcrsa%]")


def make_safe(record: logging.LogRecord) -> None:
    """Reduce ``record`` in place to its message template's first line and the exception type."""
    exc = record.exc_info[1] if record.exc_info else None
    # SECURITY: arguments are where values go (a remote address, a request repr, a header):
    # the template alone says what happened; its placeholders are shown as "?".
    template = _PLACEHOLDER.sub("?", str(record.msg).split("\n", 1)[0][:_MAX_TEMPLATE])
    if exc is not None:
        status = getattr(exc, "status", None) or getattr(exc, "code", None)
        what = type(exc).__name__ + (f" {status}" if isinstance(status, int) else "")
        template = f"{template} [{what}]"
    record.msg = template
    record.args = None
    record.exc_info = None
    record.exc_text = None
    record.stack_info = None


class SafeRecordFilter(logging.Filter):
    """Makes every record from outside ``sidecar.*`` safe (see `make_safe`); never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("sidecar") or record.name == SERVER_LOGGER.name:
            make_safe(record)
        return True


class _ServerFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        make_safe(record)
        return True


SERVER_LOGGER: Final = logging.getLogger("sidecar.http")
SERVER_LOGGER.addFilter(_ServerFilter())


def install(logger: logging.Logger | None = None) -> None:
    """Put `SafeRecordFilter` on every handler of ``logger`` (the root logger by default)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, SafeRecordFilter) for f in handler.filters):
            handler.addFilter(SafeRecordFilter())


class Throttle:
    """At most one log line per ``interval_s`` per key; `allow` says whether to log and how many were held back."""

    def __init__(self, interval_s: float = 1.0, max_keys: int = 64) -> None:
        self.interval_s = interval_s
        self._max_keys = max_keys
        self._last: dict[str, tuple[float, int]] = {}

    def allow(self, key: str) -> tuple[bool, int]:
        """(log this one?, lines suppressed since the last one logged for ``key``)."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last[0] < self.interval_s:
            self._last[key] = (last[0], last[1] + 1)
            return False, 0
        if last is None and len(self._last) >= self._max_keys:
            self._last.clear()  # keys are a small fixed set of kinds; this only bounds a mistake
        self._last[key] = (now, 0)
        return True, last[1] if last is not None else 0
