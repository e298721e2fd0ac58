"""Turning a recorded Keycloak exchange into JSON that holds no secret, for tests/capture/exchanges/.

Every password, OTP code, TOTP seed, authorization code, session code, client secret, cookie value and
token is replaced by a fixed placeholder (`PASSWORD-1`, `COOKIE-AUTH_SESSION_ID-1`, ...). The same raw
value always gets the same placeholder, so the steps of one login still correlate. A JWT is replaced by
an unsigned JWT (`alg: none`, signature `REDACTED`) with the same claims, because the classifier reads
claims (`sub`, `sid`, `azp`, `preferred_username`); claims that are secrets or hashes of secrets
(`state_checker`, `at_hash`, `c_hash`) are replaced too.

`Redactor.check` is the backstop: the written text must contain none of the raw values it replaced.
"""

from __future__ import annotations

import base64
import html
import re
from collections import Counter
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, urlencode, urlsplit, urlunsplit

import orjson

from sidecar.capture.tokens import unverified_claims

# Form fields and query parameters whose values are secrets.
SECRET_FIELDS = frozenset(
    {
        "password",
        "password-new",
        "password-confirm",
        "otp",
        "totp",
        "totpSecret",
        "client_secret",
        "code",
        "code_verifier",
        "code_challenge",
        "client_assertion",
        "session_code",
        "key",
        "secret",
        "value",
        "auth_session_id",
        "userHandle",
        "signature",
        "clientDataJSON",
        "authenticatorData",
        "attestationObject",
    }
)
# Fields that carry a JWT: kept as an unsigned JWT with the same claims.
JWT_FIELDS = frozenset(
    {"access_token", "refresh_token", "id_token", "id_token_hint", "token", "subject_token", "logout_token"}
)
_SECRET_CLAIMS = frozenset({"state_checker", "at_hash", "c_hash", "s_hash"})
_FAKE_HEADER = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Redactor:
    """Stable raw -> placeholder mapping for one recording session."""

    def __init__(self) -> None:
        self._map: dict[str, str] = {}
        self._counts: Counter[str] = Counter()
        self.secrets: set[str] = set()

    def secret(self, kind: str, raw: str) -> str:
        """The placeholder for a secret value (empty stays empty)."""
        if not raw:
            return raw
        if raw in self._map:
            return self._map[raw]
        if raw in self._map.values():  # already a placeholder
            return raw
        self._counts[kind] += 1
        out = f"{kind.upper()}-{self._counts[kind]}"
        self._map[raw] = out
        self.secrets.add(raw)
        return out

    def jwt(self, raw: str) -> str:
        """An unsigned JWT with the claims of `raw` (secret claims replaced), or a placeholder."""
        if not raw:
            return raw
        if raw in self._map:
            return self._map[raw]
        claims = unverified_claims(raw)
        if claims is None:
            return self.secret("token", raw)
        for name in _SECRET_CLAIMS & claims.keys():
            claims[name] = self.secret(f"claim-{name}", str(claims[name]))
        fake = f"{_FAKE_HEADER}.{_b64(orjson.dumps(claims))}.REDACTED"
        self._map[raw] = fake
        self.secrets.add(raw)
        self.secrets.add(raw.rsplit(".", 1)[-1])  # the signature alone
        return fake

    def field(self, name: str, value: str) -> str:
        if name in JWT_FIELDS:
            return self.jwt(value)
        if name in SECRET_FIELDS:
            return self.secret(name, value)
        return value

    def pairs(self, items: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return [(k, self.field(k, v)) for k, v in items]

    def url(self, url: str) -> str:
        """A URL with secret query (and fragment) parameters replaced."""
        parts = urlsplit(url)
        query = urlencode(self.pairs(parse_qsl(parts.query, keep_blank_values=True)), quote_via=quote)
        fragment = parts.fragment
        if "=" in fragment:
            fragment = urlencode(self.pairs(parse_qsl(fragment, keep_blank_values=True)), quote_via=quote)
        return urlunsplit((parts.scheme, parts.netloc, parts.path, query, fragment))

    def cookie_value(self, name: str, value: str) -> str:
        if name == "KEYCLOAK_IDENTITY" and unverified_claims(value) is not None:
            return self.jwt(value)
        return self.secret(f"cookie-{name}", value)

    def cookie_header(self, value: str) -> str:
        out = []
        for part in value.split(";"):
            name, sep, val = part.strip().partition("=")
            out.append(f"{name}{sep}{self.cookie_value(name, val)}" if sep else part.strip())
        return "; ".join(out)

    def set_cookie(self, value: str) -> str:
        first, sep, attrs = value.partition(";")
        name, eq, val = first.partition("=")
        return f"{name}{eq}{self.cookie_value(name.strip(), val)}{sep}{attrs}"

    def authorization(self, value: str) -> str:
        scheme, _, cred = value.partition(" ")
        if scheme.lower() == "bearer":
            return f"{scheme} {self.jwt(cred.strip())}"
        if scheme.lower() == "basic":
            user, _, secret = base64.b64decode(cred).decode().partition(":")
            self.secrets.add(cred)
            fake = base64.b64encode(f"{user}:{self.secret('client_secret', secret)}".encode()).decode()
            return f"{scheme} {fake}"
        return self.secret("authorization", value)

    def headers(self, items: list[tuple[str, str]]) -> list[tuple[str, str]]:
        out = []
        for name, value in items:
            low = name.lower()
            if low in ("content-length", "content-encoding", "transfer-encoding"):
                continue  # bodies are stored decoded and possibly trimmed
            if low == "cookie":
                value = self.cookie_header(value)
            elif low == "set-cookie":
                value = self.set_cookie(value)
            elif low == "authorization":
                value = self.authorization(value)
            elif low in ("location", "referer", "origin"):
                value = self.url(value)
            out.append((name, value))
        return out

    def json(self, value: Any) -> Any:
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                if isinstance(v, str) and k in JWT_FIELDS:
                    out[k] = self.jwt(v)
                elif isinstance(v, str) and k in SECRET_FIELDS:
                    out[k] = self.secret(k, v)
                elif isinstance(v, str) and k in ("redirect", "redirect_uri", "accountLinkUri"):
                    out[k] = self.url(v)
                else:
                    out[k] = self.json(v)
            return out
        if isinstance(value, list):
            return [self.json(v) for v in value]
        return value

    def html(self, text: str) -> str:
        """A login page trimmed to what capture reads: page id, template comment, forms, messages."""
        text = re.sub(r"<head\b.*?</head>", "", text, flags=re.S | re.I)
        text = re.sub(r"<(script|style|svg)\b.*?</\1>", "", text, flags=re.S | re.I)
        text = re.sub(r'<img\b[^>]*src="data:[^"]*"[^>]*>', '<img src="data:REDACTED">', text, flags=re.S | re.I)
        # URLs in attributes (form actions, links) carry session codes
        text = re.sub(
            r'((?:action|href)=")([^"]*)(")',
            lambda m: m.group(1) + html.escape(self.url(html.unescape(m.group(2)))) + m.group(3),
            text,
        )
        text = re.sub(
            r'(name="(?:totpSecret|session_code)"[^>]*value=")([^"]*)(")',
            lambda m: (
                m.group(1)
                + self.secret("totpSecret" if "totp" in m.group(0) else "session_code", html.unescape(m.group(2)))
                + m.group(3)
            ),
            text,
        )
        text = re.sub(
            r'(value=")([^"]*)("[^>]*name="(?:totpSecret|session_code)")',
            lambda m: m.group(1) + self.secret("totpSecret", html.unescape(m.group(2))) + m.group(3),
            text,
        )
        text = re.sub(
            r'(id="kc-totp-secret-key">)([^<]*)(<)',
            lambda m: m.group(1) + self.secret("totp-key", m.group(2).strip()) + m.group(3),
            text,
        )
        text = re.sub(r"\n\s*\n+", "\n", text)
        return self.replace_known(text)

    def replace_known(self, text: str) -> str:
        """Replace every raw secret seen so far that occurs literally in `text`."""
        for raw in sorted(self.secrets, key=len, reverse=True):
            if len(raw) >= 8 and raw in text:
                text = text.replace(raw, self._map.get(raw, "REDACTED"))
        return text

    def check(self, text: str) -> list[str]:
        """Raw secrets (or their URL-encoded forms) still present in `text`; must be empty."""
        leaks = []
        for raw in self.secrets:
            if len(raw) < 4:
                continue
            forms = {raw, quote(raw, safe=""), quote_plus(raw), html.escape(raw)}
            for f in forms:
                if f.isdigit():
                    if re.search(rf"(?<!\d){f}(?!\d)", text):
                        leaks.append(raw[:4] + "...")
                elif f in text:
                    leaks.append(raw[:4] + "...")
        return sorted(set(leaks))
