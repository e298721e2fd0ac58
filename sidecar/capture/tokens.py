"""Trusting what a token says: signature checks against the realm's JWKS.

Claims from an access, ID or service-account token are used for attribution
only after the signature verifies against the issuing realm's published keys
(`/realms/{realm}/protocol/openid-connect/certs`, fetched through the upstream
and cached; an unknown key id triggers one refetch, at most once a second per
realm, so a realm that rotates keys or changes its signing algorithm is
followed at once while random key ids cost Keycloak at most one cheap read a
second). Expiry is checked with a small leeway. Anything that fails gives None,
never an exception: a broken token means "unknown actor", and the request
itself still goes to Keycloak, which will refuse it.

Every asymmetric algorithm Keycloak signs with is accepted (RS/PS/ES 256/384/512,
EdDSA), and each token is checked with exactly one key and one algorithm: the
key its `kid` names, and the algorithm that key declares (`alg` of the JWK). A
header naming another algorithm than its key's, a symmetric one (HS*, which
would turn a public key into a shared secret) or `none` never verifies.

`Claims` is the typed view attribution reads: the handful of claims it uses,
each a bounded string or None, whatever shape the token carried (a claim
`{"sub": 1.5}` or a 700 KB `sid` cannot reach a record or a dictionary key).

A token whose signature verified is remembered (by its SHA-256, a bounded LRU)
together with the realm key set that verified it, so a client presenting the
same token again (the admin console sends one token with every request) is not
verified again while that key set is the realm's current one: a refetched JWKS
(rotation, a removed key) empties the memory for that realm in effect, because
an entry counts only if its key set is still the one in use. Expiry is checked
on every presentation, remembered or not; a token that failed is never
remembered, and `fresh_keys=True` always verifies anew.

Refresh tokens and the KEYCLOAK_IDENTITY cookie are HMAC-signed with keys that
are not published; their payloads are only decoded (`unverified_claims`) to
correlate a session, and records say so.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
import warnings
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from joserfc import jwt
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import KeySet

from sidecar.core.events import MAX_TEXT, clean_text

log = logging.getLogger("sidecar.capture")

# What Keycloak 26 can sign tokens with (realm keys: rsa, rsa-generated, ecdsa-generated, eddsa-generated).
ASYMMETRIC_ALGS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "Ed25519"}
)
_MAX_TOKEN = 64 * 1024  # Keycloak's tokens are a few KB; a bigger one is not parsed at all
_VERIFIED_MAX = 1024  # verified tokens remembered (a few KB of claims each)

JwksFetcher = Callable[[str], Awaitable[dict[str, Any] | None]]


def unverified_claims(token: str) -> dict[str, Any] | None:
    """Decode a JWT payload without checking it (correlation only, never attribution)."""
    if not isinstance(token, str) or len(token) > _MAX_TOKEN:
        return None
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = orjson.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, orjson.JSONDecodeError):
        return None
    return claims if isinstance(claims, dict) else None


@dataclass(frozen=True, slots=True)
class Claims:
    """The claims capture uses, as bounded strings (None when absent or not a string-like scalar)."""

    verified: bool
    sub: str | None = None
    sid: str | None = None
    azp: str | None = None
    preferred_username: str | None = None
    iss: str | None = None
    typ: str | None = None

    @classmethod
    def of(cls, raw: Mapping[str, Any] | None, *, verified: bool) -> Claims | None:
        if not isinstance(raw, Mapping):
            return None

        def text(name: str) -> str | None:
            value = raw.get(name)
            if type(value) is str and len(value) <= MAX_TEXT and value.isascii():
                return value  # what clean_text returns for it (short, no surrogate), without its work
            return clean_text(value) if isinstance(value, str | int) and not isinstance(value, bool) else None

        return cls(
            verified, text("sub"), text("sid"), text("azp"), text("preferred_username"), text("iss"), text("typ")
        )

    @property
    def realm(self) -> str | None:
        return realm_of_issuer(self.iss)

    def correlation(self) -> dict[str, str]:
        """The claims as kept in a record for correlation (`details.unverified` when not verified)."""
        return {
            k: v
            for k, v in (
                ("sub", self.sub),
                ("sid", self.sid),
                ("azp", self.azp),
                ("preferred_username", self.preferred_username),
                ("iss", self.iss),
            )
            if v
        }


def realm_of_issuer(iss: object) -> str | None:
    if not isinstance(iss, str) or "/realms/" not in iss:
        return None
    return iss.rsplit("/realms/", 1)[1].strip("/") or None


class TokenVerifier:
    """Verifies RS/ES/PS-signed Keycloak tokens against cached realm JWKS."""

    def __init__(self, fetch: JwksFetcher, *, leeway_s: int = 30, refetch_every_s: float = 1.0) -> None:
        self._fetch = fetch
        self._sets: dict[str, KeySet] = {}
        self._fetched_at: dict[str, float] = {}
        self._leeway = leeway_s
        self._refetch_every = refetch_every_s
        # sha256(token) -> (realm, the KeySet that verified it, its verified claims), most recent last.
        self._verified: OrderedDict[bytes, tuple[str, KeySet, dict[str, Any]]] = OrderedDict()

    async def _keyset(self, realm: str, force: bool, wait: bool = False) -> KeySet | None:
        now = time.monotonic()
        if realm in self._sets and not force:
            return self._sets[realm]
        last = self._fetched_at.get(realm, -1e9)
        if force and now - last < self._refetch_every:
            if not wait:
                return self._sets.get(realm)
            # A token Keycloak has just accepted (a realm that began signing with a new key moments ago):
            # worth the rest of the interval, at most refetch_every_s, instead of calling it unverified.
            await asyncio.sleep(self._refetch_every - (now - last))
            if self._fetched_at.get(realm, -1e9) != last:  # another caller refetched meanwhile
                return self._sets.get(realm)
            now = time.monotonic()
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

    async def verify(self, token: str, *, check_expiry: bool = True, fresh_keys: bool = False) -> dict[str, Any] | None:
        """Claims of a validly signed (and, unless told otherwise, unexpired) token, or None.

        `check_expiry=False` is for an `id_token_hint`, which Keycloak accepts after it expired.
        `fresh_keys=True` refetches the realm's keys first (within the same rate limit): for a
        token Keycloak has just accepted although it did not verify here.
        """
        if not isinstance(token, str) or len(token) > _MAX_TOKEN:
            return None
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        seen = None if fresh_keys else self._verified.get(digest)
        if seen is not None and self._sets.get(seen[0]) is seen[1]:
            # SECURITY: verified before against the key set still in use; a refetched set invalidates this.
            self._verified.move_to_end(digest)
            return self._checked(seen[0], seen[2], check_expiry)
        claims = unverified_claims(token)
        if claims is None:
            return None
        realm = realm_of_issuer(claims.get("iss"))
        header = _header(token)
        alg, kid = header.get("alg"), header.get("kid")
        if realm is None or alg not in ASYMMETRIC_ALGS or (kid is not None and not isinstance(kid, str)):
            return None
        keyset = await self._keyset(realm, force=fresh_keys, wait=fresh_keys)
        if keyset is not None and kid is not None and not any(k.kid == kid for k in keyset.keys):
            keyset = await self._keyset(realm, force=True, wait=fresh_keys)  # the realm may have rotated its keys
        if keyset is None:
            return None
        # SECURITY: one key, one algorithm: the key the header names, with the algorithm that key declares.
        candidates = [k for k in keyset.keys if (kid is None or k.kid == kid) and k.get("alg", alg) == alg]
        if len(candidates) != 1:
            return None
        try:
            with warnings.catch_warnings():
                # RFC 9864 deprecates the name "EdDSA" for "Ed25519"; Keycloak 26 still signs with "EdDSA".
                warnings.simplefilter("ignore", SecurityWarning)
                decoded = jwt.decode(token, candidates[0], algorithms=[str(alg)])
        except (JoseError, ValueError, TypeError):
            return None
        self._verified[digest] = (realm, keyset, decoded.claims)
        self._verified.move_to_end(digest)
        while len(self._verified) > _VERIFIED_MAX:
            self._verified.popitem(last=False)
        return self._checked(realm, decoded.claims, check_expiry)

    def _checked(self, realm: str, claims: dict[str, Any], check_expiry: bool) -> dict[str, Any] | None:
        """A verified token's claims for the caller (a copy, with `_realm`), if unexpired when that is asked."""
        if check_expiry:
            try:
                jwt.JWTClaimsRegistry(leeway=self._leeway).validate(claims)
            except (JoseError, ValueError, TypeError):
                return None
        out = dict(claims)
        out["_realm"] = realm
        return out


def _header(token: str) -> dict[str, Any]:
    head = token.split(".", 1)[0]
    if len(head) > 4096:
        return {}
    try:
        obj = orjson.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        return {}
    return obj if isinstance(obj, dict) else {}
