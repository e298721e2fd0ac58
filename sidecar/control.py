"""The operator's control channel: a unix socket in the data directory that only the operator reaches.

`sidecar serve` is the ledger's only writer, so work that must append while it runs (today: erasing
a subject, docs/operations.md §3.1) is handed to it here instead of opening the ledger a second time.

* `<data>/control.sock`, mode 0600 (the data directory is the sidecar's own), and every connection's
  peer credentials (SO_PEERCRED) must be the sidecar's own user or root: anyone else gets 403.
* One endpoint: `POST /erase {"subject", "by", "reason"}` answers the erasure result
  (sidecar.ledger.subjects.erase_with) or `{"error": ...}`. Bodies are bounded; fields are checked.
* No socket is left behind: it is removed when the sidecar stops (and a stale one replaced at start;
  the ledger's lock already proves no other sidecar uses this directory).
"""

from __future__ import annotations

import logging
import os
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from sidecar.errors import ConfigError, SidecarError, StorageError

log = logging.getLogger("sidecar.control")

SOCKET = "control.sock"
_MAX_PATH = 107  # sun_path holds 108 bytes with its NUL
_LIMITS = {"subject": 256, "by": 128, "reason": 1024}

Erase = Callable[[str, str, str], Awaitable[dict[str, Any]]]


def socket_path(data_dir: Path) -> Path:
    return data_dir / SOCKET


def _peer_uid(request: web.Request) -> int | None:
    sock = request.transport.get_extra_info("socket") if request.transport is not None else None
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def make_control_app(erase: Erase) -> web.Application:
    own = os.getuid()

    async def erase_handler(request: web.Request) -> web.Response:
        if _peer_uid(request) not in (own, 0):
            return web.json_response({"error": "not the sidecar's user"}, status=403)
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "body is not JSON"}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"error": "body is not an object"}, status=400)
        for name, limit in _LIMITS.items():
            value = body.get(name)
            if not isinstance(value, str) or not value or len(value) > limit:
                return web.json_response({"error": f"{name}: a string of 1..{limit} characters"}, status=400)
        try:
            result = await erase(body["subject"], body["by"], body["reason"])
        except ConfigError as exc:
            return web.json_response({"error": str(exc)}, status=404)
        except SidecarError as exc:
            return web.json_response({"error": str(exc)}, status=503)
        log.info("subject erased over the control channel (record %s)", result.get("seq"))
        return web.json_response(result)

    app = web.Application(client_max_size=16 * 1024)
    app.router.add_post("/erase", erase_handler)
    return app


async def serve_control(data_dir: Path, erase: Erase) -> AsyncIterator[None]:
    """Listen on `<data>/control.sock` while the sidecar runs (an async generator: one cleanup_ctx entry)."""
    path = socket_path(data_dir)
    if len(os.fsencode(path)) > _MAX_PATH:
        log.warning(
            "no control channel: %s is longer than a unix socket path may be; stop the sidecar to erase subjects",
            path,
        )
        yield
        return
    path.unlink(missing_ok=True)  # stale, from a sidecar that died: the ledger's lock is ours
    runner = web.AppRunner(make_control_app(erase), access_log=None)
    await runner.setup()
    try:
        await web.UnixSite(runner, str(path)).start()
        os.chmod(path, 0o600)
        yield
    finally:
        await runner.cleanup()
        path.unlink(missing_ok=True)


async def request_erase(data_dir: Path, subject: str, by: str, reason: str) -> dict[str, Any] | None:
    """Ask the running sidecar to erase; None when no sidecar listens (the caller erases itself)."""
    path = socket_path(data_dir)
    if not path.exists():
        return None
    connector = aiohttp.UnixConnector(path=str(path))
    try:
        async with (
            aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=300)) as http,
            http.post("http://sidecar/erase", json={"subject": subject, "by": by, "reason": reason}) as resp,
        ):
            answer = await resp.json(content_type=None)
            status = resp.status
    except (aiohttp.ClientConnectorError, FileNotFoundError):
        return None  # a socket left by a sidecar that is gone
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise StorageError(f"the running sidecar did not answer the erasure ({type(exc).__name__})") from exc
    if status == 200 and isinstance(answer, dict) and "error" not in answer:
        return {**answer, "via": "sidecar"}
    message = answer.get("error") if isinstance(answer, dict) else None
    if status == 404:
        raise ConfigError(str(message))
    raise StorageError(f"the running sidecar refused the erasure ({status}): {message}")
