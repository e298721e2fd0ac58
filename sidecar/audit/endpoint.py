"""The auditor endpoint: the ledger served read-only to authenticated auditors.

    GET /.sidecar/audit/objects          JSON list of {key, size}, in the remote-store layout
    GET /.sidecar/audit/objects/<key>    the bytes of one object

Access needs a Keycloak-issued bearer token, verified against the realm's JWKS,
from the configured realm and carrying the configured realm role. Keys are
validated by the same rule as the stores and must name a ledger object, so no
path can leave the data directory. Every read is itself a ledger record
(`audit.read`); if it cannot be written and the policy says so, the read is
refused (503).

Only committed bytes are served: an open segment up to its last checkpoint.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from sidecar.capture.tokens import TokenVerifier
from sidecar.core.events import EventType, IdentityEvent, Outcome, Party
from sidecar.core.note import Checkpoint, split_note
from sidecar.core.segment import SEGMENT_DIR, segment_number
from sidecar.errors import OverloadError, StorageError
from sidecar.replicate.layout import checkpoint_key, chunk_key, parse_key, segment_key
from sidecar.replicate.replicator import _read_from, _scan_new
from sidecar.replicate.store import key_problem

log = logging.getLogger("sidecar.audit")
Appender = Callable[[IdentityEvent], Awaitable[Any]]


def _snapshot(data_dir: Path) -> dict[str, tuple[Path, int, int]]:
    """key -> (file, start offset, length) for every object the auditor may read now."""
    out: dict[str, tuple[Path, int, int]] = {}
    seg_dir = data_dir / SEGMENT_DIR
    files = sorted((p for p in seg_dir.iterdir() if segment_number(p.name) is not None), key=lambda p: p.name)
    newest: tuple[Path, int, bytes] | None = None
    for path in files:
        n = segment_number(path.name)
        assert n is not None
        data = _read_from(path, 0)
        end, sealed, latest = _scan_new(data)
        if sealed:
            out[segment_key(n)] = (path, 0, len(data))
        elif end:
            out[chunk_key(n, 0)] = (path, 0, end)
        if latest is not None:
            newest = (path, data.rfind(latest), latest)
    if newest is not None:  # the newest signed checkpoint: it pins the tail an auditor must find
        path, start, note = newest
        cp = Checkpoint.parse_body(split_note(note)[0])
        out[checkpoint_key(cp.size, cp.time_ns)] = (path, start, len(note))
    return out


def add_audit_routes(app: web.Application, data_dir: Path, tokens: TokenVerifier, append: Appender, *,
                     realm: str, role: str, fail_closed: bool) -> None:
    async def authorize(request: web.Request) -> dict[str, Any]:
        auth = request.headers.get("Authorization", "")
        if not auth.lower().startswith("bearer "):
            raise web.HTTPUnauthorized(text="auditor token required\n",
                                       headers={"WWW-Authenticate": 'Bearer realm="sidecar-audit"'})
        claims = await tokens.verify(auth[7:].strip())
        if claims is None:
            raise web.HTTPUnauthorized(text="invalid or expired token\n",
                                       headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        roles = (claims.get("realm_access") or {}).get("roles") or []
        if claims.get("_realm") != realm or role not in roles:
            raise web.HTTPForbidden(text=f"token lacks the {role} role of realm {realm}\n")
        return claims

    async def record(request: web.Request, claims: dict[str, Any], what: str, outcome: Outcome) -> None:
        event = IdentityEvent(EventType.AUDIT_READ, outcome, realm=realm, source_ip=request.remote,
                              actor=Party(id=claims.get("sub"), username=claims.get("preferred_username"),
                                          client=claims.get("azp"), kind="user"),
                              client=claims.get("azp"), session=claims.get("sid"), details={"object": what})
        try:
            await append(event)
        except (StorageError, OverloadError) as exc:
            if fail_closed:
                raise web.HTTPServiceUnavailable(text="audit log unavailable, retry later\n",
                                                 headers={"Retry-After": "5"}) from exc
            log.error("UNRECORDED audit read of %s: %s", what, exc)

    async def list_objects(request: web.Request) -> web.Response:
        claims = await authorize(request)
        snap = await asyncio.to_thread(_snapshot, data_dir)
        await record(request, claims, "list", Outcome.SUCCEEDED)
        return web.json_response([{"key": k, "size": v[2]} for k, v in sorted(snap.items())])

    async def get_object(request: web.Request) -> web.Response:
        claims = await authorize(request)
        key = request.match_info["key"]
        # SECURITY: the store key rule refuses '..', '.', absolute and empty segments; parse_key then
        # accepts only the ledger layout, so nothing outside the segment files is reachable.
        problem = key_problem(key)
        if problem is not None or parse_key(key) is None:
            raise web.HTTPBadRequest(text=f"not a ledger object key: {problem or 'outside the layout'}\n")
        snap = await asyncio.to_thread(_snapshot, data_dir)
        if key not in snap:
            raise web.HTTPNotFound(text="no such object\n")
        path, start, length = snap[key]
        data = (await asyncio.to_thread(_read_from, path, start))[:length]
        await record(request, claims, key, Outcome.SUCCEEDED)
        return web.Response(body=data, content_type="application/octet-stream")

    app.router.add_get("/.sidecar/audit/objects", list_objects)
    app.router.add_get("/.sidecar/audit/objects/{key:.+}", get_object)
