"""From an identity event to the record payload, with the redaction policy applied. [pure]

Records are built from an allowlist of fields (sidecar.capture.classify): request
and response bodies are never copied. As a second line of defence every string
that contains a secret value seen in the same exchange (the policy's
`redaction.fields` of the form and JSON bodies, the Authorization and Cookie
headers, Set-Cookie values) is cut before the record is written.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sidecar.capture.pipeline import basic_client, cookies
from sidecar.core.events import IdentityEvent
from sidecar.core.exchange import RequestView, ResponseView
from sidecar.policy.schema import Policy

_TOKEN_KEYS = ("access_token", "refresh_token", "id_token", "value", "secret", "client_secret")


def scrub(value: Any, secrets: Iterable[str]) -> tuple[Any, bool]:
    """Replace any string that contains one of `secrets` by "[redacted]"; report whether it happened."""
    needles = [s for s in secrets if len(s) >= 4]
    if not needles:
        return value, False
    hit = False

    def walk(v: Any) -> Any:
        nonlocal hit
        if isinstance(v, str):
            if any(n in v for n in needles):
                hit = True
                return "[redacted]"
            return v
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    return walk(value), hit


class Redactor:
    """Applies a policy's redaction rules to the events of one exchange."""

    def __init__(self, policy: Policy) -> None:
        self._fields = frozenset(policy.redaction.fields)

    def record(self, event: IdentityEvent, request: RequestView, response: ResponseView | None) -> tuple[
            dict[str, Any], bool]:
        """The record payload of `event`, and whether a secret value had to be cut from it."""
        payload, hit = scrub(event.to_json(), self._secrets(request, response))
        return payload, hit

    def _secrets(self, request: RequestView, response: ResponseView | None) -> set[str]:
        out: set[str] = set()
        for key, value in request.form().items():
            if key.lower() in self._fields:
                out.add(value)
        for header in ("Authorization", "Cookie"):
            for value in request.headers.getall(header, ()):
                out.add(value)
                out.update(part.split(" ", 1)[-1] for part in value.split(";"))
        out.update(cookies(request.headers, "Cookie").values())
        _, basic_secret = basic_client(request.headers)
        if basic_secret:
            out.add(basic_secret)
        for body in (request.json(), response.json() if response is not None else None):
            if isinstance(body, dict):
                out.update(str(body[k]) for k in body if k.lower() in self._fields or k in _TOKEN_KEYS)
                for cred in body.get("credentials", []) if isinstance(body.get("credentials"), list) else []:
                    if isinstance(cred, dict) and isinstance(cred.get("value"), str):
                        out.add(cred["value"])
        if response is not None:
            out.update(cookies(response.headers, "Set-Cookie").values())
        return {s for s in out if s}
