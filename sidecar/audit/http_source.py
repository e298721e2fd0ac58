"""A read-only ObjectStore over a sidecar's auditor endpoint, so `pull` and `verify` treat it like a bucket."""

from __future__ import annotations

import builtins

import aiohttp

from sidecar.errors import StorageError
from sidecar.replicate.store import ObjectInfo, ObjectNotFound, PutResult, StoreUnavailable


class SidecarSource:
    def __init__(self, base_url: str, token: str | None) -> None:
        self._base = base_url.rstrip("/") + "/.sidecar/audit/objects"
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return self._base

    def _s(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60, connect=5))
        return self._session

    async def _get(self, url: str) -> bytes:
        try:
            async with self._s().get(url, headers=self._headers) as resp:
                body = await resp.read()
                if resp.status == 404:
                    raise ObjectNotFound(self._base, url.rsplit("/objects/", 1)[-1])
                if resp.status != 200:
                    raise StorageError(f"{url}: HTTP {resp.status}: {body[:200].decode(errors='replace').strip()}")
                return body
        except aiohttp.ClientError as exc:
            raise StoreUnavailable(f"{self._base}: {type(exc).__name__}: {exc}") from exc

    async def put(self, key: str, data: bytes) -> PutResult:
        raise StorageError("the auditor endpoint is read-only")

    async def get(self, key: str) -> bytes:
        return await self._get(f"{self._base}/{key}")

    async def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        import orjson

        items = orjson.loads(await self._get(self._base))
        return [ObjectInfo(i["key"], int(i["size"])) for i in items if i["key"].startswith(prefix)]

    async def head(self, key: str) -> ObjectInfo | None:
        return next((i for i in await self.list(key) if i.key == key), None)

    async def versions(self, key: str) -> builtins.list[ObjectInfo]:
        info = await self.head(key)
        return [info] if info else []

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
