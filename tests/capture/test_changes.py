"""Named configuration changes, partialImport and effects (sidecar.capture.changes), without a server.

The partialImport answer below is the shape Keycloak 26.7.3 returned for the same body (measured;
tests/e2e/test_surface.py checks it again on the real server).
"""

from __future__ import annotations

from sidecar.capture import changes
from sidecar.core.events import EventType, IdentityEvent, Outcome, Party

BASE = IdentityEvent(
    EventType.ADMIN_CHANGE,
    Outcome.SUCCEEDED,
    realm="r",
    actor=Party(id="a1", username="carol"),
    details={"method": "POST", "path": "partialImport", "phase": "outcome", "intent_seq": 7},
)

BODY = {
    "ifResourceExists": "SKIP",
    "users": [
        {
            "username": "u1",
            "realmRoles": ["viewer"],
            "groups": ["/ops"],
            "credentials": [{"type": "password", "value": "never-recorded"}],
        }
    ],
    "roles": {"client": {"app": [{"name": "cr1"}]}},
}
ANSWER = {
    "overwritten": 0,
    "added": 1,
    "skipped": 1,
    "results": [
        {"action": "ADDED", "resourceType": "USER", "resourceName": "u1", "id": "uid-1"},
        {"action": "SKIPPED", "resourceType": "CLIENT_ROLE", "resourceName": "app-->cr1", "id": "rid-1"},
    ],
}


def test_partial_import_gives_one_record_per_reported_object() -> None:
    """Each object Keycloak reports becomes a record with its target, the roles and groups it came with, and `unchanged` when skipped."""
    user, role = changes.import_events(BASE, BODY, ANSWER)
    assert (user.type, user.outcome) == (EventType.USER_CREATED, Outcome.SUCCEEDED)
    assert user.target == Party(id="uid-1", username="u1", kind="user")
    assert user.details["realm_roles"] == ["viewer"] and user.details["groups"] == ["/ops"]
    assert user.details["resource_path"] == "users/uid-1" and user.details["intent_seq"] == 7
    assert "never-recorded" not in repr(user.to_json())
    assert (role.type, role.outcome) == (EventType.ROLE_CREATED, Outcome.UNCHANGED)
    assert role.target == Party(id="rid-1", name="cr1", kind="role") and role.details["client_id"] == "app"


def test_realm_put_names_each_changed_category_with_before_and_after() -> None:
    """A realm PUT becomes its admin.change plus one record per security category whose values changed."""
    named = changes.config_write("PUT", (), {"bruteForceProtected": True, "displayName": "x"})
    assert named is not None and named.reads == ("",)
    base = IdentityEvent(named.type, Outcome.SUCCEEDED, realm="r", details=named.details)
    before = {"": {"bruteForceProtected": False, "failureFactor": 30, "otpPolicyDigits": 6, "displayName": "x"}}
    after = {"": {"bruteForceProtected": True, "failureFactor": 30, "otpPolicyDigits": 6, "displayName": "x"}}
    summary, brute = changes.state_events(base, named.type, None, before, after)
    assert summary.details["changed_fields"] == ["bruteForceProtected"]
    assert brute.type is EventType.REALM_BRUTE_FORCE_CHANGED
    assert brute.details["before"] == {"bruteForceProtected": False, "failureFactor": 30}
    assert brute.details["after"] == {"bruteForceProtected": True, "failureFactor": 30}
    same = changes.state_events(base, named.type, None, before, before)
    assert [e.outcome for e in same] == [Outcome.UNCHANGED]


def test_execution_requirement_change_keeps_the_named_execution() -> None:
    """An execution PUT reads the flow's executions and keeps only the one the request names."""
    named = changes.config_write(
        "PUT", ("authentication", "flows", "browser", "executions"), {"id": "e2", "requirement": "DISABLED"}
    )
    assert named is not None and named.type is EventType.AUTH_EXECUTION_CHANGED
    assert named.reads == ("authentication/flows/browser/executions",)
    base = IdentityEvent(named.type, Outcome.SUCCEEDED, details=named.details)
    rows = [{"id": "e1", "requirement": "ALTERNATIVE"}, {"id": "e2", "requirement": "REQUIRED", "providerId": "otp"}]
    keep = changes.keep_of(named.type, "authentication/flows/browser/executions", "PUT")
    (event,) = changes.state_events(
        base,
        named.type,
        keep,
        {named.reads[0]: rows},
        {named.reads[0]: [rows[0], {**rows[1], "requirement": "DISABLED"}]},
    )
    assert event.details["before"] == {"id": "e2", "requirement": "REQUIRED", "providerId": "otp"}
    assert event.details["after"]["requirement"] == "DISABLED"


