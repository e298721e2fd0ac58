"""Log output for `sidecar serve`: readable text, or one JSON object per line for a log pipeline.

The JSON form carries time (RFC 3339, UTC), level, logger, message, and a request's `http` fields
for access lines (method, path without query, status, ms, client, kind). Messages are the same
strings as in text form: what may or may not be logged is decided where a line is written
(never a query string, header, cookie, body or secret), not here.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        http = getattr(record, "http", None)
        if isinstance(http, dict):
            out["http"] = http
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def configure(level: str, fmt: str) -> None:
    """Set up the root logger once for the serve process."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
