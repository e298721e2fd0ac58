"""Policies load into validated, frozen objects; a bad policy stops the start naming file, key and reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from sidecar.cli import main
from sidecar.errors import PolicyError
from sidecar.policy.schema import load_policy
from sidecar.resources import DEFAULT_POLICY


def test_shipped_default_policy_loads_fail_closed() -> None:
    """policies/default.toml loads; changes, logins and audit reads fail closed; secrets are named for redaction."""
    policy = load_policy(DEFAULT_POLICY)
    assert policy.name == "default"
    assert (policy.failure.admin_changes, policy.failure.logins, policy.failure.audit_reads) == ("closed",) * 3
    assert {"password", "otp", "client_secret", "refresh_token", "totpsecret"} <= set(policy.redaction.fields)
    assert len(policy.digest) == 64


def test_digest_changes_with_any_setting(tmp_path: Path) -> None:
    """Two policies that differ in one value have different digests (the digest goes into every seal)."""
    text = DEFAULT_POLICY.read_text()
    other = tmp_path / "p.toml"
    other.write_text(text.replace('logins = "closed"', 'logins = "open_unsafe"'))
    assert load_policy(other).digest != load_policy(DEFAULT_POLICY).digest


@pytest.mark.parametrize(
    ("body", "key", "reason"),
    [
        ('[policy]\nname = "x"\n[failure]\nlogins = "open"\n', "failure.logins", "must be one of"),
        ('[policy]\nname = "x"\n[failure]\nadmin_changes = 1\n', "failure.admin_changes", "must be str"),
        ('[policy]\nname = "x"\n[capture]\nmax_body_bytes = 10\n', "capture.max_body_bytes", "between"),
        ('[policy]\nname = "x"\n[capture]\nmax_body_bytes = true\n', "capture.max_body_bytes", "must be int"),
        ('[policy]\nname = "x"\n[capture]\nrecord_everything = true\n', "capture.record_everything", "unknown key"),
        ('[policy]\nname = "x"\n[capture]\nrecord_admin_reads = false\n', "capture.record_admin_reads", "unknown key"),
        ('[policy]\nname = "x"\n[redaction]\nfields = ["ok", ""]\n', "redaction.fields", "non-empty strings"),
        ('[policy]\nname = "x"\n[extra]\n', "extra", "unknown section"),
        ('[failure]\nlogins = "closed"\n', "policy.name", "is required"),
        ('[policy\nname = "x"\n', "-", "not valid TOML"),
    ],
)
def test_bad_policy_names_file_key_and_reason(tmp_path: Path, body: str, key: str, reason: str) -> None:
    """Each kind of mistake is a PolicyError with the file, the key and why."""
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    assert err.value.file == str(path) and err.value.key == key and reason in err.value.reason


def test_serve_refuses_to_start_with_a_bad_policy(tmp_path: Path) -> None:
    """`sidecar serve --policy BAD` exits 2 with one line naming the file and key, before listening."""
    bad = tmp_path / "bad.toml"
    bad.write_text('[policy]\nname = "x"\n[failure]\nlogins = "maybe"\n')
    result = CliRunner().invoke(
        main,
        [
            "serve",
            "--upstream",
            "http://127.0.0.1:9",
            "--data",
            str(tmp_path / "d"),
            "--init",
            "--origin",
            "t/p",
            "--policy",
            str(bad),
            "--listen",
            "127.0.0.1:9",
        ],
    )
    assert result.exit_code == 2
    assert f"{bad}: failure.logins: must be one of" in result.output
    assert "Traceback" not in result.output
