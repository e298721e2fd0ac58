"""Loading the recorded Keycloak exchanges (tests/capture/exchanges/*.json) back into capture values.

Each file holds one exchange as the capture layer saw it, with secrets replaced by placeholders
(tests/capture/redact.py), and `facts`: ids and names the recording knew to be true. `load()` rebuilds
the `RequestView` / `ResponseView` the classifier takes; `claims()` reads the (unsigned, re-encoded)
JWT claims the hooks would have verified or decoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import orjson
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

from sidecar.capture.tokens import unverified_claims
from sidecar.core.exchange import RequestHead, RequestView, ResponseView

DIR = Path(__file__).resolve().parent / "exchanges"
HOST = "127.0.0.1:8443"  # the recorded Host header is dropped (its port differs per run)


@dataclass(frozen=True)
class Recorded:
    name: str
    description: str
    request: RequestView
    response: ResponseView
    facts: dict[str, Any]
    raw: dict[str, Any]

    def set_cookie(self, name: str) -> str | None:
        """The value a Set-Cookie of the response gives `name` (the first one), if any."""
        for key, value in self.response.headers.items():
            if key.lower() == "set-cookie":
                cookie, _, _ = value.partition(";")
                k, _, v = cookie.partition("=")
                if k.strip() == name:
                    return v
        return None

    def identity(self) -> dict[str, Any] | None:
        """Claims of the KEYCLOAK_IDENTITY cookie the response sets (what the hooks decode)."""
        value = self.set_cookie("KEYCLOAK_IDENTITY")
        return unverified_claims(value) if value else None

    def response_claims(self, key: str) -> dict[str, Any] | None:
        data = self.response.json()
        value = data.get(key) if isinstance(data, dict) else None
        return unverified_claims(value) if isinstance(value, str) else None

    def bearer_claims(self) -> dict[str, Any] | None:
        auth = self.request.headers.get("Authorization", "")
        return unverified_claims(auth[7:]) if auth.lower().startswith("bearer ") else None


def _body(doc: dict[str, Any] | None) -> bytes:
    if not doc:
        return b""
    if "form" in doc:
        return urlencode([(k, v) for k, v in doc["form"]], quote_via=quote).encode()
    if "json" in doc:
        return orjson.dumps(doc["json"])
    return str(doc["text"]).encode()


def names() -> list[str]:
    return sorted(p.stem for p in DIR.glob("*.json"))


def load(name: str) -> Recorded:
    raw = orjson.loads((DIR / f"{name}.json").read_bytes())
    req, resp = raw["request"], raw["response"]
    query = [(k, v) for k, v in req["query"]]
    path = req["path"]
    raw_path = path + ("?" + urlencode(query, quote_via=quote) if query else "")
    headers = CIMultiDict([("Host", HOST), *[(k, v) for k, v in req["headers"]]])
    head = RequestHead(
        method=req["method"],
        path=path,
        raw_path=raw_path,
        query=MultiDictProxy(MultiDict(query)),
        headers=CIMultiDictProxy(headers),
        client_ip=req["client_ip"],
        scheme="http",
        host=HOST,
        request_id=f"rec-{name}",
    )
    request = RequestView(head, _body(req["body"]), False)
    response = ResponseView(
        resp["status"],
        CIMultiDictProxy(CIMultiDict([(k, v) for k, v in resp["headers"]])),
        _body(resp["body"]),
        bool(resp.get("body_truncated")),
    )
    return Recorded(name, raw["description"], request, response, raw["facts"], raw)
