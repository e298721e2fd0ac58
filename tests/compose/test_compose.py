"""compose/ is checked statically here (Docker cannot run on this machine) and run as processes by
tests/e2e/test_topology.py, from the same two configuration files (compose/sidecar.toml,
compose/keycloak/keycloak.conf).

The static checks: the compose-spec JSON schema (the copy vendored by check-jsonschema), and the
deployment rules of docs/operations.md §1: Keycloak built and started optimized on Postgres, not
published, trusting forwarded headers only from the sidecar; a WORM store with an Object Lock
bucket and a default COMPLIANCE retention; secrets only from files; health checks, ordering and
restart policies; a pinned, non-root sidecar image whose build context carries only the package.
"""

from __future__ import annotations

import json
import re
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from sidecar.config import read_file

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose" / "docker-compose.yml"
SECRETISH = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|PRIVATE", re.IGNORECASE)


def _doc() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def _services() -> dict[str, dict[str, Any]]:
    services = _doc()["services"]
    assert isinstance(services, dict)
    return services


def test_compose_file_is_valid_against_the_compose_spec_schema() -> None:
    """docker-compose.yml validates against the compose-spec JSON schema (a pinned copy shipped by check-jsonschema)."""
    schema = json.loads((files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(_doc()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_schema_check_catches_a_broken_file() -> None:
    """The schema check is not vacuous: a misspelt key and a wrong type are both reported."""
    schema = json.loads((files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text())
    broken = _doc()
    broken["services"]["sidecar"]["helthcheck"] = broken["services"]["sidecar"].pop("healthcheck")
    broken["services"]["postgres"]["restart"] = ["always"]
    messages = [e.message for e in jsonschema.validators.validator_for(schema)(schema).iter_errors(broken)]
    assert any("helthcheck" in m for m in messages) and any("is not of type 'string'" in m for m in messages)


def test_keycloak_runs_optimized_on_postgres_unpublished_behind_the_sidecar_only() -> None:
    """Keycloak is a built image started with start --optimized on Postgres, has no host port, and trusts proxy headers only from the sidecar's address."""
    services = _services()
    kc = services["keycloak"]
    assert "ports" not in kc
    dockerfile = (ROOT / "compose" / "keycloak" / "Dockerfile").read_text()
    assert "kc.sh build" in dockerfile and '"start", "--optimized"' in dockerfile
    conf = (ROOT / "compose" / "keycloak" / "keycloak.conf").read_text().splitlines()
    assert "db=postgres" in conf and "proxy-headers=xforwarded" in conf and "http-enabled=true" in conf
    env = kc["environment"]
    assert env["KC_DB_URL"].startswith("jdbc:postgresql://postgres:")
    assert env["KC_HOSTNAME"].startswith("${PUBLIC_URL")
    sidecar_ip = services["sidecar"]["networks"]["backend"]["ipv4_address"]
    assert env["KC_PROXY_TRUSTED_ADDRESSES"] == sidecar_ip
    assert kc["depends_on"]["postgres"]["condition"] == "service_healthy"
    # Only the sidecar shares the backend network with Keycloak, and the network is internal.
    on_backend = {name for name, svc in services.items() if "backend" in (svc.get("networks") or [])}
    assert on_backend == {"keycloak", "sidecar"}
    assert _doc()["networks"]["backend"]["internal"] is True


def test_only_the_sidecar_is_published() -> None:
    """No service but the sidecar publishes a host port."""
    assert {name for name, svc in _services().items() if svc.get("ports")} == {"sidecar"}


def test_worm_store_bucket_has_object_lock_and_default_compliance_retention() -> None:
    """The bucket-init job creates the bucket with Object Lock and a default COMPLIANCE retention before the sidecar starts."""
    services = _services()
    init = " ".join(services["bucket-init"]["command"])
    assert "--object-lock-enabled-for-bucket" in init
    assert '"Mode":"COMPLIANCE"' in init and "put-object-lock-configuration" in init
    assert services["sidecar"]["depends_on"]["bucket-init"]["condition"] == "service_completed_successfully"
    assert services["bucket-init"]["depends_on"]["worm"]["condition"] == "service_healthy"
    assert services["worm"]["image"].startswith("versity/versitygw:v")


def test_secrets_only_come_from_files() -> None:
    """No environment value in compose is a secret: secret-looking names end in _FILE and point into /run/secrets."""
    doc = _doc()
    for name, svc in doc["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if SECRETISH.search(key):
                assert key.endswith("_FILE") and str(value).startswith("/run/secrets/"), (name, key)
            if key.endswith("_FILE") and str(value).startswith("/run/secrets/"):
                assert str(value).removeprefix("/run/secrets/") in svc["secrets"], (name, key)
    for secret in doc["secrets"].values():
        assert secret["file"].startswith("./secrets/")
    ignored = (ROOT / ".gitignore").read_text()
    assert "/compose/secrets/*" in ignored


def test_every_long_running_service_has_a_health_check_and_a_restart_policy() -> None:
    """Each service but the one-shot bucket-init has a health check and restarts unless stopped; dependencies wait for health."""
    for name, svc in _services().items():
        if name == "bucket-init":
            assert svc["restart"] == "no"
            continue
        assert svc.get("healthcheck", {}).get("test"), name
        assert svc["restart"] == "unless-stopped", name
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert cond["condition"] in ("service_healthy", "service_completed_successfully"), (name, dep)


def test_sidecar_runs_the_shared_config_with_the_ledger_on_a_named_volume() -> None:
    """The sidecar runs `serve --config` on compose/sidecar.toml (valid for the real config parser), with /data a named volume."""
    doc = _doc()
    svc = doc["services"]["sidecar"]
    assert svc["command"] == ["serve", "--config", "/etc/sidecar/sidecar.toml"]
    assert doc["configs"][svc["configs"][0]["source"]]["file"] == "./sidecar.toml"
    assert "ledger:/data" in svc["volumes"] and "ledger" in doc["volumes"]
    settings = read_file(ROOT / "compose" / "sidecar.toml")
    assert settings["upstream"] == "http://keycloak:8080" and str(settings["data"]) == "/data"
    assert settings["store"].startswith("s3://ledger/") and "endpoint=http://worm:" in settings["store"]
    assert {"tls_cert", "tls_key"} <= settings.keys()
    assert "AWS_ACCESS_KEY_ID" not in (svc.get("environment") or {})


def test_sidecar_image_is_pinned_non_root_and_built_from_the_package_only() -> None:
    """The image uses a pinned base, installs only the wheel (no test extras), runs as a non-root uid, and .dockerignore admits only the package."""
    text = (ROOT / "compose" / "Dockerfile").read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert base is not None and re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base.group(1))
    assert "pip install --no-cache-dir /wheels/*.whl" in text and "[test]" not in text
    assert re.search(r"^USER 10001$", text, re.MULTILINE)
    ignore = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert ignore[0] == "*" and {"!pyproject.toml", "!README.md", "!sidecar/"} <= set(ignore)