def test_identity_provider_secret_never_reaches_before_or_after() -> None:
    """An identity provider's client secret is not on the allowlist of what a record may keep."""
    named = changes.config_write("PUT", ("identity-provider", "instances", "up"), {"alias": "up"})
    assert named is not None
    rep = {"alias": "up", "enabled": True, "config": {"clientId": "c", "clientSecret": "s3cret-value"}}
    keep = changes.keep_of(named.type, "identity-provider/instances/up", "PUT")
    (event,) = changes.state_events(
        IdentityEvent(named.type, Outcome.SUCCEEDED, details=named.details),
        named.type,
        keep,
        {named.reads[0]: rep},
        {named.reads[0]: {**rep, "enabled": False}},
    )
    assert "s3cret-value" not in repr(event.to_json())
    assert event.details["before"] == {"alias": "up", "enabled": True, "config.clientId": "c"}


def test_effect_counts_users_whose_effective_roles_changed() -> None:
    """The effect names the users whose effective roles differ after the change, and says if it saw them all."""
    before = {"u1": ["a"], "u2": ["a", "b"], "u3": None}
    after = {"u1": ["a", "b"], "u2": ["a", "b"], "u3": ["b"]}
    assert changes.effect(before, after, True) == {
        "users_changed": 1,
        "users": ["u1"],
        "users_examined": 3,
        "complete": False,
    }
    assert changes.effect_target(EventType.ROLE_GRANTED, Party(id="g1", kind="group"), ()) == "group:g1"
    assert (
        changes.effect_target(EventType.ROLE_COMPOSITE_CHANGED, None, ("clients", "c1", "roles", "r", "composites"))
        == "role:clients/c1/roles/r"
    )


def test_a_role_granted_to_an_empty_group_has_an_effect_of_zero_users() -> None:
    """A group role grant whose group has no members still records its effect: zero users examined, complete."""
    from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

    from sidecar.capture.pipeline import CapturePipeline, Facts, StateFacts
    from sidecar.capture.sessions import SessionDirectory
    from sidecar.core.events import Outcome
    from sidecar.core.exchange import RequestHead, RequestView, ResponseView

    path = "/admin/realms/r/groups/g-empty/role-mappings/realm"
    head = RequestHead(
        "POST",
        path,
        path,
        MultiDictProxy(MultiDict()),
        CIMultiDictProxy(CIMultiDict({"Content-Type": "application/json"})),
        "192.0.2.10",
        "http",
        "sso.test",
        "req-1",
    )
    request = RequestView(head, b'[{"id": "r-1", "name": "operator"}]', False)
    pipeline = CapturePipeline(SessionDirectory(b"k" * 32), lambda v: "fp")
    wanted = pipeline.needs_before(request).state
    assert wanted is not None and wanted.effect == "group:g-empty"
    state = StateFacts(
        access={"realm_roles": [], "client_roles": {}},
        names={("group", "g-empty"): "/empty"},
        effect={},
        effect_complete=True,
    )
    pending = pipeline.begin(request, Facts(state=state))
    assert pending is not None
    needs = pipeline.needs_after(pending, request)
    assert not needs.effect_users
    after = StateFacts(access={"realm_roles": ["operator"], "client_roles": {}})
    events = pipeline.finish(
        pending, request, ResponseView(204, CIMultiDictProxy(CIMultiDict()), b"", False), Facts(state=after)
    )
    assert [e.outcome for e in events] == [Outcome.SUCCEEDED]
    assert events[0].details["effect"] == {"users_changed": 0, "users": [], "users_examined": 0, "complete": True}
