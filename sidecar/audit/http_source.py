"""A read-only ObjectStore over a sidecar's auditor endpoint, so `pull` and `verify` treat it like a bucket.

The endpoint serves a live ledger: between listing and fetching, the open
segment grows (every read is itself a record) and may be sealed. A listed tail
chunk names its byte range (`tail/<n>/<start>-<end>.chunk`), and the endpoint
serves exactly that committed range (append-only, so it never changes); the
client still keeps at most the length it listed. Anything shorter than listed,
or any other object of another size, is passed on unchanged for `pull` to
report.

Keys in the listing come from a remote party: `get` refuses any that is not
a valid store key, and `pull` reports such keys and never turns them into a
path on the auditor's machine.
"""

from __future__ import annotations

import builtins
from urllib.parse import quote

import aiohttp
import orjson

from sidecar.errors import StorageError
from sidecar.replicate.layout import parse_key
from sidecar.replicate.store import (
    ObjectInfo,
    ObjectNotFound,
    PutResult,
    StoreUnavailable,
    validate_key,
    validate_prefix,
)


class SidecarSource:
    def __init__(self, base_url: str, token: str | None) -> None:
        self._base = base_url.rstrip("/") + "/.sidecar/audit/objects"
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session: aiohttp.ClientSession | None = None
        self._listed: dict[str, int] = {}  # key -> size, from the last listing

    @property
    def url(self) -> str:
        return self._base

    def _s(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=60, connect=5), cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session

    async def _get(self, url: str, key: str) -> bytes:
        try:
            async with self._s().get(url, headers=self._headers, allow_redirects=False) as resp:
                body = await resp.read()
                if resp.status == 404:
                    raise ObjectNotFound(self._base, key)
                if resp.status != 200:
                    text = body[:200].decode(errors="replace").strip()
                    hint = {
                        401: " (token missing, invalid or expired)",
                        403: " (the token lacks the auditor role)",
                    }.get(resp.status, "")
                    raise StorageError(f"{url}: HTTP {resp.status}{hint}: {text}")
                return body
        except aiohttp.ClientError as exc:
            raise StoreUnavailable(f"{self._base}: {type(exc).__name__}: {exc}") from exc
        except TimeoutError as exc:
            raise StoreUnavailable(f"{self._base}: timed out") from exc

    async def put(self, key: str, data: bytes) -> PutResult:
        raise StorageError("the auditor endpoint is read-only")

    async def get(self, key: str) -> bytes:
        validate_key(key)
        data = await self._get(f"{self._base}/{quote(key, safe='/')}", key)
        listed = self._listed.get(key)
        parsed = parse_key(key)
        if listed is not None and parsed is not None and parsed.kind == "chunk" and len(data) > listed:
            data = data[:listed]  # the open segment grew since the listing; keep what was listed
        return data

    async def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        validate_prefix(prefix)
        try:
            items = orjson.loads(await self._get(self._base, ""))
            listing = {str(i["key"]): int(i["size"]) for i in items}
        except (orjson.JSONDecodeError, TypeError, KeyError, ValueError) as exc:
            raise StorageError(f"{self._base}: the listing is not a JSON list of {{key, size}}: {exc}") from exc
        self._listed = listing
        return [ObjectInfo(k, v) for k, v in sorted(listing.items()) if k.startswith(prefix)]

    async def head(self, key: str) -> ObjectInfo | None:
        validate_key(key)
        if not self._listed:
            await self.list()
        size = self._listed.get(key)
        return None if size is None else ObjectInfo(key, size)

    async def versions(self, key: str) -> builtins.list[ObjectInfo]:
        """The endpoint serves the local WAL, which has no versions: the listed object, or nothing."""
        info = await self.head(key)
        return [info] if info else []

    async def ensure_ready(self, *, create: bool = False) -> None:
        return None  # read-only: nothing to check before reading

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
