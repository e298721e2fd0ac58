"""RFC 6238 TOTP codes as Keycloak's default OTP policy computes them (HmacSHA1, 6 digits, 30 s).

Keycloak's HMAC key is the raw ASCII bytes of the `totpSecret` it shows (the hidden form field, or the
account console's manual-mode key with the spaces removed, base32-decoded), not a base32 decoding of
the hidden value.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time


def code(secret: bytes, at: float | None = None, *, step: int = 30, digits: int = 6) -> str:
    """The TOTP code for `secret` at time `at` (now by default)."""
    counter = int((time.time() if at is None else at) // step)
    mac = hmac.new(secret, counter.to_bytes(8, "big"), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = (int.from_bytes(mac[offset : offset + 4], "big") & 0x7FFFFFFF) % 10**digits
    return f"{value:0{digits}d}"


def secret_from_hidden_field(value: str) -> bytes:
    """The key behind the `totpSecret` hidden field of login-config-totp.ftl."""
    return value.encode("ascii")


def secret_from_manual_key(shown: str) -> bytes:
    """The key behind the base32 text shown in manual mode ("ABCD EFGH ..."), spaces ignored."""
    compact = shown.replace(" ", "").strip().upper()
    return base64.b32decode(compact + "=" * (-len(compact) % 8))
