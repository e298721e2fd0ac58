"""Keycloak's routing rules (sidecar.capture.paths) and the router built on them, without a server.

The spellings and Keycloak's answers in the table were measured on Keycloak 26.7.3; the e2e test
tests/e2e/test_surface.py re-measures them on every run.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

from sidecar.capture import classify as c
from sidecar.capture.paths import keycloak_path
from sidecar.core.exchange import RequestHead

TOKEN = ("realms", "ledger-test", "protocol", "openid-connect", "token")


@pytest.mark.parametrize(
    ("target", "normalised"),
    [
        ("/realms/ledger-test/protocol/openid-connect/token", True),
        ("/realms/ledger-test/protocol/openid-connect/token/", True),
        ("/realms/ledger-test/protocol/openid-connect/token?", True),
        ("/realms/ledger-test/protocol/openid-connect/token/?a=b", True),
        ("http://127.0.0.1:8080/realms/ledger-test/protocol/openid-connect/token", True),
        ("/realms/ledger-test/protocol/openid-connect/token//", False),
        ("//realms/ledger-test/protocol/openid-connect/token", False),
        ("/realms/ledger-test//protocol/openid-connect/token", False),
        ("/realms/ledger-test/./protocol/openid-connect/token", False),
        ("/realms/ledger-test/x/../protocol/openid-connect/token", False),
        ("/realms/ledger-test/%2e/protocol/openid-connect/token", False),
        ("/realms/ledger-test/protocol/openid-connect/%74oken", False),
        ("/realms/ledger%2Dtest/protocol/openid-connect/token", False),
        ("/realms/ledger-test/protocol/openid-connect/token;x=y", False),
        ("/realms/ledger-test;a=b/protocol/openid-connect/token", False),
        ("/realms/ledger-test/protocol/openid-connect/token/;x=y", False),
        ("/realms/ledger-test/protocol/openid-connect/token;/", False),
        ("/realms;/ledger-test/protocol/openid-connect/token", False),
    ],
)
def test_spellings_keycloak_routes_to_the_token_endpoint(target: str, normalised: bool) -> None:
    """Every spelling Keycloak routes (or would route with non-normalised paths accepted) reaches the token resource."""
    kp = keycloak_path(target)
    assert kp.segments == TOKEN
    assert kp.normalised is normalised


@pytest.mark.parametrize(
    "target",
    [
        "/realms/ledger-test/protocol/openid-connect/Token",
        "/Realms/ledger-test/protocol/openid-connect/token",
        "/realms/ledger-test/protocol%2Fopenid-connect/token",
        "/realms/ledger-test/protocol%2fopenid-connect/token",
        "/realms/ledger-test/protocol/openid-connect/token%20",
        "/realms/ledger-test/protocol/openid-connect/token.",
        "/realms/ledger-test/protocol/openid-connect/token#x",
        # a segment that is only matrix parameters is empty, not collapsed (404/405 with
        # --http-accept-non-normalized-paths=true, 400 without)
        "/realms/;/ledger-test/protocol/openid-connect/token",
        "/realms/ledger-test/;/protocol/openid-connect/token",
        "/;/realms/ledger-test/protocol/openid-connect/token",
        "/realms/ledger-test/protocol/openid-connect/;/token",
        "/realms/ledger-test/protocol/openid-connect/token/;/",
        # `..;` and `.;` are not dot segments to Keycloak: they stay literal `..` and `.` (404)
        "/realms/ledger-test/x/..;/protocol/openid-connect/token",
        "/realms/ledger-test/.;/protocol/openid-connect/token",
        "/realms/x/..;/ledger-test/protocol/openid-connect/token",
    ],
)
def test_spellings_keycloak_does_not_route_stay_apart(target: str) -> None:
    """Spellings that match no Keycloak resource (404/405 there) do not become the token resource here."""
    assert keycloak_path(target).segments != TOKEN


def _head(method: str, target: str) -> RequestHead:
    return RequestHead(
        method,
        target.partition("?")[0],
        target,
        MultiDictProxy(MultiDict()),
        CIMultiDictProxy(CIMultiDict()),
        "127.0.0.1",
        "http",
        "sidecar",
        "r1",
    )


@pytest.mark.parametrize(
    ("method", "target", "kind", "parts"),
    [
        ("POST", "/realms/r/protocol/openid-connect/token/", c.Kind.TOKEN, ()),
        ("POST", "/realms/r/protocol/openid-connect/revoke/", c.Kind.REVOKE, ()),
        ("POST", "/realms/r/protocol/openid-connect/logout/", c.Kind.LOGOUT, ()),
        ("GET", "/realms/r/protocol/openid-connect/auth/?client_id=x", c.Kind.AUTH, ()),
        ("POST", "/realms/r/login-actions/authenticate/?execution=e", c.Kind.LOGIN_STEP, ("authenticate",)),
        ("POST", "/realms/r/login-actions/required-action/", c.Kind.REQUIRED_ACTION, ("required-action",)),
        (
            "POST",
            "/admin/realms/r/users/u1/role-mappings/realm/",
            c.Kind.ADMIN_WRITE,
            ("users", "u1", "role-mappings", "realm"),
        ),
        ("PUT", "/admin/realms/r/", c.Kind.ADMIN_WRITE, ()),
        ("PUT", "/admin/realms/r/users/a%20b", c.Kind.ADMIN_WRITE, ("users", "a b")),
        ("POST", "/realms/r/clients-registrations/default/", c.Kind.ADMIN_WRITE, ("default",)),
        ("GET", "/admin/r/console/whoami/", c.Kind.WHOAMI, ()),
    ],
)
def test_router_matches_on_keycloaks_path(method: str, target: str, kind: c.Kind, parts: tuple[str, ...]) -> None:
    """The router classifies by the path Keycloak routes: trailing slashes, queries and escapes included."""
    rt = c.route(_head(method, target))
    assert rt is not None and rt.kind is kind and rt.parts == parts


def test_dcr_writes_are_routed_as_dcr() -> None:
    """A DCR write is an admin-like write on the `dcr` surface (intent before forwarding)."""
    rt = c.route(_head("DELETE", "/realms/r/clients-registrations/default/app-1"))
    assert rt is not None and rt.kind is c.Kind.ADMIN_WRITE and rt.api == "dcr" and rt.parts == ("default", "app-1")


@given(st.text(max_size=200))
def test_any_target_normalises_without_error(target: str) -> None:
    """Any request target normalises without raising, to segments without matrix parameters; segments
    that are neither empty nor dots (both left by cut matrix parameters: `;x`, `..;x`) normalise to
    themselves."""
    kp = keycloak_path("/" + target)
    assert not any(";" in seg for seg in kp.segments)
    if all(seg not in ("", ".", "..") for seg in kp.segments):
        again = keycloak_path("/" + "/".join(kp.segments))
        assert again.segments == kp.segments
