"""Flows no recording covers, on exchanges built from Keycloak's documented fields (not recorded).

Organization membership needs an organization-enabled realm the test realm does not have. WebAuthn
is exercised for real in tests/e2e/test_webauthn.py (a localhost topology with a virtual
authenticator); here its recognition is also pinned without a browser. Both exchanges follow
reference/keycloak-surfaces.md §1.6 and §3.7.
"""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

from sidecar.capture import classify as c
from sidecar.core.events import EventType, Outcome
from sidecar.core.exchange import RequestHead, RequestView, ResponseView


def _req(method: str, path: str, query: dict[str, str], body: bytes, ctype: str) -> RequestView:
    head = RequestHead(
        method,
        path,
        path,
        MultiDictProxy(MultiDict(query)),
        CIMultiDictProxy(CIMultiDict({"Content-Type": ctype})),
        "192.0.2.10",
        "http",
        "sso.test",
        "req-1",
    )
    return RequestView(head, body, False)


def _resp(status: int, headers: dict[str, str], body: bytes = b"") -> ResponseView:
    return ResponseView(status, CIMultiDictProxy(CIMultiDict(headers)), body, False)


def test_webauthn_registration_required_action_is_credential_enrolled() -> None:
    """A webauthn-register required action that ends in a code redirect is credential.enrolled (webauthn) and login.succeeded."""
    req = _req(
        "POST",
        "/realms/r/login-actions/required-action",
        {"execution": "webauthn-register", "client_id": "app", "tab_id": "t"},
        b"clientDataJSON=eyJ0eXBlIjoid2ViYXV0aG4uY3JlYXRlIn0&attestationObject=o2NmbXRkbm9uZQ"
        b"&publicKeyCredentialId=AAEC&authenticatorLabel=YubiKey&transports=usb&error=",
        "application/x-www-form-urlencoded",
    )
    rt = c.route(req.head)
    assert rt is not None and rt.kind is c.Kind.REQUIRED_ACTION
    resp = _resp(302, {"Location": "http://app.test/cb?state=s&session_state=sid-1&code=abc.sid-1.cs"})
    events = c.on_required_action(rt, req, resp, c.LoginContext("alice", "u-alice", "sid-1"), None)
    assert [e.type for e in events] == [EventType.CREDENTIAL_ENROLLED, EventType.LOGIN_SUCCEEDED]
    enrolled = events[0]
    assert enrolled.outcome is Outcome.SUCCEEDED and enrolled.details["credential_type"] == "webauthn"
    assert enrolled.actor is not None and enrolled.actor.id == "u-alice"
    assert "clientDataJSON" not in str(enrolled.to_json()) and "o2NmbXRkbm9uZQ" not in str(enrolled.to_json())


def test_organization_member_added_and_removed() -> None:
    """POST organizations/{id}/members (body: the user id as a JSON string) and DELETE .../members/{user} are organization.joined and left."""
    add = _req("POST", "/admin/realms/r/organizations/org-1/members", {}, b'"u-bob"', "application/json")
    rt = c.route(add.head)
    assert rt is not None and rt.kind is c.Kind.ADMIN_WRITE
    joined = c.admin_action(rt, add)
    assert joined.type is EventType.ORGANIZATION_JOINED and joined.target is not None
    assert joined.target.id == "u-bob" and joined.details["organization_id"] == "org-1"
    remove = _req("DELETE", "/admin/realms/r/organizations/org-1/members/u-bob", {}, b"", "application/json")
    rt = c.route(remove.head)
    assert rt is not None
    left = c.admin_action(rt, remove)
    assert left.type is EventType.ORGANIZATION_LEFT and left.target is not None and left.target.id == "u-bob"
