"""Token verification: every asymmetric algorithm Keycloak signs with, each pinned to its key's own `alg`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import warnings
from typing import Any

import orjson
import pytest
from joserfc import jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, KeyParameters, OKPKey, RSAKey

from sidecar.capture.tokens import Claims, TokenVerifier

ISS = "http://sso.test/realms/r"


def _key(alg: str, kid: str) -> Any:
    params: KeyParameters = {"kid": kid, "alg": alg, "use": "sig"}
    if alg.startswith(("RS", "PS")):
        return RSAKey.generate_key(2048, parameters=params)
    if alg.startswith("ES"):
        return ECKey.generate_key({"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}[alg], parameters=params)
    return OKPKey.generate_key("Ed25519", parameters=params)


def _sign(key: Any, alg: str, claims: dict[str, Any], kid: str | None = None) -> str:
    header = {"alg": alg, "typ": "JWT", "kid": kid or key.kid}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)  # "EdDSA" is deprecated by RFC 9864; Keycloak uses it
        return jwt.encode(header, claims, key, algorithms=[alg])


def _verifier(*keys: Any) -> TokenVerifier:
    async def fetch(realm: str) -> dict[str, Any] | None:
        assert realm == "r"
        return {"keys": [k.as_dict(private=False) for k in keys]}

    return TokenVerifier(fetch)


def _claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": ISS, "sub": "u-1", "sid": "s-1", "azp": "app", "iat": now, "exp": now + 300, **extra}


@pytest.mark.parametrize(
    "alg", ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
)
async def test_every_keycloak_algorithm_verifies(alg: str) -> None:
    """A token signed with any algorithm Keycloak offers verifies against a JWK declaring that algorithm."""
    key = _key(alg, f"k-{alg}")
    other = _key("RS256", "k-other")
    claims = await _verifier(other, key).verify(_sign(key, alg, _claims()))
    assert claims is not None and claims["sub"] == "u-1" and claims["_realm"] == "r"


async def test_header_algorithm_must_be_the_keys_own() -> None:
    """An RSA key published for PS256 does not verify a token whose header says RS256, although the maths would."""
    key = _key("PS256", "k1")
    rs_key = RSAKey.import_key(key.as_dict(private=True) | {"alg": "RS256"})
    token = _sign(rs_key, "RS256", _claims(), kid="k1")
    assert await _verifier(key).verify(token) is None


async def test_symmetric_and_none_never_verify() -> None:
    """HS256 keyed with the published public key, and alg=none, are refused."""
    key = _key("RS256", "k1")
    public_pem = key.as_pem(private=False)
    body = base64.urlsafe_b64encode(orjson.dumps(_claims())).rstrip(b"=").decode()
    none = base64.urlsafe_b64encode(b'{"alg":"none","kid":"k1"}').rstrip(b"=").decode()
    hs_head = base64.urlsafe_b64encode(b'{"alg":"HS256","kid":"k1"}').rstrip(b"=").decode()
    mac = hmac.new(public_pem, f"{hs_head}.{body}".encode(), hashlib.sha256).digest()
    hs = f"{hs_head}.{body}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    verifier = _verifier(key)
    assert await verifier.verify(f"{none}.{body}.") is None
    assert await verifier.verify(hs) is None


async def test_expired_token_verifies_only_when_expiry_is_not_checked() -> None:
    """An expired but genuine token fails by default and passes with check_expiry=False (id_token_hint)."""
    key = _key("ES256", "k1")
    token = _sign(key, "ES256", _claims(exp=int(time.time()) - 3600))
    verifier = _verifier(key)
    assert await verifier.verify(token) is None
    assert (await verifier.verify(token, check_expiry=False) or {}).get("sub") == "u-1"


async def test_forged_signature_and_odd_shapes_are_refused() -> None:
    """A token signed by a key the realm does not publish, or with hostile claim shapes, verifies as None."""
    key, stranger = _key("RS256", "k1"), _key("RS256", "k1")
    verifier = _verifier(key)
    assert await verifier.verify(_sign(stranger, "RS256", _claims())) is None
    assert await verifier.verify("a.b") is None
    assert await verifier.verify("x" * 100_000) is None


def test_claims_view_is_bounded_strings() -> None:
    """The claims view keeps only bounded strings: a float sub, an object sid and a 700 KB name are tamed."""
    view = Claims.of({"sub": 1.5, "sid": {"x": 1}, "preferred_username": "n" * 700_000, "azp": 2**60}, verified=False)
    assert view is not None
    assert view.sub is None and view.sid is None and view.azp == str(2**60)
    assert view.preferred_username is not None and len(view.preferred_username) == 255
    assert Claims.of(None, verified=False) is None


async def test_remembered_token_is_verified_again_after_the_realm_changes_its_keys() -> None:
    """A token verified once stops verifying once a refetched JWKS no longer publishes its key."""
    old, new = _key("RS256", "k-old"), _key("RS256", "k-new")
    published = [old]

    async def fetch(realm: str) -> dict[str, Any] | None:
        return {"keys": [k.as_dict(private=False) for k in published]}

    verifier = TokenVerifier(fetch, refetch_every_s=0.0)
    token = _sign(old, "RS256", _claims())
    assert (await verifier.verify(token) or {}).get("sub") == "u-1"
    assert (await verifier.verify(token) or {}).get("sub") == "u-1"  # remembered
    published[:] = [new]
    # A token naming an unknown key id makes the verifier refetch: the realm now publishes only k-new.
    assert (await verifier.verify(_sign(new, "RS256", _claims()))) is not None
    assert await verifier.verify(token) is None


async def test_remembered_token_is_checked_for_expiry_at_every_presentation(monkeypatch: pytest.MonkeyPatch) -> None:
    """A remembered token that has since expired is refused, and still passes with check_expiry=False."""
    key = _key("ES256", "k1")
    token = _sign(key, "ES256", _claims())
    verifier = _verifier(key)
    assert await verifier.verify(token) is not None
    later = time.time() + 3600
    monkeypatch.setattr(time, "time", lambda: later)
    assert await verifier.verify(token) is None
    assert await verifier.verify(token, check_expiry=False) is not None


async def test_a_changed_byte_of_a_remembered_token_is_refused() -> None:
    """Remembering a verified token does not vouch for any other spelling of it (a flipped signature byte)."""
    key = _key("RS256", "k1")
    token = _sign(key, "RS256", _claims())
    verifier = _verifier(key)
    assert await verifier.verify(token) is not None
    head, body, sig = token.split(".")
    flipped = sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:]
    assert await verifier.verify(f"{head}.{body}.{flipped}") is None
    assert await verifier.verify(token) is not None
    returned = await verifier.verify(token)
    assert returned is not None
    returned["sub"] = "someone-else"  # a caller's copy: the remembered claims stay as verified
    assert (await verifier.verify(token) or {}).get("sub") == "u-1"
