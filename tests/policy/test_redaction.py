"""Redaction by field: a detail named like any secret field, header or cookie of the policy is dropped."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sidecar.core.events import EventType, IdentityEvent, Outcome, Party
from sidecar.policy.redaction import Redactor
from sidecar.policy.schema import load_policy


def _event(**details: object) -> IdentityEvent:
    return IdentityEvent(
        EventType.ROLE_GRANTED,
        Outcome.SUCCEEDED,
        realm="r",
        actor=Party(id="a", username="adm"),
        target=Party(id="u", username="user"),
        details={"roles": ["viewer"], **details},
    )


@pytest.mark.parametrize("name", ["password", "Authorization", "set-cookie", "KEYCLOAK_IDENTITY", "kc_restart"])
def test_a_detail_named_like_a_secret_field_header_or_cookie_is_dropped(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """redaction.fields, .headers and .cookies of the default policy each keep their names out of a record."""
    redactor = Redactor(load_policy(None), lambda s: "fp")
    with caplog.at_level(logging.ERROR, "sidecar.policy"):
        payload = redactor.record(_event(**{name: "s3cret"})).to_json()
    assert payload["details"] == {"roles": ["viewer"]}
    assert name in caplog.text and "s3cret" not in caplog.text


def test_only_the_listed_names_are_dropped(tmp_path: Path) -> None:
    """A policy whose header and cookie lists are empty keeps details of those names; identity fields never change."""
    path = tmp_path / "p.toml"
    path.write_text('[policy]\nname = "p"\n[redaction]\nfields = ["password"]\nheaders = ["x-secret"]\n')
    payload = (
        Redactor(load_policy(path), lambda s: "fp").record(_event(authorization="kept", **{"X-Secret": "no"})).to_json()
    )
    assert payload["details"] == {"roles": ["viewer"], "authorization": "kept"}
    assert payload["actor"]["username"] == "adm" and payload["target"]["id"] == "u"
