"""What the sidecar has seen of who holds which session.

Keycloak 26 admin tokens are lightweight: no `sub`, no username, only the
session id `sid`. The sidecar learns sid -> user from exchanges it forwarded
(a password grant's username with the tokens it returned, an ID token from a
code exchange, the identity cookie after a browser login, the console's
whoami answer) and from login attempts in progress (keyed by a keyed hash of
the AUTH_SESSION_ID cookie, never the cookie itself). It also knows which
refresh tokens Keycloak issued through it, and to whom (by keyed fingerprint):
refresh tokens are HMAC-signed with a key Keycloak does not publish, so having
seen one issued is the only way to vouch for one presented later.

Bounded: least-recently-used entries are dropped past `max_entries` (P9).
In memory only: after a restart, attribution falls back to whoami.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str | None
    username: str | None
    realm: str | None = None
    client: str | None = None


class _Lru:
    def __init__(self, max_entries: int) -> None:
        self._data: OrderedDict[str, Principal] = OrderedDict()
        self._max = max_entries

    def get(self, key: str) -> Principal | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: str, value: Principal) -> None:
        old = self._data.get(key)
        if old is not None:  # keep what we knew if the new sighting knows less
            value = Principal(
                value.user_id or old.user_id,
                value.username or old.username,
                value.realm or old.realm,
                value.client or old.client,
            )
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self._max:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


class SessionDirectory:
    """sid -> principal, and login-attempt -> principal, both bounded."""

    def __init__(self, secret: bytes, max_entries: int = 100_000) -> None:
        self._secret = secret
        self.sessions = _Lru(max_entries)
        self.attempts = _Lru(max_entries)
        self._refresh = _Lru(max_entries)
        self._actions: OrderedDict[str, str] = OrderedDict()
        self._max = max_entries

    def remember_action(self, key: str, action: str) -> None:
        """The application-initiated action (kc_action) a login attempt started, until it ends."""
        self._actions[key] = action
        self._actions.move_to_end(key)
        while len(self._actions) > self._max:
            self._actions.popitem(last=False)

    def action(self, key: str | None) -> str | None:
        return self._actions.get(key) if key else None

    def forget_action(self, key: str | None) -> None:
        if key:
            self._actions.pop(key, None)

    def remember_refresh(self, fingerprint: str, principal: Principal) -> None:
        """A refresh token Keycloak issued through the sidecar (by keyed fingerprint), and to whom."""
        self._refresh.put(fingerprint, principal)

    def refresh(self, fingerprint: str) -> Principal | None:
        """Who Keycloak issued the refresh token with this fingerprint to, if it went through the sidecar."""
        return self._refresh.get(fingerprint)

    def attempt_key(self, auth_session_cookie: str) -> str:
        # SECURITY: the AUTH_SESSION_ID cookie is a credential for the login in progress; only a keyed
        # hash of it is kept, so a memory dump does not hand it out.
        return hmac.new(self._secret, auth_session_cookie.encode(), hashlib.sha256).hexdigest()
