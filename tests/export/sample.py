"""A small ledger with one record of every event type the product emits, shaped as the capture layer writes them.

Admin changes come as intent + outcome pairs (the outcome names its intent in `details.intent_seq`),
as `sidecar.capture.hooks` writes them; logins and token grants as single records.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sidecar.core.events import EventType, IdentityEvent, Outcome, Party
from sidecar.ledger.keystore import KeyStore
from sidecar.ledger.writer import Ledger, LedgerConfig

ORIGIN = "export.test/ledger"
ADMIN = Party(id="u-admin", username="admin")
ALICE = Party(id="u-alice", username="alice", kind="user")
REALM = "ledger-test"

# (type, outcome, target, details, error, paired-with-intent)
_ADMIN: list[tuple[EventType, Party | None, dict[str, Any]]] = [
    (
        EventType.ROLE_GRANTED,
        ALICE,
        {"roles": ["auditor"], "after": {"realm_roles": ["auditor"], "client_roles": {}, "groups": []}},
    ),
    (EventType.ROLE_REVOKED, ALICE, {"roles": ["auditor"]}),
    (EventType.ROLE_GRANTED, Party(id="g-ops", kind="group", name="/ops"), {"roles": ["operator"]}),
    (EventType.GROUP_JOINED, ALICE, {"group_id": "g-ops", "group": "/ops"}),
    (EventType.GROUP_LEFT, ALICE, {"group_id": "g-ops", "group": "/ops"}),
    (EventType.ROLE_COMPOSITE_CHANGED, Party(id="viewer", kind="role"), {"roles": ["operator"], "change": "added"}),
    (
        EventType.USER_CREATED,
        Party(username="erin", kind="user"),
        {"fields": ["email", "username"], "created_id": "u-erin"},
    ),
    (EventType.USER_UPDATED, ALICE, {"fields": ["email"]}),
    (EventType.USER_DISABLED, ALICE, {"fields": ["enabled"]}),
    (EventType.USER_ENABLED, ALICE, {"fields": ["enabled"]}),
    (EventType.USER_DELETED, Party(id="u-erin", username="erin", kind="user"), {}),
    (EventType.PASSWORD_RESET, ALICE, {"temporary": False}),
    (EventType.CREDENTIAL_REMOVED, ALICE, {"credential_id": "c-1", "credential_type": "otp"}),
    (EventType.CLIENT_CREATED, Party(client="new-app", kind="client"), {"fields": ["clientId"]}),
    (EventType.CLIENT_DELETED, Party(id="c-uuid", kind="client"), {"client_id": "new-app"}),
    (EventType.CLIENT_SECRET_ROTATED, Party(id="c-uuid", kind="client"), {"client_id": "ledger-app"}),
    (EventType.USER_IMPERSONATED, ALICE, {}),
    (EventType.SESSION_REVOKED, ALICE, {}),
    (EventType.ORGANIZATION_JOINED, ALICE, {"organization_id": "org-1"}),
    (EventType.ORGANIZATION_LEFT, ALICE, {"organization_id": "org-1"}),
    (EventType.ADMIN_CHANGE, None, {"path": "clients/c-uuid/roles", "method": "POST"}),
    (EventType.ADMIN_CHANGE, None, {"path": "authentication/flows/x", "method": "PUT"}),
    # named configuration changes (docs/capture.md §5, §6)
    (EventType.CLIENT_UPDATED, Party(id="c-uuid", client="ledger-app", kind="client"), {"fields": ["redirectUris"]}),
    (EventType.GROUP_CREATED, Party(name="ops2", kind="group"), {"created_id": "g-ops2"}),
    (EventType.GROUP_UPDATED, Party(id="g-ops", name="ops", kind="group"), {}),
    (EventType.GROUP_DELETED, Party(id="g-ops2", kind="group"), {}),
    (EventType.ROLE_CREATED, Party(name="operator2", kind="role"), {}),
    (EventType.ROLE_UPDATED, Party(id="operator2", kind="role"), {}),
    (EventType.ROLE_DELETED, Party(id="operator2", kind="role"), {}),
    (
        EventType.REALM_EVENTS_CHANGED,
        Party(kind="realm", name=REALM),
        {"path": "events/config", "before": {"eventsEnabled": True}, "after": {"eventsEnabled": False}},
    ),
    (EventType.REALM_EVENTS_CLEARED, None, {"path": "admin-events", "events": "admin"}),
    (
        EventType.REALM_BRUTE_FORCE_CHANGED,
        Party(kind="realm", name=REALM),
        {"before": {"bruteForceProtected": True}, "after": {"bruteForceProtected": False}},
    ),
    (
        EventType.REALM_PASSWORD_POLICY_CHANGED,
        Party(kind="realm", name=REALM),
        {"before": {"passwordPolicy": "length(12)"}, "after": {}},
    ),
    (
        EventType.REALM_OTP_POLICY_CHANGED,
        Party(kind="realm", name=REALM),
        {"before": {"otpPolicyDigits": 6}, "after": {"otpPolicyDigits": 8}},
    ),
    (
        EventType.REALM_FLOW_BINDING_CHANGED,
        Party(kind="realm", name=REALM),
        {"before": {"browserFlow": "browser"}, "after": {"browserFlow": "no-otp"}},
    ),
    (EventType.AUTH_FLOW_CHANGED, Party(kind="flow", name="no-otp"), {"change": "copied"}),
    (
        EventType.AUTH_EXECUTION_CHANGED,
        Party(kind="flow", name="browser"),
        {"change": "requirement", "before": {"requirement": "REQUIRED"}, "after": {"requirement": "DISABLED"}},
    ),
    (
        EventType.REQUIRED_ACTION_CHANGED,
        Party(kind="required-action", name="CONFIGURE_TOTP"),
        {"change": "updated", "before": {"enabled": True}, "after": {"enabled": False}},
    ),
    (EventType.IDENTITY_PROVIDER_CREATED, Party(kind="identity-provider", name="corp"), {}),
    (
        EventType.IDENTITY_PROVIDER_UPDATED,
        Party(kind="identity-provider", name="corp"),
        {"before": {"enabled": True}, "after": {"enabled": False}},
    ),
    (EventType.IDENTITY_PROVIDER_DELETED, Party(kind="identity-provider", name="corp"), {}),
    (EventType.IDENTITY_PROVIDER_MAPPER_CREATED, Party(kind="identity-provider", name="corp"), {}),
    (EventType.IDENTITY_PROVIDER_MAPPER_UPDATED, Party(kind="identity-provider", name="corp"), {"mapper_id": "m-1"}),
    (EventType.IDENTITY_PROVIDER_MAPPER_DELETED, Party(kind="identity-provider", name="corp"), {"mapper_id": "m-1"}),
    (EventType.CLIENT_SCOPE_CREATED, Party(kind="client-scope", name="roles2"), {}),
    (EventType.CLIENT_SCOPE_UPDATED, Party(id="s-1", kind="client-scope"), {}),
    (EventType.CLIENT_SCOPE_DELETED, Party(id="s-1", kind="client-scope"), {}),
    (EventType.CLIENT_SCOPE_ASSIGNED, Party(id="s-1", kind="client-scope"), {"as": "optional", "client_id": "c-uuid"}),
    (EventType.CLIENT_SCOPE_UNASSIGNED, Party(id="s-1", kind="client-scope"), {"as": "optional"}),
    (EventType.PROTOCOL_MAPPER_CREATED, Party(id="s-1", kind="client-scope"), {}),
    (EventType.PROTOCOL_MAPPER_UPDATED, Party(id="s-1", kind="client-scope"), {"mapper_id": "pm-1"}),
    (EventType.PROTOCOL_MAPPER_DELETED, Party(id="s-1", kind="client-scope"), {"mapper_id": "pm-1"}),
    (EventType.SCOPE_MAPPING_CHANGED, Party(id="s-1", kind="client-scope"), {"change": "added", "roles": ["viewer"]}),
    (
        EventType.ADMIN_PERMISSIONS_CHANGED,
        Party(kind="realm"),
        {"resource": "users", "before": {"enabled": False}, "after": {"enabled": True}},
    ),
]


def events() -> list[tuple[IdentityEvent, bool]]:
    """(event, is an admin change written as intent + outcome)."""
    out: list[tuple[IdentityEvent, bool]] = []
    common: dict[str, Any] = {"realm": REALM, "source_ip": "127.0.0.1"}
    out += [
        (
            IdentityEvent(
                EventType.LOGIN_SUCCEEDED,
                Outcome.SUCCEEDED,
                actor=Party(id="u-alice", username="alice"),
                client="ledger-app",
                session="s-1",
                details={"method": "browser", "step": "password"},
                **common,
            ),
            False,
        ),
        (
            IdentityEvent(
                EventType.LOGIN_FAILED,
                Outcome.FAILED,
                actor=Party(username="mallory"),
                client="ledger-app",
                error="invalid_user_credentials",
                **common,
            ),
            False,
        ),
        (IdentityEvent(EventType.MFA_OTP_VERIFIED, Outcome.SUCCEEDED, actor=ALICE, session="s-1", **common), False),
        (
            IdentityEvent(
                EventType.MFA_OTP_FAILED, Outcome.FAILED, actor=ALICE, error="invalid_user_credentials", **common
            ),
            False,
        ),
        (
            IdentityEvent(
                EventType.TOKEN_ISSUED,
                Outcome.SUCCEEDED,
                actor=Party(client="ledger-robot", kind="client"),
                client="ledger-robot",
                details={"grant": "client_credentials"},
                **common,
            ),
            False,
        ),
        (
            IdentityEvent(
                EventType.TOKEN_FAILED,
                Outcome.FAILED,
                client="ledger-app",
                error="invalid_client",
                details={"grant": "authorization_code"},
                **common,
            ),
            False,
        ),
        (
            IdentityEvent(
                EventType.TOKEN_REFRESHED, Outcome.SUCCEEDED, actor=ALICE, client="ledger-app", session="s-1", **common
            ),
            False,
        ),
        (IdentityEvent(EventType.TOKEN_REVOKED, Outcome.SUCCEEDED, client="ledger-app", **common), False),
        (
            IdentityEvent(EventType.TOKEN_EXCHANGED, Outcome.SUCCEEDED, actor=ALICE, client="ledger-app", **common),
            False,
        ),
        (IdentityEvent(EventType.LOGOUT_COMPLETED, Outcome.SUCCEEDED, actor=ALICE, session="s-1", **common), False),
        (
            IdentityEvent(
                EventType.CREDENTIAL_ENROLLED,
                Outcome.SUCCEEDED,
                actor=ALICE,
                target=ALICE,
                details={"credential_type": "otp", "via": "required-action"},
                **common,
            ),
            False,
        ),
        (IdentityEvent(EventType.PASSWORD_CHANGED, Outcome.SUCCEEDED, actor=ALICE, target=ALICE, **common), False),
        (
            IdentityEvent(
                EventType.AUDIT_READ,
                Outcome.SUCCEEDED,
                actor=Party(id="u-aud", username="auditor"),
                details={"objects": 3},
                **common,
            ),
            False,
        ),
        (
            IdentityEvent(
                EventType.DRIFT_DETECTED,
                Outcome.SUCCEEDED,
                realm=REALM,
                target=Party(id="u-alice", kind="user", name="alice"),
                details={
                    "kind": "state-mismatch",
                    "field": "realm_roles",
                    "expected": [],
                    "live": ["operator"],
                    "first_seen_ns": "1767225600000000000",
                },
            ),
            False,
        ),
        (
            IdentityEvent(
                EventType.ALARM_RAISED,
                Outcome.SUCCEEDED,
                realm=REALM,
                actor=Party(kind="unverified"),
                details={
                    "reason": "unverified_token_accepted",
                    "event": "role.granted",
                    "method": "POST",
                    "status": 204,
                    "unverified": {"sub": "u-admin"},
                },
            ),
            False,
        ),
        (
            IdentityEvent(
                EventType.STATE_SNAPSHOT,
                Outcome.SUCCEEDED,
                realm=REALM,
                actor=Party(client="ledger-robot", kind="client"),
                details={"digest": "sha256:" + "0" * 64, "users": 4},
            ),
            False,
        ),
    ]
    for etype, target, details in _ADMIN:
        out.append(
            (
                IdentityEvent(
                    etype, Outcome.SUCCEEDED, actor=ADMIN, target=target, client="admin-cli", details=details, **common
                ),
                True,
            )
        )
    # A membership that was already as asked (docs/capture.md: no-op outcomes).
    out.append(
        (
            IdentityEvent(
                EventType.GROUP_JOINED,
                Outcome.UNCHANGED,
                actor=ADMIN,
                target=ALICE,
                client="admin-cli",
                details={"group": "/ops", "group_id": "g-ops"},
                **common,
            ),
            True,
        )
    )
    out.append(
        (
            IdentityEvent(
                EventType.ROLE_GRANTED,
                Outcome.FAILED,
                actor=ADMIN,
                target=ALICE,
                client="admin-cli",
                error="Role not found",
                details={"roles": ["nope"]},
                **common,
            ),
            True,
        )
    )
    return out


def write_ledger(path: Path, *, rotate: bool = False) -> int:
    """Write the sample ledger (every type, ledger.started/key.rotated included); returns the record count."""

    async def run() -> int:
        KeyStore(path).init(ORIGIN)
        ledger = await Ledger.open(
            path, config=LedgerConfig(segment_max_bytes=4096, fsync=False, epoch_s=0.0 if rotate else 3600.0)
        )
        for event, paired in events():
            if paired:
                intent = IdentityEvent(
                    event.type,
                    Outcome.PENDING,
                    realm=event.realm,
                    actor=event.actor,
                    target=event.target,
                    client=event.client,
                    source_ip=event.source_ip,
                    request_id="r-" + event.type.value,
                    details={**event.details, "phase": "intent"},
                )
                receipt = await ledger.append(intent)
                outcome = IdentityEvent(
                    event.type,
                    event.outcome,
                    realm=event.realm,
                    actor=event.actor,
                    target=event.target,
                    client=event.client,
                    source_ip=event.source_ip,
                    request_id="r-" + event.type.value,
                    error=event.error,
                    details={
                        **event.details,
                        "phase": "outcome",
                        "intent_seq": receipt.seq,
                        "status": 404 if event.outcome is Outcome.FAILED else 204,
                    },
                )
                await ledger.append(outcome)
            else:
                await ledger.append(event)
        await ledger.close()
        return ledger.size

    return asyncio.run(run())
