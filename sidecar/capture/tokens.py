"""Trusting what a token says: signature checks against the realm's JWKS.

Claims from an access, ID or service-account token are used for attribution
only after the signature verifies against the issuing realm's published keys
(`/realms/{realm}/protocol/openid-connect/certs`, fetched through the upstream
and cached; an unknown key id triggers one refetch, at most every 30 s per
realm). Expiry is checked with a small leeway. Anything that fails gives None,
never an exception: a broken token means "unknown actor", and the request
itself still goes to Keycloak, which will refuse it.

Refresh tokens and the KEYCLOAK_IDENTITY cookie are HMAC-signed with keys that
are not published; their payloads are only decoded (`unverified_claims`) to
correlate a session, and records say so.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

log = logging.getLogger("sidecar.capture")

JwksFetcher = Callable[[str], Awaitable[dict[str, Any] | None]]


def unverified_claims(token: str) -> dict[str, Any] | None:
    """Decode a JWT payload without checking it (correlation only, never attribution)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = orjson.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, orjson.JSONDecodeError):
        return None
    return claims if isinstance(claims, dict) else None


def realm_of_issuer(iss: object) -> str | None:
    if not isinstance(iss, str) or "/realms/" not in iss:
        return None
    return iss.rsplit("/realms/", 1)[1].strip("/") or None


class TokenVerifier:
    """Verifies RS/ES/PS-signed Keycloak tokens against cached realm JWKS."""

    def __init__(self, fetch: JwksFetcher, *, leeway_s: int = 30, refetch_every_s: float = 30.0) -> None:
        self._fetch = fetch
        self._sets: dict[str, KeySet] = {}
        self._fetched_at: dict[str, float] = {}
        self._leeway = leeway_s
        self._refetch_every = refetch_every_s

    async def _keyset(self, realm: str, force: bool) -> KeySet | None:
        now = time.monotonic()
        if realm in self._sets and not force:
            return self._sets[realm]
        if force and now - self._fetched_at.get(realm, -1e9) < self._refetch_every:
            return self._sets.get(realm)
        self._fetched_at[realm] = now
        doc = await self._fetch(realm)
        if not doc:
            return self._sets.get(realm)
        try:
            # Keycloak publishes an RSA-OAEP encryption key beside the signing keys; keep signing keys only.
            keys = [k for k in doc.get("keys", []) if k.get("use", "sig") == "sig"]
            self._sets[realm] = KeySet.import_key_set({"keys": keys})
        except (JoseError, ValueError, TypeError) as exc:
            log.warning("realm %s published an unusable JWKS: %s", realm, type(exc).__name__)
        return self._sets.get(realm)

    async def verify(self, token: str) -> dict[str, Any] | None:
        """Claims of a validly signed, unexpired token, or None."""
        claims = unverified_claims(token)
        if claims is None:
            return None
        realm = realm_of_issuer(claims.get("iss"))
        if realm is None:
            return None
        kid = _header_kid(token)
        keyset = await self._keyset(realm, force=False)
        if keyset is not None and kid is not None and not any(k.kid == kid for k in keyset.keys):
            keyset = await self._keyset(realm, force=True)  # the realm may have rotated its keys
        if keyset is None:
            return None
        try:
            decoded = jwt.decode(token, keyset)
        except (JoseError, ValueError):
            return None
        try:
            jwt.JWTClaimsRegistry(leeway=self._leeway).validate(decoded.claims)
        except JoseError:
            return None
        out = dict(decoded.claims)
        out["_realm"] = realm
        return out


def _header_kid(token: str) -> str | None:
    head = token.split(".", 1)[0]
    try:
        obj = orjson.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        return None
    kid = obj.get("kid") if isinstance(obj, dict) else None
    return kid if isinstance(kid, str) else None
