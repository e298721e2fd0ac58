"""A read-only view of Keycloak's state, for what requests alone cannot say.

Keycloak keeps no previous state: after a role is revoked nothing says which
roles the user held before. For permission changes the sidecar therefore
reads the target's role and group set just before forwarding the change and
again after the response, through a read-only service account (client
credentials; `view-users` and `query-groups` of the realm's
`realm-management` client suffice), and resolves user ids to usernames.

The reader only serves the realm its service account lives in. Its token is
kept in memory and renewed before it expires; it never reaches a record or a
log. Every failure gives None: the change is still recorded, without the
before/after state, and the record says so.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import aiohttp

from sidecar.capture.tokens import unverified_claims

log = logging.getLogger("sidecar.capture")

# Called after each login of the reader itself: (succeeded, Keycloak error code or None, the claims of the
# access token Keycloak issued: `sub` is the service-account user). The sidecar's own logins are identity
# events too, so they go into the ledger like anyone else's.
# (True: logged in, False: refused, None: no usable answer), error, the issued token's claims
OnLogin = Callable[[bool | None, str | None, dict[str, Any]], Awaitable[None]]


class KeycloakReader:
    def __init__(
        self,
        base: str,
        realm: str,
        client_id: str,
        secret: str,
        *,
        timeout_s: float = 3.0,
        on_login: OnLogin | None = None,
    ) -> None:
        self.base = base.rstrip("/")
        self.realm = realm
        self._client_id = client_id
        self._secret = secret
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._names: dict[str, str] = {}
        self._on_login = on_login
        self.client_id = client_id

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=self._timeout, cookie_jar=aiohttp.DummyCookieJar())

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _bearer(self) -> str | None:
        async with self._lock:
            if self._token and time.monotonic() < self._expires:
                return self._token
            assert self._session is not None
            try:
                async with self._session.post(
                    f"{self.base}/realms/{self.realm}/protocol/openid-connect/token",
                    data={
                        "grant_type": "client_credentials",
                        "client_id": self._client_id,
                        "client_secret": self._secret,
                    },
                ) as resp:
                    data = await resp.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.warning("state reader cannot log in: %s", type(exc).__name__)
                if self._on_login is not None:
                    # No answer: Keycloak may still have issued the token (and recorded CLIENT_LOGIN).
                    await self._on_login(None, f"no_answer:{type(exc).__name__}", {})
                return None
            if not isinstance(data, dict) or "access_token" not in data:
                error = str(data.get("error")) if isinstance(data, dict) else "unexpected answer"
                log.warning("state reader login refused: %s", error)
                if self._on_login is not None:
                    await self._on_login(False, error, {})
                return None
            if self._on_login is not None:
                # Keycloak's own answer on the reader's connection: its claims are read for the record only.
                claims = unverified_claims(str(data["access_token"])) or {}
                await self._on_login(True, None, claims)
            self._token = str(data["access_token"])
            self._expires = time.monotonic() + max(5.0, float(data.get("expires_in", 60)) - 30.0)
            return self._token

    async def _get(self, path: str) -> Any:
        token = await self._bearer()
        if token is None or self._session is None:
            return None
        try:
            url = f"{self.base}/admin/realms/{self.realm}" + (f"/{path}" if path else "")
            async with self._session.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
                if resp.status != 200:
                    return None
                return await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    async def fetch(self, path: str, params: dict[str, str] | None = None) -> Any:
        """GET an admin path of the reader's realm, strictly: None only for 404, else the JSON.

        Unlike the lenient reads above (a failure there only costs a record its before/after
        state), a caller that must tell "absent" from "could not look" (the drift monitor)
        gets UpstreamError when Keycloak is unreachable, refuses the login, or answers oddly.
        """
        from sidecar.errors import UpstreamError

        token = await self._bearer()
        if token is None or self._session is None:
            raise UpstreamError(f"the state reader cannot log in to realm {self.realm} at {self.base}")
        try:
            async with self._session.get(
                f"{self.base}/admin/realms/{self.realm}/{path}",
                params=params,
                headers={"Authorization": f"Bearer {token}"},
            ) as resp:
                if resp.status == 404:
                    return None
                if resp.status == 401:
                    self._token = None  # expired early or revoked: log in again next time
                if resp.status != 200:
                    raise UpstreamError(f"Keycloak answered {resp.status} to GET {path.split('?')[0]}")
                return await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise UpstreamError(f"Keycloak unreachable for GET {path.split('?')[0]}: {type(exc).__name__}") from exc

    async def read(self, realm: str, path: str) -> Any:
        """One admin GET (path relative to the realm, "" for the realm itself); None if it failed."""
        if realm != self.realm:
            return None
        return await self._get(path)

    async def username(self, realm: str, user_id: str) -> str | None:
        if realm != self.realm:
            return None
        if user_id in self._names:
            return self._names[user_id]
        user = await self._get(f"users/{user_id}")
        name = user.get("username") if isinstance(user, dict) else None
        if isinstance(name, str):
            if len(self._names) > 50_000:
                self._names.clear()
            self._names[user_id] = name
            return name
        return None

    async def name_of(self, realm: str, kind: str, object_id: str) -> str | None:
        """A group's path or a client's clientId for its internal id (cached)."""
        if realm != self.realm or kind not in ("group", "client"):
            return None
        key = f"{kind}:{object_id}"
        if key in self._names:
            return self._names[key]
        obj = await self._get(f"{'groups' if kind == 'group' else 'clients'}/{object_id}")
        if not isinstance(obj, dict):
            return None
        name = (obj.get("path") or obj.get("name")) if kind == "group" else obj.get("clientId")
        if isinstance(name, str):
            self._names[key] = name
            return name
        return None

    async def user_exists(self, realm: str, username: str) -> bool | None:
        """Whether a login name (a username, or an email, which Keycloak also accepts) is a user's.

        None when the reader cannot tell (another realm, Keycloak unreachable). Used to keep a
        password typed into the username field out of the ledger: a name that is nobody's is
        recorded as a keyed fingerprint only.
        """
        return (await self.login_user(realm, username))[0]

    async def login_user(self, realm: str, username: str) -> tuple[bool | None, str | None]:
        """`user_exists`, and the id of the one user the name is (None when none or not one), as Keycloak
        resolves a login name: by username, then by e-mail."""
        if realm != self.realm or not username or len(username) > 255:
            return None, None
        for field in ("username", "email"):
            found = await self._get(
                f"users?{field}={quote(username, safe='')}&exact=true&briefRepresentation=true&max=2"
            )
            if not isinstance(found, list):
                return None, None
            if found:
                uid = found[0].get("id") if len(found) == 1 and isinstance(found[0], dict) else None
                return True, uid if isinstance(uid, str) and uid else None
        return False, None

    async def access(self, realm: str, kind: str, target_id: str) -> dict[str, Any] | None:
        """The direct role mappings (and, for users, group memberships) of a user or group."""
        if realm != self.realm or kind not in ("user", "group"):
            return None
        base = f"{'users' if kind == 'user' else 'groups'}/{target_id}"
        reads = [self._get(f"{base}/role-mappings")]
        if kind == "user":
            reads.append(self._get(f"{base}/groups?briefRepresentation=true"))
        results = await asyncio.gather(*reads)
        mappings = results[0]
        if not isinstance(mappings, dict):
            return None
        state: dict[str, Any] = {
            "realm_roles": sorted(r["name"] for r in mappings.get("realmMappings", []) if "name" in r),
            "client_roles": {
                client_id: sorted(r["name"] for r in v.get("mappings", []) if "name" in r)
                for client_id, v in (mappings.get("clientMappings") or {}).items()
                if isinstance(v, dict)
            },
        }
        if kind == "user":
            groups = results[1]
            state["groups"] = (
                sorted(g.get("path") or g.get("name") for g in groups) if isinstance(groups, list) else None
            )
        return state

    async def user_realm_access(self, realm: str, user_id: str) -> tuple[bool, frozenset[str]] | None:
        """Live (enabled, effective realm role names) of a user, read now; None if it cannot be read.

        Effective roles include those held through groups, composites and the realm's default
        roles (`role-mappings/realm/composite`). The auditor endpoint re-checks tokens with this.
        """
        if realm != self.realm:
            return None
        user, roles = await asyncio.gather(
            self._get(f"users/{user_id}"), self._get(f"users/{user_id}/role-mappings/realm/composite")
        )
        if not isinstance(user, dict) or not isinstance(roles, list):
            return None
        return user.get("enabled") is True, frozenset(
            r["name"] for r in roles if isinstance(r, dict) and isinstance(r.get("name"), str)
        )

    # ------------------------------------------------------------------ effects of role changes
    async def _list(self, path: str) -> list[dict[str, Any]]:
        got = await self._get(path)
        return [x for x in got if isinstance(x, dict)] if isinstance(got, list) else []

    async def group_members(self, realm: str, group_id: str, limit: int) -> tuple[list[str], bool]:
        """User ids of a group's members and of its subgroups' members (who inherit its roles), up to `limit`;
        whether the list is complete."""
        if realm != self.realm:
            return [], False
        users: list[str] = []
        queue, seen = [group_id], set[str]()
        while queue and len(users) <= limit and len(seen) < 50:
            gid = queue.pop(0)
            seen.add(gid)
            for member in await self._list(f"groups/{gid}/members?briefRepresentation=true&max={limit + 1}"):
                if isinstance(member.get("id"), str) and member["id"] not in users:
                    users.append(member["id"])
            for child in await self._list(f"groups/{gid}/children?briefRepresentation=true&max=50"):
                if isinstance(child.get("id"), str) and child["id"] not in seen:
                    queue.append(child["id"])
        return users[:limit], len(users) <= limit and not queue

    async def role_holders(self, realm: str, role_path: str, limit: int) -> tuple[list[str], bool]:
        """User ids holding a role directly or through a group (`role_path`: `roles/{name}` or
        `clients/{uuid}/roles/{name}`), up to `limit`; whether the list is complete."""
        if realm != self.realm:
            return [], False
        users = [
            u["id"]
            for u in await self._list(f"{role_path}/users?briefRepresentation=true&max={limit + 1}")
            if isinstance(u.get("id"), str)
        ]
        complete = len(users) <= limit
        for group in await self._list(f"{role_path}/groups?briefRepresentation=true&max=50"):
            if isinstance(group.get("id"), str):
                members, whole = await self.group_members(realm, group["id"], limit)
                users += [m for m in members if m not in users]
                complete = complete and whole
        return users[:limit], complete and len(users) <= limit

    async def effective_roles(self, realm: str, user_id: str, client_uuids: tuple[str, ...]) -> list[str] | None:
        """A user's effective realm roles and effective roles of the given clients (`client-uuid:role`)."""
        if realm != self.realm:
            return None
        reads = [self._get(f"users/{user_id}/role-mappings/realm/composite?briefRepresentation=true")]
        reads += [
            self._get(f"users/{user_id}/role-mappings/clients/{c}/composite?briefRepresentation=true")
            for c in client_uuids
        ]
        results = await asyncio.gather(*reads)
        if not all(isinstance(r, list) for r in results):
            return None
        names = [str(r.get("name")) for r in results[0] if isinstance(r, dict)]
        for client, roles in zip(client_uuids, results[1:], strict=True):
            names += [f"{client}:{r.get('name')}" for r in roles if isinstance(r, dict)]
        return sorted(names)
