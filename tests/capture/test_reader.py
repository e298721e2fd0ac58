"""The state reader's own logins are recorded whatever Keycloak answers (sidecar.capture.reader)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from sidecar.capture.reader import KeycloakReader


async def _serve(handler: Any) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/realms/r/protocol/openid-connect/token", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # aiohttp keeps the bound socket
    return runner, f"http://127.0.0.1:{port}"


async def test_a_login_whose_answer_never_comes_is_reported_unknown() -> None:
    """No answer in time: the reader reports its login attempt with ok=None (Keycloak may have issued a token)."""
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({"access_token": "x", "expires_in": 60})

    runner, base = await _serve(slow)
    seen: list[tuple[bool | None, str | None]] = []

    async def on_login(ok: bool | None, error: str | None, claims: dict[str, Any]) -> None:
        seen.append((ok, error))

    reader = KeycloakReader(base, "r", "robot", "s3cret-value", timeout_s=0.2, on_login=on_login)
    await reader.start()
    try:
        assert await reader.read("r", "") is None
    finally:
        release.set()
        await reader.close()
        await runner.cleanup()
    assert seen == [(None, "no_answer:TimeoutError")]


async def test_a_refused_login_is_reported_failed() -> None:
    """Keycloak refusing the client's credentials is reported with ok=False and its error code."""

    async def refuse(request: web.Request) -> web.Response:
        return web.json_response({"error": "unauthorized_client"}, status=401)

    runner, base = await _serve(refuse)
    seen: list[tuple[bool | None, str | None]] = []

    async def on_login(ok: bool | None, error: str | None, claims: dict[str, Any]) -> None:
        seen.append((ok, error))

    reader = KeycloakReader(base, "r", "robot", "s3cret-value", timeout_s=5.0, on_login=on_login)
    await reader.start()
    try:
        assert await reader.read("r", "") is None
    finally:
        await reader.close()
        await runner.cleanup()
    assert seen == [(False, "unauthorized_client")]
