"""Security-relevant admin changes by name: realm settings, flows, IdPs, scopes, DCR, bulk import. [pure]

`sidecar.capture.classify` names access changes (roles, groups, users). This module
names the configuration an insider changes first — events switched off, brute
force or OTP policy loosened, an OTP execution made optional, an identity
provider or a token mapper added, fine-grained permissions opened — and the two
surfaces that create objects in bulk or outside `/admin`: `partialImport` and
Dynamic Client Registration.

For each recognised request it says, before forwarding, the event type, the
target, and which Keycloak resources to read just before and just after the
change (`AdminAction.reads`, admin GET paths relative to `/admin/realms/{realm}/`).
After the response, `outcome_events` turns Keycloak's answer and those reads into
the outcome records: `details.before` / `details.after` hold only the fields of
the category concerned (never secrets: allowlists below), and a success whose
before and after agree has outcome `unchanged`.

Invariants: no I/O; every value copied into a record comes from an allowlisted
field; a read that failed (None) never turns into a claim (the record then has
no before/after and says `state_read=false`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from sidecar.core.events import EventType, IdentityEvent, Outcome, Party

E = EventType

# ---------------------------------------------------------------------------------------------- realm settings
# Category of a realm representation -> (event type, its fields). A realm PUT names each category it changes.
REALM_CATEGORIES: tuple[tuple[EventType, tuple[str, ...]], ...] = (
    (
        E.REALM_EVENTS_CHANGED,
        (
            "eventsEnabled",
            "eventsExpiration",
            "eventsListeners",
            "enabledEventTypes",
            "adminEventsEnabled",
            "adminEventsDetailsEnabled",
            "attributes.adminEventsExpiration",
        ),
    ),
    (
        E.REALM_BRUTE_FORCE_CHANGED,
        (
            "bruteForceProtected",
            "bruteForceStrategy",
            "permanentLockout",
            "maxTemporaryLockouts",
            "maxFailureWaitSeconds",
            "minimumQuickLoginWaitSeconds",
            "waitIncrementSeconds",
            "quickLoginCheckMilliSeconds",
            "maxDeltaTimeSeconds",
            "failureFactor",
        ),
    ),
    (E.REALM_PASSWORD_POLICY_CHANGED, ("passwordPolicy",)),
    (
        E.REALM_OTP_POLICY_CHANGED,
        (
            "otpPolicyType",
            "otpPolicyAlgorithm",
            "otpPolicyInitialCounter",
            "otpPolicyDigits",
            "otpPolicyLookAheadWindow",
            "otpPolicyPeriod",
            "otpPolicyCodeReusable",
        ),
    ),
    (
        E.REALM_FLOW_BINDING_CHANGED,
        (
            "browserFlow",
            "registrationFlow",
            "directGrantFlow",
            "resetCredentialsFlow",
            "clientAuthenticationFlow",
            "dockerAuthenticationFlow",
            "firstBrokerLoginFlow",
        ),
    ),
    (E.ADMIN_PERMISSIONS_CHANGED, ("adminPermissionsEnabled",)),
)
_EVENTS_CONFIG = (
    "eventsEnabled",
    "eventsExpiration",
    "eventsListeners",
    "enabledEventTypes",
    "adminEventsEnabled",
    "adminEventsDetailsEnabled",
)

# Allowlists of what a read resource may contribute to before/after (never a secret such as clientSecret).
_KEEP: dict[str, tuple[str, ...]] = {
    "events": _EVENTS_CONFIG,
    "execution": (
        "id",
        "displayName",
        "providerId",
        "authenticator",
        "requirement",
        "level",
        "index",
        "priority",
        "parentFlow",
        "authenticationFlow",
        "alias",
    ),
    "flow": ("id", "alias", "providerId", "topLevel", "builtIn"),
    "required-action": ("alias", "name", "providerId", "enabled", "defaultAction", "priority"),
    "identity-provider": (
        "alias",
        "providerId",
        "enabled",
        "trustEmail",
        "storeToken",
        "linkOnly",
        "hideOnLogin",
        "firstBrokerLoginFlowAlias",
        "postBrokerLoginFlowAlias",
        "config.clientId",
        "config.issuer",
        "config.syncMode",
        "config.authorizationUrl",
        "config.tokenUrl",
        "config.validateSignature",
        "config.clientAuthMethod",
        "config.defaultScope",
    ),
    "idp-mapper": ("id", "name", "identityProviderAlias", "identityProviderMapper", "config"),
    "client-scope": ("id", "name", "protocol", "attributes"),
    "protocol-mapper": ("id", "name", "protocol", "protocolMapper", "config"),
    "permissions": ("enabled", "scopePermissions"),
}


@dataclass(frozen=True, slots=True)
class Rule:
    """A configuration endpoint: how to name a write to it, and which resource to read around it."""

    method: str
    pattern: str
    type: EventType
    target: str | None = None  # which path variable names the target, and its kind below
    kind: str | None = None
    read: str | None = None  # an admin GET path template, read before and after
    keep: str | None = None  # which _KEEP allowlist applies to the read
    details: Mapping[str, str] = field(default_factory=dict)


RULES: tuple[Rule, ...] = (
    Rule("PUT", "events/config", E.REALM_EVENTS_CHANGED, read="events/config", keep="events"),
    Rule("DELETE", "events", E.REALM_EVENTS_CLEARED, details={"events": "user"}),
    Rule("DELETE", "admin-events", E.REALM_EVENTS_CLEARED, details={"events": "admin"}),
    # authentication flows and their executions (e.g. OTP from REQUIRED to DISABLED)
    Rule(
        "PUT",
        "authentication/flows/{flow}/executions",
        E.AUTH_EXECUTION_CHANGED,
        "flow",
        "flow",
        read="authentication/flows/{flow}/executions",
        keep="execution",
        details={"change": "requirement"},
    ),
    Rule(
        "POST",
        "authentication/flows/{flow}/executions/execution",
        E.AUTH_EXECUTION_CHANGED,
        "flow",
        "flow",
        read="authentication/flows/{flow}/executions",
        keep="execution",
        details={"change": "added"},
    ),
    Rule(
        "POST",
        "authentication/flows/{flow}/executions/flow",
        E.AUTH_EXECUTION_CHANGED,
        "flow",
        "flow",
        read="authentication/flows/{flow}/executions",
        keep="execution",
        details={"change": "added"},
    ),
    Rule(
        "DELETE",
        "authentication/executions/{execution}",
        E.AUTH_EXECUTION_CHANGED,
        "execution",
        "execution",
        read="authentication/executions/{execution}",
        keep="execution",
        details={"change": "removed"},
    ),
    Rule(
        "POST",
        "authentication/executions/{execution}/raise-priority",
        E.AUTH_EXECUTION_CHANGED,
        "execution",
        "execution",
        read="authentication/executions/{execution}",
        keep="execution",
        details={"change": "priority"},
    ),
    Rule(
        "POST",
        "authentication/executions/{execution}/lower-priority",
        E.AUTH_EXECUTION_CHANGED,
        "execution",
        "execution",
        read="authentication/executions/{execution}",
        keep="execution",
        details={"change": "priority"},
    ),
    Rule(
        "POST",
        "authentication/executions/{execution}/config",
        E.AUTH_EXECUTION_CHANGED,
        "execution",
        "execution",
        details={"change": "config"},
    ),
    Rule(
        "PUT",
        "authentication/config/{config}",
        E.AUTH_EXECUTION_CHANGED,
        "config",
        "authenticator-config",
        details={"change": "config"},
    ),
    Rule(
        "DELETE",
        "authentication/config/{config}",
        E.AUTH_EXECUTION_CHANGED,
        "config",
        "authenticator-config",
        details={"change": "config-removed"},
    ),
    Rule("POST", "authentication/flows", E.AUTH_FLOW_CHANGED, kind="flow", details={"change": "created"}),
    Rule("POST", "authentication/flows/{flow}/copy", E.AUTH_FLOW_CHANGED, "flow", "flow", details={"change": "copied"}),
    Rule(
        "PUT",
        "authentication/flows/{flow}",
        E.AUTH_FLOW_CHANGED,
        "flow",
        "flow",
        read="authentication/flows/{flow}",
        keep="flow",
        details={"change": "updated"},
    ),
    Rule(
        "DELETE",
        "authentication/flows/{flow}",
        E.AUTH_FLOW_CHANGED,
        "flow",
        "flow",
        read="authentication/flows/{flow}",
        keep="flow",
        details={"change": "deleted"},
    ),
    # required actions (enabled / disabled / default)
    Rule(
        "PUT",
        "authentication/required-actions/{alias}",
        E.REQUIRED_ACTION_CHANGED,
        "alias",
        "required-action",
        read="authentication/required-actions/{alias}",
        keep="required-action",
        details={"change": "updated"},
    ),
    Rule(
        "DELETE",
        "authentication/required-actions/{alias}",
        E.REQUIRED_ACTION_CHANGED,
        "alias",
        "required-action",
        read="authentication/required-actions/{alias}",
        keep="required-action",
        details={"change": "deleted"},
    ),
    Rule(
        "POST",
        "authentication/register-required-action",
        E.REQUIRED_ACTION_CHANGED,
        kind="required-action",
        details={"change": "registered"},
    ),
    Rule(
        "POST",
        "authentication/required-actions/{alias}/raise-priority",
        E.REQUIRED_ACTION_CHANGED,
        "alias",
        "required-action",
        details={"change": "priority"},
    ),
    Rule(
        "POST",
        "authentication/required-actions/{alias}/lower-priority",
        E.REQUIRED_ACTION_CHANGED,
        "alias",
        "required-action",
        details={"change": "priority"},
    ),
    # identity providers and their mappers
    Rule("POST", "identity-provider/instances", E.IDENTITY_PROVIDER_CREATED, kind="identity-provider"),
    Rule(
        "PUT",
        "identity-provider/instances/{alias}",
        E.IDENTITY_PROVIDER_UPDATED,
        "alias",
        "identity-provider",
        read="identity-provider/instances/{alias}",
        keep="identity-provider",
    ),
    Rule(
        "DELETE",
        "identity-provider/instances/{alias}",
        E.IDENTITY_PROVIDER_DELETED,
        "alias",
        "identity-provider",
        read="identity-provider/instances/{alias}",
        keep="identity-provider",
    ),
    Rule(
        "POST",
        "identity-provider/instances/{alias}/mappers",
        E.IDENTITY_PROVIDER_MAPPER_CREATED,
        "alias",
        "identity-provider",
    ),
    Rule(
        "PUT",
        "identity-provider/instances/{alias}/mappers/{mapper}",
        E.IDENTITY_PROVIDER_MAPPER_UPDATED,
        "alias",
        "identity-provider",
        read="identity-provider/instances/{alias}/mappers/{mapper}",
        keep="idp-mapper",
    ),
    Rule(
        "DELETE",
        "identity-provider/instances/{alias}/mappers/{mapper}",
        E.IDENTITY_PROVIDER_MAPPER_DELETED,
        "alias",
        "identity-provider",
        read="identity-provider/instances/{alias}/mappers/{mapper}",
        keep="idp-mapper",
    ),
    # client scopes, their assignment, protocol mappers and role scope mappings: what goes into tokens
    Rule("POST", "client-scopes", E.CLIENT_SCOPE_CREATED, kind="client-scope"),
    Rule(
        "PUT",
        "client-scopes/{scope}",
        E.CLIENT_SCOPE_UPDATED,
        "scope",
        "client-scope",
        read="client-scopes/{scope}",
        keep="client-scope",
    ),
    Rule(
        "DELETE",
        "client-scopes/{scope}",
        E.CLIENT_SCOPE_DELETED,
        "scope",
        "client-scope",
        read="client-scopes/{scope}",
        keep="client-scope",
    ),
    Rule(
        "PUT",
        "default-default-client-scopes/{scope}",
        E.CLIENT_SCOPE_ASSIGNED,
        "scope",
        "client-scope",
        details={"as": "realm-default"},
    ),
    Rule(
        "DELETE",
        "default-default-client-scopes/{scope}",
        E.CLIENT_SCOPE_UNASSIGNED,
        "scope",
        "client-scope",
        details={"as": "realm-default"},
    ),
    Rule(
        "PUT",
        "default-optional-client-scopes/{scope}",
        E.CLIENT_SCOPE_ASSIGNED,
        "scope",
        "client-scope",
        details={"as": "realm-optional"},
    ),
    Rule(
        "DELETE",
        "default-optional-client-scopes/{scope}",
        E.CLIENT_SCOPE_UNASSIGNED,
        "scope",
        "client-scope",
        details={"as": "realm-optional"},
    ),
    Rule(
        "PUT",
        "clients/{client}/default-client-scopes/{scope}",
        E.CLIENT_SCOPE_ASSIGNED,
        "scope",
        "client-scope",
        details={"as": "default"},
    ),
    Rule(
        "DELETE",
        "clients/{client}/default-client-scopes/{scope}",
        E.CLIENT_SCOPE_UNASSIGNED,
        "scope",
        "client-scope",
        details={"as": "default"},
    ),
    Rule(
        "PUT",
        "clients/{client}/optional-client-scopes/{scope}",
        E.CLIENT_SCOPE_ASSIGNED,
        "scope",
        "client-scope",
        details={"as": "optional"},
    ),
    Rule(
        "DELETE",
        "clients/{client}/optional-client-scopes/{scope}",
        E.CLIENT_SCOPE_UNASSIGNED,
        "scope",
        "client-scope",
        details={"as": "optional"},
    ),
    *(
        Rule(m, f"{owner}/{{owner}}/protocol-mappers/{tail}", t, "owner", kind, read=read, keep=keep)
        for owner, kind in (("clients", "client"), ("client-scopes", "client-scope"))
        for m, tail, t, read, keep in (
            ("POST", "models", E.PROTOCOL_MAPPER_CREATED, None, None),
            ("POST", "add-models", E.PROTOCOL_MAPPER_CREATED, None, None),
            (
                "PUT",
                "models/{mapper}",
                E.PROTOCOL_MAPPER_UPDATED,
                f"{owner}/{{owner}}/protocol-mappers/models/{{mapper}}",
                "protocol-mapper",
            ),
            (
                "DELETE",
                "models/{mapper}",
                E.PROTOCOL_MAPPER_DELETED,
                f"{owner}/{{owner}}/protocol-mappers/models/{{mapper}}",
                "protocol-mapper",
            ),
        )
    ),
    *(
        Rule(
            m,
            f"{owner}/{{owner}}/scope-mappings/{tail}",
            E.SCOPE_MAPPING_CHANGED,
            "owner",
            kind,
            details={"change": "added" if m == "POST" else "removed"},
        )
        for owner, kind in (("clients", "client"), ("client-scopes", "client-scope"))
        for m in ("POST", "DELETE")
        for tail in ("realm", "clients/{client}")
    ),
    # fine-grained admin permissions (v1 switches; v2 lives on the admin-permissions client's authz resources)
    Rule(
        "PUT",
        "users-management-permissions",
        E.ADMIN_PERMISSIONS_CHANGED,
        kind="realm",
        read="users-management-permissions",
        keep="permissions",
        details={"resource": "users"},
    ),
    *(
        Rule(
            "PUT",
            f"{base}/{{obj}}/management/permissions",
            E.ADMIN_PERMISSIONS_CHANGED,
            "obj",
            kind,
            read=f"{base}/{{obj}}/management/permissions",
            keep="permissions",
            details={"resource": kind},
        )
        for base, kind in (
            ("clients", "client"),
            ("groups", "group"),
            ("roles-by-id", "role"),
            ("identity-provider/instances", "identity-provider"),
        )
    ),
    *(
        Rule(
            m,
            f"clients/{{client}}/authz/resource-server/{what}{tail}",
            E.ADMIN_PERMISSIONS_CHANGED,
            "client",
            "client",
            details={"resource": what.split("/")[0]},
        )
        for m, tail in (("POST", ""), ("PUT", "/{id}"), ("DELETE", "/{id}"))
        for what in ("permission", "permission/scope", "permission/resource", "policy", "resource", "scope")
    ),
    # objects that partialImport also creates, by their own endpoints
    Rule("PUT", "clients/{client}", E.CLIENT_UPDATED, "client", "client"),
    Rule("POST", "groups", E.GROUP_CREATED, kind="group"),
    Rule("POST", "groups/{group}/children", E.GROUP_CREATED, "group", "group", details={"as": "child"}),
    Rule("PUT", "groups/{group}", E.GROUP_UPDATED, "group", "group"),
    Rule("DELETE", "groups/{group}", E.GROUP_DELETED, "group", "group"),
    Rule("POST", "roles", E.ROLE_CREATED, kind="role"),
    Rule("PUT", "roles/{role}", E.ROLE_UPDATED, "role", "role"),
    Rule("DELETE", "roles/{role}", E.ROLE_DELETED, "role", "role"),
    Rule("PUT", "roles-by-id/{role}", E.ROLE_UPDATED, "role", "role"),
    Rule("DELETE", "roles-by-id/{role}", E.ROLE_DELETED, "role", "role"),
    Rule("POST", "clients/{client}/roles", E.ROLE_CREATED, kind="role", details={"role_of": "client"}),
    Rule("PUT", "clients/{client}/roles/{role}", E.ROLE_UPDATED, "role", "role", details={"role_of": "client"}),
    Rule("DELETE", "clients/{client}/roles/{role}", E.ROLE_DELETED, "role", "role", details={"role_of": "client"}),
)


def match(parts: tuple[str, ...], pattern: str) -> dict[str, str] | None:
    """The template values of `parts` under `pattern` (`users/{id}/groups`), or None if it does not match."""
    pat = pattern.split("/") if pattern else []
    if len(pat) != len(parts):
        return None
    out = {}
    for p, v in zip(pat, parts, strict=True):
        if p.startswith("{"):
            out[p[1:-1]] = v
        elif p != v:
            return None
    return out


@dataclass(frozen=True, slots=True)
class Named:
    """A recognised configuration write: type, target, details and the resource to read around it."""

    type: EventType
    target: Party | None
    details: dict[str, Any]
    reads: tuple[str, ...] = ()


def _name_of(body: object) -> str | None:
    if isinstance(body, dict):
        for key in ("alias", "name", "clientId", "providerId"):
            if isinstance(body.get(key), str):
                return str(body[key])
    return None


def config_write(method: str, parts: tuple[str, ...], body: object) -> Named | None:
    """A write to a security-relevant configuration endpoint, or None."""
    path = "/".join(parts)
    if method == "PUT" and not parts:
        fields = sorted(body) if isinstance(body, dict) else []
        return Named(
            E.ADMIN_CHANGE, Party(kind="realm"), {"method": method, "path": "", "fields": fields[:100]}, reads=("",)
        )
    if method == "POST" and parts == ("partialImport",):
        return Named(
            E.ADMIN_CHANGE, Party(kind="realm"), {"method": method, "path": path, "intends": _import_intends(body)}
        )
    for rule in RULES:
        if rule.method != method or (vars_ := match(parts, rule.pattern)) is None:
            continue
        details: dict[str, Any] = {"method": method, "path": path, **rule.details}
        target_id = vars_.get(rule.target) if rule.target else None
        target = (
            Party(id=target_id, kind=rule.kind, name=_name_of(body) if method in ("POST", "PUT") else None)
            if rule.kind
            else None
        )
        if target is not None and rule.kind in ("identity-provider", "flow", "required-action") and target_id:
            target = replace(target, id=None, name=target_id)  # these are addressed by alias, not id
        for var, key in (("client", "client_uuid"), ("owner", "owner_id"), ("mapper", "mapper_id"), ("alias", "alias")):
            if var in vars_ and var != rule.target:
                details[key] = vars_[var]
        if rule.type in (E.AUTH_EXECUTION_CHANGED,) and isinstance(body, dict):
            for key in ("id", "requirement", "provider", "displayName"):
                if isinstance(body.get(key), str):
                    details[f"execution_{key}" if key != "requirement" else "requirement"] = body[key]
        if rule.type is E.SCOPE_MAPPING_CHANGED and isinstance(body, list):
            details["roles"] = [str(r.get("name")) for r in body if isinstance(r, dict) and r.get("name")][:100]
        if rule.type is E.CLIENT_UPDATED and isinstance(body, dict):
            details["fields"] = sorted(body)[:100]
        reads = (rule.read.format(**vars_),) if rule.read else ()
        return Named(rule.type, target, details, reads)
    return None


# ---------------------------------------------------------------------------------------------- DCR
def dcr_write(method: str, parts: tuple[str, ...], body: object) -> Named:
    """A Dynamic Client Registration write (`/realms/{r}/clients-registrations/{provider}[/{clientId}]`)."""
    provider = parts[0] if parts else ""
    details: dict[str, Any] = {"method": method, "path": "/".join(parts), "via": "dcr", "provider": provider}
    client = parts[1] if len(parts) >= 2 else None
    if method == "POST" and len(parts) == 1:
        name = None
        if isinstance(body, dict):
            name = body.get("clientId") or body.get("client_id")
            details["fields"] = sorted(k for k in body if k not in ("secret", "client_secret"))[:100]
        return Named(
            E.CLIENT_CREATED, Party(client=str(name) if isinstance(name, str) else None, kind="client"), details
        )
    etype = E.CLIENT_DELETED if method == "DELETE" else E.CLIENT_UPDATED
    if etype is E.CLIENT_UPDATED and isinstance(body, dict):
        details["fields"] = sorted(k for k in body if k not in ("secret", "client_secret"))[:100]
    return Named(etype, Party(client=client, kind="client"), details)


# ---------------------------------------------------------------------------------------------- partialImport
_IMPORT_TYPES: dict[tuple[str, str], EventType] = {
    ("USER", "ADDED"): E.USER_CREATED,
    ("USER", "OVERWRITTEN"): E.USER_UPDATED,
    ("USER", "SKIPPED"): E.USER_CREATED,
    ("CLIENT", "ADDED"): E.CLIENT_CREATED,
    ("CLIENT", "OVERWRITTEN"): E.CLIENT_UPDATED,
    ("CLIENT", "SKIPPED"): E.CLIENT_CREATED,
    ("GROUP", "ADDED"): E.GROUP_CREATED,
    ("GROUP", "OVERWRITTEN"): E.GROUP_UPDATED,
    ("GROUP", "SKIPPED"): E.GROUP_CREATED,
    ("REALM_ROLE", "ADDED"): E.ROLE_CREATED,
    ("REALM_ROLE", "OVERWRITTEN"): E.ROLE_UPDATED,
    ("REALM_ROLE", "SKIPPED"): E.ROLE_CREATED,
    ("CLIENT_ROLE", "ADDED"): E.ROLE_CREATED,
    ("CLIENT_ROLE", "OVERWRITTEN"): E.ROLE_UPDATED,
    ("CLIENT_ROLE", "SKIPPED"): E.ROLE_CREATED,
    ("IDP", "ADDED"): E.IDENTITY_PROVIDER_CREATED,
    ("IDP", "OVERWRITTEN"): E.IDENTITY_PROVIDER_UPDATED,
    ("IDP", "SKIPPED"): E.IDENTITY_PROVIDER_CREATED,
}
_KINDS = {
    "USER": "user",
    "CLIENT": "client",
    "GROUP": "group",
    "REALM_ROLE": "role",
    "CLIENT_ROLE": "role",
    "IDP": "identity-provider",
}
# Keycloak's admin-event resourcePath for each imported object (RealmAdminResource.partialImport).
_KC_PATHS = {
    "USER": "users",
    "CLIENT": "clients",
    "GROUP": "groups",
    "REALM_ROLE": "realms",
    "CLIENT_ROLE": "clients",
    "IDP": "identity-provider-settings",
}


def _obj(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _import_intends(body: object) -> dict[str, Any]:
    if not isinstance(body, dict):
        return {}
    roles = _obj(body.get("roles"))
    client_roles = _obj(roles.get("client"))
    counts = {
        "users": len(body["users"]) if isinstance(body.get("users"), list) else 0,
        "clients": len(body["clients"]) if isinstance(body.get("clients"), list) else 0,
        "groups": len(body["groups"]) if isinstance(body.get("groups"), list) else 0,
        "realm_roles": len(roles["realm"]) if isinstance(roles.get("realm"), list) else 0,
        "client_roles": sum(len(v) if isinstance(v, list) else 0 for v in client_roles.values()),
        "identity_providers": len(body["identityProviders"]) if isinstance(body.get("identityProviders"), list) else 0,
    }
    policy = body.get("ifResourceExists")
    return {**{k: v for k, v in counts.items() if v}, "if_exists": policy if isinstance(policy, str) else "FAIL"}


def _strings(value: object, limit: int = 100) -> list[str]:
    return [str(v) for v in value if isinstance(v, str)][:limit] if isinstance(value, list) else []


def _came_with(rep: Mapping[str, Any]) -> dict[str, Any]:
    """The realm roles, client roles and groups an imported user or group came with."""
    out: dict[str, Any] = {}
    if roles := _strings(rep.get("realmRoles")):
        out["realm_roles"] = roles
    client_roles = rep.get("clientRoles")
    if isinstance(client_roles, dict) and client_roles:
        out["client_roles"] = {str(k): _strings(v) for k, v in list(client_roles.items())[:50]}
    if groups := _strings(rep.get("groups")):
        out["groups"] = groups
    return out


def _import_reps(body: object) -> dict[tuple[str, str], Mapping[str, Any]]:
    """(resource type, the name Keycloak reports) -> the representation in the request."""
    out: dict[tuple[str, str], Mapping[str, Any]] = {}
    if not isinstance(body, dict):
        return out
    for key, rtype, name_key in (
        ("users", "USER", "username"),
        ("clients", "CLIENT", "clientId"),
        ("groups", "GROUP", "name"),
        ("identityProviders", "IDP", "alias"),
    ):
        for rep in body.get(key) or [] if isinstance(body.get(key), list) else []:
            if isinstance(rep, dict) and isinstance(rep.get(name_key), str):
                out[(rtype, rep[name_key])] = rep
    roles = _obj(body.get("roles"))
    for rep in roles.get("realm") or [] if isinstance(roles.get("realm"), list) else []:
        if isinstance(rep, dict) and isinstance(rep.get("name"), str):
            out[("REALM_ROLE", rep["name"])] = rep
    for client, reps in _obj(roles.get("client")).items():
        for rep in reps if isinstance(reps, list) else []:
            if isinstance(rep, dict) and isinstance(rep.get("name"), str):
                out[("CLIENT_ROLE", f"{client}-->{rep['name']}")] = rep
    return out


def import_events(base: IdentityEvent, body: object, answer: object) -> list[IdentityEvent]:
    """One record per object Keycloak's partialImport answer reports ADDED, OVERWRITTEN or SKIPPED.

    `base` is the request's own outcome record (its actor, session, intent
    reference); each object record copies it with the object's type, target and
    the roles and groups the object came with. A SKIPPED object has outcome
    `unchanged`.
    """
    results = answer.get("results") if isinstance(answer, dict) else None
    if not isinstance(results, list):
        return []
    reps = _import_reps(body)
    out = []
    for res in results[:10_000]:
        if not isinstance(res, dict):
            continue
        rtype, action, name, oid = (res.get("resourceType"), res.get("action"), res.get("resourceName"), res.get("id"))
        if not isinstance(rtype, str) or not isinstance(action, str):
            continue
        etype = _IMPORT_TYPES.get((rtype, action))
        if etype is None:
            continue
        name = name if isinstance(name, str) else None
        oid = oid if isinstance(oid, str) else None
        kind = _KINDS[rtype]
        if kind == "user":
            target = Party(id=oid, username=name, kind=kind)
        elif kind == "client":
            target = Party(id=oid, client=name, kind=kind)
        else:
            target = Party(id=oid, name=name, kind=kind)
        details: dict[str, Any] = {
            "method": base.details.get("method", "POST"),
            "path": "partialImport",
            "via": "partialImport",
            "import_action": action,
            "resource_type": rtype,
            "phase": "outcome",
        }
        if oid:
            details["resource_path"] = f"{_KC_PATHS[rtype]}/{oid}"
        for key in ("intent_seq", "actor_verified"):
            if key in base.details:
                details[key] = base.details[key]
        if rtype == "CLIENT_ROLE" and name and "-->" in name:
            details["client_id"], _, role = name.partition("-->")
            target = replace(target, name=role)
        rep = reps.get((rtype, name or ""))
        if rep is not None:
            details.update(_came_with(rep))
        outcome = Outcome.UNCHANGED if action == "SKIPPED" else Outcome.SUCCEEDED
        out.append(replace(base, type=etype, outcome=outcome, target=target, details=details))
    return out


# ---------------------------------------------------------------------------------------------- before / after
def _pick(obj: object, fields: tuple[str, ...]) -> dict[str, Any]:
    """The allowlisted fields of a representation (`a.b` reaches into a nested object)."""
    out: dict[str, Any] = {}
    if not isinstance(obj, dict):
        return out
    for name in fields:
        head, _, sub = name.partition(".")
        value = obj.get(head)
        if sub:
            value = value.get(sub) if isinstance(value, dict) else None
        if value is not None:
            out[name] = value
    return out


def _keep(read: object, keep: str, details: Mapping[str, Any]) -> Any:
    fields = _KEEP[keep]
    if isinstance(read, list):  # a flow's executions: the one the request names, or all (added/removed)
        wanted = details.get("execution_id")
        rows = [_pick(r, fields) for r in read if isinstance(r, dict)]
        if wanted:
            return next((r for r in rows if r.get("id") == wanted), None)
        return rows[:200]
    return _pick(read, fields)


def state_events(
    base: IdentityEvent, type_: EventType, keep: str | None, before: Mapping[str, Any], after: Mapping[str, Any]
) -> list[IdentityEvent]:
    """The outcome record(s) of a configuration write, given the resources read before and after.

    A realm PUT (`keep is None`, the realm itself read) becomes one record per
    category whose values changed, besides the request's own `admin.change`
    record; any other write gets `before` and `after` of its resource, and
    outcome `unchanged` when Keycloak said yes but nothing differs.
    """
    if base.outcome is not Outcome.SUCCEEDED:
        return [base]
    if type_ is E.ADMIN_CHANGE and "" in before:
        old_rep, new_rep = before.get(""), after.get("")
        if not isinstance(old_rep, dict) or not isinstance(new_rep, dict):
            return [replace(base, details={**base.details, "state_read": False})]
        old, new = old_rep, new_rep
        out = []
        changed_fields = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        for etype, fields in REALM_CATEGORIES:
            b, a = _pick(old, fields), _pick(new, fields)
            if a != b:
                out.append(
                    replace(
                        base,
                        type=etype,
                        target=Party(kind="realm", name=base.realm),
                        details={**base.details, "before": b, "after": a},
                    )
                )
        summary = replace(
            base,
            details={**base.details, "changed_fields": changed_fields[:100]},
            outcome=Outcome.SUCCEEDED if changed_fields else Outcome.UNCHANGED,
        )
        return [summary, *out]
    if keep is None or not before:
        return [base]
    path = next(iter(before))
    was = _keep(before.get(path), keep, base.details) if before.get(path) is not None else None
    now = _keep(after.get(path), keep, base.details) if after.get(path) is not None else None
    details = {**base.details, "before": was, "after": now}
    if was is None and now is None:
        return [replace(base, details={**base.details, "state_read": False})]
    outcome = Outcome.UNCHANGED if was == now else Outcome.SUCCEEDED
    return [replace(base, outcome=outcome, details=details)]


def keep_of(type_: EventType, path: str, method: str) -> str | None:
    """The allowlist name of the rule that named this write (for `state_events`)."""
    parts = tuple(p for p in path.split("/") if p)
    for rule in RULES:
        if rule.type is type_ and rule.method == method and match(parts, rule.pattern) is not None:
            return rule.keep
    return None


# ---------------------------------------------------------------------------------------------- effects
EFFECT_LIMIT = 100  # users examined around one composite or group role change
EFFECT_LISTED = 20  # user ids named in the record


def effect_target(type_: EventType, target: Party | None, parts: tuple[str, ...]) -> str | None:
    """Whose holders to examine for the effect of a role change: `group:{id}`, `role:{admin path}`,
    `role-id:{id}`, or None when the change reaches one user only (its before/after says it all)."""
    if type_ in (E.ROLE_GRANTED, E.ROLE_REVOKED) and target is not None and target.kind == "group" and target.id:
        return f"group:{target.id}"
    if type_ is not E.ROLE_COMPOSITE_CHANGED:
        return None
    if (v := match(parts, "roles/{role}/composites")) is not None:
        return f"role:roles/{v['role']}"
    if (v := match(parts, "clients/{client}/roles/{role}/composites")) is not None:
        return f"role:clients/{v['client']}/roles/{v['role']}"
    for pattern in ("roles-by-id/{role}/composites", "ui-ext/role-mapping-delete/roles/{role}"):
        if (v := match(parts, pattern)) is not None:
            return f"role-id:{v['role']}"
    return None


def effect(
    before: Mapping[str, list[str] | None], after: Mapping[str, list[str] | None], complete: bool
) -> dict[str, Any]:
    """How many users' effective roles a change altered, and (bounded) which: from each examined user's
    effective roles read just before and just after the change."""
    changed = [
        uid
        for uid, roles in before.items()
        if roles is not None and after.get(uid) is not None and roles != after.get(uid)
    ]
    unread = [uid for uid, roles in before.items() if roles is None or after.get(uid) is None]
    return {
        "users_changed": len(changed),
        "users": changed[:EFFECT_LISTED],
        "users_examined": len(before),
        "complete": complete and not unread,
    }
