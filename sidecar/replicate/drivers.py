"""Which `ObjectStore` driver a store URL names: the one place that knows all of them.

The protocol module (`sidecar.replicate.store`) imports no driver; callers that start from a
URL (`sidecar serve --store`, `sidecar verify`, `sidecar pull`, the benchmarks) come here.

    /abs/dir, rel/dir, file:///abs/dir            DirectoryStore
    memory://                                     MemoryStore (a fresh one: tests only)
    s3://bucket/prefix?endpoint=URL&region=R      S3Store (credentials from the environment or options)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from sidecar.errors import ConfigError
from sidecar.replicate.directory import DirectoryStore
from sidecar.replicate.memory import MemoryStore
from sidecar.replicate.s3 import S3Store
from sidecar.replicate.store import ObjectStore

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


def is_store_url(source: str) -> bool:
    """Whether source is written as a store URL (rather than a local path)."""
    return source.startswith(("s3://", "file://", "memory://"))


def open_store(url: str, *, retention_days: int = 365, **s3_options: Any) -> ObjectStore:
    """Open the store a URL names.

    ``file:///abs/dir`` or a plain path gives a `DirectoryStore`; ``memory://`` a `MemoryStore`;
    ``s3://bucket/prefix?endpoint=http://127.0.0.1:5000&region=us-east-1`` an `S3Store`, with
    s3_options (credentials, timeouts) passed through. Anything else is a `ConfigError`.
    retention_days is the Object Lock retention of each new S3 object; local stores ignore it.
    """
    if not url:
        raise ConfigError("store URL is empty")
    scheme = urlsplit(url).scheme if "://" in url else ""
    if scheme == "" and _SCHEME.match(url):
        # 's3:/bucket' is a typo, not a relative directory named 's3:'.
        raise ConfigError(f"store URL {url!r}: looks like a URL but has no '://'")
    if scheme != "s3" and s3_options:
        raise ConfigError(f"store URL {url!r}: S3 options {sorted(s3_options)} given for a non-S3 store")
    if scheme == "":
        return DirectoryStore(Path(url).expanduser().absolute())
    if scheme == "file":
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
            raise ConfigError(f"store URL {url!r}: expected file:///absolute/directory")
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise ConfigError(f"store URL {url!r}: expected file:///absolute/directory")
        return DirectoryStore(Path(path))
    if scheme == "memory":
        if url != "memory://":
            raise ConfigError(f"store URL {url!r}: expected exactly memory://")
        return MemoryStore()
    if scheme == "s3":
        parts = urlsplit(url)
        if not parts.netloc:
            raise ConfigError(f"store URL {url!r}: no bucket (expected s3://bucket/prefix)")
        if parts.fragment:
            raise ConfigError(f"store URL {url!r}: unexpected fragment")
        options: dict[str, Any] = dict(s3_options)
        known = {"endpoint": "endpoint_url", "region": "region"}
        for name, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
            if name not in known:
                raise ConfigError(f"store URL {url!r}: unknown parameter {name!r} (known: endpoint, region)")
            if known[name] in options:
                raise ConfigError(f"store URL {url!r}: {name} given twice")
            options[known[name]] = value
        try:
            return S3Store(parts.netloc, parts.path.lstrip("/"), retention_days=retention_days, **options)
        except ConfigError as e:
            raise ConfigError(f"store URL {url!r}: {e}") from e
    raise ConfigError(f"store URL {url!r}: unsupported scheme {scheme!r} (use file://, s3:// or memory://)")
