"""The auditor endpoint: the ledger served read-only to authenticated auditors.

    GET /.sidecar/audit/objects          JSON list of {key, size}, in the remote-store layout
    GET /.sidecar/audit/objects/<key>    the bytes of one object

Access needs a Keycloak-issued bearer token, verified against the realm's JWKS,
from the configured realm and carrying the configured realm role: no token, a
bad signature, an expired token or another realm's token is 401; a valid token
without the role is 403 (and recorded as a failed `audit.read`). With a state
reader for the realm, the role is also re-checked against Keycloak's live state
(`sidecar.audit.access.LiveRoles`, cached a few seconds): a user whose role was
removed or who was disabled gets 403 although the token still names the role,
and a read whose role Keycloak cannot confirm is 503. Failed reads are recorded
rate-limited per requester (`DeniedReads`: one record at once, one aggregate
per window) and always counted (`sidecar_audit_denied`). Keys are
validated by the same rule as the stores and must name a ledger object, so no
path can leave the data directory. Every read is itself a ledger record
(`audit.read`, naming the auditor and the object); if it cannot be written and
the policy says so, the read is refused (503).

Only committed bytes are served: an open segment up to its last checkpoint.
The listing offers sealed segments, the open segment as the chunk
`tail/<n>/0-<end>.chunk` of its committed bytes, and the newest checkpoint; a
GET also finds any older checkpoint still in the WAL, and any chunk
`tail/<n>/<start>-<end>.chunk` whose range is committed (also of a segment
sealed since the listing), so a listing stays usable while the ledger grows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from sidecar import metrics
from sidecar.audit.access import DeniedReads, LiveCheck, LiveRoles, Refusal
from sidecar.capture.tokens import TokenVerifier, realm_of_issuer, unverified_claims
from sidecar.core import framing
from sidecar.core.events import Appender, EventType, IdentityEvent, Outcome, Party
from sidecar.core.note import Checkpoint, NoteError, checkpoint_of
from sidecar.core.segment import SEGMENT_DIR, SegmentHeader, segment_number
from sidecar.errors import OverloadError, RecordRejected, StorageError
from sidecar.replicate.layout import checkpoint_key, chunk_key, parse_key, segment_key
from sidecar.replicate.replicator import _read_from
from sidecar.replicate.store import key_problem

log = logging.getLogger("sidecar.audit")


_BODY_AT = framing.OVERHEAD - 4  # a frame is kind (1) + length (4), the body, then a CRC (4)


@dataclass(frozen=True, slots=True)
class _SegmentIndex:
    """What one segment file offers an auditor now."""

    size: int  # file size when scanned (a sealed file never changes, so its scan is cached)
    end: int  # end of the last header, checkpoint or seal frame: the committed bytes
    sealed: bool
    first_size: int  # tree size at the segment's start (its header's first_seq), -1 if unreadable
    last_size: int  # tree size of its newest checkpoint, -1 if none
    newest: tuple[str, int, int] | None  # (key, offset, length) of its newest checkpoint note


_CACHE: dict[Path, _SegmentIndex] = {}
DENIED_READS = web.AppKey("denied_reads", DeniedReads)


def _checkpoints(data: bytes) -> Iterator[tuple[framing.Frame, Checkpoint | None]]:
    """The header, checkpoint and seal frames of a segment (with the parsed note), up to any damage."""
    for frame in framing.iter_frames(data):
        if isinstance(frame, framing.FrameDamage):
            return
        if frame.kind == framing.HEADER:
            yield frame, None
        elif frame.kind in (framing.CHECKPOINT, framing.SEAL):
            try:
                yield frame, checkpoint_of(frame.body)
            except NoteError:
                yield frame, None  # the verifier reports it; it still ends the committed bytes


def _index_segment(path: Path) -> _SegmentIndex:
    cached = _CACHE.get(path)
    if cached is not None and cached.size == path.stat().st_size:
        return cached
    data = _read_from(path, 0)
    end, sealed, first, last = 0, False, -1, -1
    newest: tuple[str, int, int] | None = None
    for frame, cp in _checkpoints(data):
        end = frame.offset + framing.OVERHEAD + len(frame.body)
        sealed = frame.kind == framing.SEAL
        if frame.kind == framing.HEADER:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                first = SegmentHeader.decode(frame.body).first_seq
        elif cp is not None:
            last = cp.size
            if frame.kind == framing.CHECKPOINT:  # seals are not published as checkpoints (see below)
                newest = (checkpoint_key(cp.size, cp.time_ns), frame.offset + _BODY_AT, len(frame.body))
    index = _SegmentIndex(len(data), end, sealed, first, last, newest)
    if sealed:
        _CACHE[path] = index  # small and fixed per sealed segment
    return index


def _find_checkpoint(path: Path, key: str) -> tuple[Path, int, int] | None:
    """The note stored under a checkpoint key: the checkpoint frame with that size and time.

    A sealing batch writes a checkpoint and then the seal with the same size and time; like the
    replicator, only the checkpoint is published under the key, so a listing taken before the seal
    was written and a fetch after it agree.
    """
    found = None
    for frame, cp in _checkpoints(_read_from(path, 0)):
        if cp is not None and frame.kind == framing.CHECKPOINT and checkpoint_key(cp.size, cp.time_ns) == key:
            found = path, frame.offset + _BODY_AT, len(frame.body)
    return found


def _segments(data_dir: Path) -> list[tuple[int, Path]]:
    seg_dir = data_dir / SEGMENT_DIR
    found = ((segment_number(p.name), p) for p in seg_dir.iterdir())
    return sorted((n, p) for n, p in found if n is not None)


def _snapshot(data_dir: Path) -> dict[str, tuple[Path, int, int]]:
    """key -> (file, start offset, length) for every object the listing offers now.

    Sealed segments whole, the open segment up to its last checkpoint as one chunk at offset 0, and
    the newest signed checkpoint (it pins the tail an auditor must find).
    """
    out: dict[str, tuple[Path, int, int]] = {}
    newest: tuple[str, Path, int, int] | None = None
    for n, path in _segments(data_dir):
        idx = _index_segment(path)
        if idx.sealed:
            out[segment_key(n)] = (path, 0, idx.size)
        elif idx.end:
            out[chunk_key(n, 0, idx.end)] = (path, 0, idx.end)
        if idx.newest is not None:
            newest = (idx.newest[0], path, idx.newest[1], idx.newest[2])
    if newest is not None:
        key, path, start, length = newest
        out[key] = (path, start, length)
    for path in sorted((data_dir / "snapshots").glob("*.json")):  # drift-monitor state snapshots
        if parse_key(f"snapshots/{path.name}") is not None:
            out[f"snapshots/{path.name}"] = (path, 0, path.stat().st_size)
    return out


def _locate(data_dir: Path, key: str) -> tuple[Path, int, int] | None:
    """Where the bytes of a layout key are now, or None.

    Beyond what the listing offers, this serves every checkpoint still in the WAL and
    `tail/<n>/<start>-<end>.chunk` for any segment (open or sealed) whose range is committed:
    the open segment grows and may be sealed between an auditor's list and get.
    """
    parsed = parse_key(key)
    if parsed is None:
        return None
    if parsed.kind == "snapshot":
        snap = data_dir / "snapshots" / f"{parsed.digest}.json"
        return (snap, 0, snap.stat().st_size) if snap.is_file() else None
    segments = _segments(data_dir)
    if parsed.kind == "segment":
        for n, path in segments:
            if n == parsed.segment:
                idx = _index_segment(path)
                return (path, 0, idx.size) if idx.sealed else None
        return None
    if parsed.kind == "chunk":
        for n, path in segments:
            if n == parsed.segment:
                idx = _index_segment(path)
                end = idx.size if idx.sealed else idx.end
                return (path, parsed.offset, parsed.end - parsed.offset) if parsed.end <= end else None
        return None
    for _n, path in reversed(segments):  # a checkpoint: only in a segment whose sizes span it
        idx = _index_segment(path)
        if idx.first_size <= parsed.size <= idx.last_size or idx.first_size < 0:
            found = _find_checkpoint(path, key)
            if found is not None:
                return found
    return None


def _actor(claims: dict[str, Any]) -> dict[str, Any]:
    return {k: claims[k] for k in ("sub", "preferred_username", "azp", "sid") if isinstance(claims.get(k), str)}


def add_audit_routes(
    app: web.Application,
    data_dir: Path,
    tokens: TokenVerifier,
    append: Appender,
    *,
    realm: str,
    role: str,
    fail_closed: bool,
    live: LiveCheck | None = None,
    recheck_s: float = 5.0,
    denied_window_s: float = 60.0,
) -> None:
    roles_now = LiveRoles(live, recheck_s) if live is not None else None
    denied = DeniedReads(denied_window_s)
    if roles_now is None:
        log.warning(
            "auditor endpoint: no state reader for realm %s, so an auditor's role is taken from the token "
            "alone (a removed role or a disabled user keeps access until the token expires); "
            "configure --reader-realm %s",
            realm,
            realm,
        )

    async def record(
        request: web.Request | None,
        claims: dict[str, Any],
        what: str,
        outcome: Outcome,
        error: str | None = None,
        extra: dict[str, Any] | None = None,
        source_ip: str | None = None,
    ) -> None:
        actor = (
            Party(
                id=claims.get("sub"), username=claims.get("preferred_username"), client=claims.get("azp"), kind="user"
            )
            if claims
            else None
        )
        event = IdentityEvent(
            EventType.AUDIT_READ,
            outcome,
            realm=realm,
            source_ip=request.remote if request is not None else source_ip,
            actor=actor,
            client=claims.get("azp"),
            session=claims.get("sid"),
            error=error,
            details={"object": what, **(extra or {})},
        )
        try:
            await append(event)
        except (StorageError, OverloadError, RecordRejected) as exc:
            if fail_closed and outcome is Outcome.SUCCEEDED:
                raise web.HTTPServiceUnavailable(
                    text="audit log unavailable, retry later\n", headers={"Retry-After": "5"}
                ) from exc
            log.error("UNRECORDED audit read (%s) of %s: %s", outcome.value, what, exc)

    async def refuse(request: web.Request, claims: dict[str, Any], what: str, error: str) -> None:
        """A known identity was refused: counted always, recorded at most once per window (then aggregated)."""
        metrics.AUDIT_DENIED.labels(reason=error).inc()
        refusal = Refusal(_actor(claims), request.remote, what, error)
        if denied.note(str(claims.get("sub")), refusal):
            await record(request, claims, what, Outcome.FAILED, error=error)

    async def authorize(request: web.Request, what: str) -> dict[str, Any]:
        auth = request.headers.get("Authorization", "")
        if not auth.lower().startswith("bearer "):
            metrics.AUDIT_DENIED.labels(reason="no_token").inc()
            raise web.HTTPUnauthorized(
                text="auditor token required\n", headers={"WWW-Authenticate": 'Bearer realm="sidecar-audit"'}
            )
        token = auth[7:].strip()
        # Only the auditor realm's keys are ever fetched: a token naming another issuer is refused
        # before its (attacker-chosen) realm reaches the JWKS lookup.
        if realm_of_issuer((unverified_claims(token) or {}).get("iss")) != realm:
            metrics.AUDIT_DENIED.labels(reason="invalid_token").inc()
            raise web.HTTPUnauthorized(
                text=f"not a token of realm {realm}\n", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
            )
        claims = await tokens.verify(token)
        if claims is None or claims.get("_realm") != realm:
            metrics.AUDIT_DENIED.labels(reason="invalid_token").inc()
            raise web.HTTPUnauthorized(
                text="invalid or expired token\n", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
            )
        roles = (claims.get("realm_access") or {}).get("roles") or []
        if not isinstance(roles, list) or role not in roles:
            # A known identity tried to read the audit log without the role: that attempt is a record too.
            await refuse(request, claims, what, "forbidden")
            raise web.HTTPForbidden(text=f"token lacks the {role} role of realm {realm}\n")
        if roles_now is not None:
            # SECURITY: the token's roles are as of its issue; Keycloak's live state decides now.
            why = (
                await roles_now.refusal(realm, str(claims.get("sub")), role)
                if isinstance(claims.get("sub"), str)
                else "unconfirmed"
            )
            if why == "unconfirmed":
                metrics.AUDIT_DENIED.labels(reason=why).inc()
                raise web.HTTPServiceUnavailable(
                    text="cannot confirm the auditor role with Keycloak, retry later\n", headers={"Retry-After": "5"}
                )
            if why is not None:
                await refuse(request, claims, what, why)
                raise web.HTTPForbidden(text=f"the {role} role of realm {realm} is not held now ({why})\n")
        return claims

    async def flush(all_windows: bool = False) -> None:
        for refusal, suppressed, objects in denied.due(all_windows=all_windows):
            await record(
                None,
                {**refusal.actor},
                refusal.what,
                Outcome.FAILED,
                error=refusal.error,
                source_ip=refusal.source_ip,
                extra={
                    "aggregated": True,
                    "suppressed": suppressed,
                    "objects": objects,
                    # Records carry no floats (canonical encoding): whole seconds.
                    "window_s": max(1, round(denied.window_s)),
                },
            )

    async def flusher(app: web.Application) -> AsyncIterator[None]:
        """One aggregated record per requester and window, written when the window closes."""

        async def loop() -> None:
            while True:
                await asyncio.sleep(max(0.05, denied.window_s / 4))
                await flush()

        task = asyncio.get_running_loop().create_task(loop(), name="audit-denied-flusher")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await flush(all_windows=True)

    async def list_objects(request: web.Request) -> web.Response:
        claims = await authorize(request, "list")
        snap = await asyncio.to_thread(_snapshot, data_dir)
        await record(request, claims, "list", Outcome.SUCCEEDED)
        return web.json_response(
            [{"key": k, "size": v[2]} for k, v in sorted(snap.items())], headers={"Cache-Control": "no-store"}
        )

    async def get_object(request: web.Request) -> web.Response:
        key = request.match_info["key"]
        claims = await authorize(request, key if key_problem(key) is None else "<invalid key>")
        # SECURITY: the store key rule refuses '..', '.', absolute and empty segments and anything
        # outside [A-Za-z0-9._-] (so no '%' escapes); parse_key then accepts only the ledger layout,
        # and the bytes come from segment files listed in segments/ only, never from a path built
        # out of the key.
        problem = key_problem(key)
        if problem is not None or parse_key(key) is None:
            raise web.HTTPBadRequest(text=f"not a ledger object key: {problem or 'outside the layout'}\n")
        where = await asyncio.to_thread(_locate, data_dir, key)
        if where is None:
            raise web.HTTPNotFound(text="no such object\n")
        path, start, length = where
        data = await asyncio.to_thread(_read_from, path, start, start + length)
        await record(request, claims, key, Outcome.SUCCEEDED)
        return web.Response(body=data, content_type="application/octet-stream", headers={"Cache-Control": "no-store"})

    app[DENIED_READS] = denied
    app.cleanup_ctx.append(flusher)
    app.router.add_get("/.sidecar/audit/objects", list_objects)
    app.router.add_get("/.sidecar/audit/objects/{key:.+}", get_object)
