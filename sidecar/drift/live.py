"""Reading Keycloak's live access state, paginated and rate-limited (the I/O side of drift).

`read_state()` returns the whole security-relevant state of one realm in the snapshot
form (`sidecar.drift.state`): users (enabled, direct realm and client roles, groups,
credential types), groups (direct roles), composite roles, and the realm's security
settings. Role and group membership is read per role and per group (`roles/{r}/users`,
`groups/{g}/members`), so a realm of 10,000 users costs pages, not 10,000 mapping reads;
only the credential types need one read per user. Every read waits its turn at a token
bucket (`rate_per_s`), so a sweep never hurts Keycloak. Keycloak's own event stores are read
incrementally by `read_events()`.

Errors are never absence: an unreachable Keycloak or a refused login raises UpstreamError
(the one-shot check exits 2), only a 404 means "not there".
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

from sidecar.drift.state import REALM_SETTINGS, empty_state
from sidecar.errors import UpstreamError


class AdminReader(Protocol):
    realm: str

    async def fetch(self, path: str, params: dict[str, str] | None = None) -> Any: ...


class RateLimit:
    """A token bucket: at most `rate_per_s` calls per second on average, bursts of `burst`."""

    def __init__(self, rate_per_s: float, burst: int = 10) -> None:
        self.rate = rate_per_s
        self.burst = burst
        self._tokens = float(burst)
        self._last = time.monotonic()
        self.calls = 0

    async def wait(self) -> None:
        self.calls += 1
        if self.rate <= 0:
            return
        while True:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= 1:
                self._tokens -= 1
                return
            await asyncio.sleep((1 - self._tokens) / self.rate)


class LiveState:
    """The state reader for one realm; `limit` is shared by every read it makes."""

    def __init__(
        self, reader: AdminReader, *, rate_per_s: float = 100.0, page: int = 200, credentials: bool = True
    ) -> None:
        self.reader = reader
        self.limit = RateLimit(rate_per_s)
        self.page = page
        self.credentials = credentials

    async def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        await self.limit.wait()
        return await self.reader.fetch(path, params)

    async def _pages(self, path: str, params: dict[str, str] | None = None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        first = 0
        while True:
            batch = await self._get(path, {**(params or {}), "first": str(first), "max": str(self.page)})
            if batch is None:
                return out
            if not isinstance(batch, list):
                raise UpstreamError(f"Keycloak answered GET {path} with a {type(batch).__name__}, expected a list")
            out.extend(b for b in batch if isinstance(b, dict))
            if len(batch) < self.page:
                return out
            first += self.page

    async def realm_settings(self) -> dict[str, Any]:
        rep = await self._get("")
        if not isinstance(rep, dict):
            raise UpstreamError(f"realm {self.reader.realm} is not readable")
        return {k: rep[k] for k in REALM_SETTINGS if k in rep}

    async def read_state(self, now_ns: int) -> dict[str, Any]:
        """The live state of the reader's realm, in the snapshot form."""
        state = empty_state(self.reader.realm, now_ns)
        state["realm_settings"] = await self.realm_settings()
        users: dict[str, dict[str, Any]] = state["users"]
        for u in await self._pages("users", {"briefRepresentation": "false"}):
            if isinstance(u.get("id"), str):
                users[u["id"]] = {
                    "username": u.get("username"),
                    "enabled": bool(u.get("enabled", False)),
                    "realm_roles": [],
                    "client_roles": {},
                    "groups": [],
                    "credentials": [],
                }
        groups: dict[str, dict[str, Any]] = state["groups"]
        for g in await self._all_groups():
            groups[g["id"]] = {"path": g.get("path") or g.get("name"), "realm_roles": [], "client_roles": {}}
            for m in await self._pages(f"groups/{g['id']}/members", {"briefRepresentation": "true"}):
                if m.get("id") in users:
                    users[m["id"]]["groups"].append(g.get("path") or g.get("name"))
        roles: dict[str, dict[str, Any]] = state["roles"]
        for r in await self._pages("roles", {"briefRepresentation": "false"}):
            await self._role(state, f"roles/{_q(r['name'])}", r, None)
        for c in await self._pages("clients"):
            if not isinstance(c.get("id"), str):
                continue
            for r in await self._get(f"clients/{c['id']}/roles", {"briefRepresentation": "false"}) or []:
                await self._role(state, f"clients/{c['id']}/roles/{_q(r['name'])}", r, str(c.get("clientId")))
        if self.credentials:
            for uid, user in users.items():
                creds = await self._get(f"users/{uid}/credentials")
                user["credentials"] = sorted({str(c.get("type")) for c in creds or [] if isinstance(c, dict)})
        for user in users.values():
            user["realm_roles"].sort()
            user["groups"].sort()
            user["client_roles"] = {k: sorted(v) for k, v in sorted(user["client_roles"].items())}
        for group in groups.values():
            group["realm_roles"].sort()
            group["client_roles"] = {k: sorted(v) for k, v in sorted(group["client_roles"].items())}
        state["roles"] = dict(sorted(roles.items()))
        return state

    async def _all_groups(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        todo = await self._pages("groups", {"briefRepresentation": "true"})
        while todo:
            g = todo.pop(0)
            if not isinstance(g.get("id"), str):
                continue
            out.append(g)
            if g.get("subGroupCount", 0) or g.get("subGroups"):
                todo.extend(await self._pages(f"groups/{g['id']}/children", {"briefRepresentation": "true"}))
        return out

    async def _role(self, state: dict[str, Any], base: str, role: dict[str, Any], client: str | None) -> None:
        name = str(role.get("name"))
        holders = await self._pages(f"{base}/users", {"briefRepresentation": "true"})
        for u in holders:
            user = state["users"].get(u.get("id"))
            if user is None:
                continue
            if client is None:
                user["realm_roles"].append(name)
            else:
                user["client_roles"].setdefault(client, []).append(name)
        for g in await self._pages(f"{base}/groups", {"briefRepresentation": "true"}):
            group = state["groups"].get(g.get("id"))
            if group is None:
                continue
            if client is None:
                group["realm_roles"].append(name)
            else:
                group["client_roles"].setdefault(client, []).append(name)
        if role.get("composite"):
            comps = await self._get(f"{base}/composites") or []
            state["roles"][role_key(name, client)] = {
                "composites": sorted(
                    role_key(str(c.get("name")), _client_of(c, state)) for c in comps if isinstance(c, dict)
                )
            }

    async def read_events(self, kind: str, since_ms: int, *, max_pages: int = 50) -> list[dict[str, Any]]:
        """User ("events") or admin ("admin-events") events of the realm since `since_ms`, oldest first."""
        out: list[dict[str, Any]] = []
        first = 0
        for _ in range(max_pages):
            batch = await self._get(kind, {"dateFrom": str(since_ms), "first": str(first), "max": str(self.page)})
            if not isinstance(batch, list):
                raise UpstreamError(f"Keycloak's {kind} store is not readable")
            out.extend(e for e in batch if isinstance(e, dict) and int(e.get("time", 0)) >= since_ms)
            if len(batch) < self.page:
                break
            first += self.page
        out.sort(key=lambda e: int(e.get("time", 0)))
        return out


def role_key(name: str, client: str | None) -> str:
    return f"client:{client}:{name}" if client else f"realm:{name}"


def _client_of(role: dict[str, Any], state: dict[str, Any]) -> str | None:
    if not role.get("clientRole"):
        return None
    return str(role.get("containerId"))  # a client's internal id; names would need one read per client


def _q(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")
