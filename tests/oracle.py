"""Keycloak's own event store as the test oracle for the ledger (promise P1).

Reads user events and admin events straight from Keycloak (not through the
sidecar), maps each to the ledger record kind it must have, and matches them.
A match needs the same kind, the same actor, the same target (for admin
events) and the same outcome. `match()` returns the table per kind, the
Keycloak events without a record, and the ledger successes Keycloak never saw.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp

# The event maps and the matching live in the package (the drift monitor uses them too): one implementation.
from sidecar.drift.reconcile import ADMIN_EVENTS, ORACLE_VISIBLE, USER_EVENTS, Match, match

__all__ = [
    "ADMIN_EVENTS",
    "ORACLE_VISIBLE",
    "USER_EVENTS",
    "Match",
    "admin_token",
    "keycloak_events",
    "match",
    "now_ms",
]


async def admin_token(base: str, username: str, password: str) -> str:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{base}/realms/master/protocol/openid-connect/token",
            data={"grant_type": "password", "client_id": "admin-cli", "username": username, "password": password},
        ) as resp:
            data = await resp.json()
            return str(data["access_token"])


async def keycloak_events(
    base: str, token: str, realm: str, since_ms: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(user events, admin events) of `realm` since `since_ms`, read directly from Keycloak."""
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.get(
            f"{base}/admin/realms/{realm}/events", params={"dateFrom": str(since_ms), "max": "10000"}
        ) as resp:
            user = await resp.json()
        async with http.get(
            f"{base}/admin/realms/{realm}/admin-events", params={"dateFrom": str(since_ms), "max": "10000"}
        ) as resp:
            admin = await resp.json()
    return [e for e in user if e["time"] >= since_ms], [e for e in admin if e["time"] >= since_ms]


def now_ms() -> int:
    return int(time.time() * 1000)
