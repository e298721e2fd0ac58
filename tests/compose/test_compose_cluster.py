"""compose/docker-compose.cluster.yml checked statically (Docker cannot run here); tests/e2e/test_cluster.py
runs the same topology as processes from the same files (compose/sidecar.toml with per-node SIDECAR_*
values, compose/keycloak/keycloak-cluster.conf, HAProxy's backend rules as in compose/haproxy/haproxy.cfg).
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from sidecar.harness.cluster import CLUSTER_CONF, sidecar_env
from sidecar.harness.haproxy import HAProxy
from sidecar.harness.versitygw import S3Bucket

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose" / "docker-compose.cluster.yml"
HAPROXY_CFG = ROOT / "compose" / "haproxy" / "haproxy.cfg"


def _doc() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def _sections(text: str) -> dict[str, list[str]]:
    """HAProxy config sections (by their header line) with their directives, comments and servers left out."""
    out: dict[str, list[str]] = {}
    current = ""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if not raw.startswith((" ", "\t")):
            current = line.strip()
            out[current] = []
        elif not line.strip().startswith(("server ", "use-server ")):
            out[current].append(" ".join(line.split()))
    return out


def test_cluster_compose_file_is_valid_against_the_compose_spec_schema() -> None:
    """docker-compose.cluster.yml validates against the compose-spec JSON schema."""
    schema = json.loads((files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(_doc()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_two_clustered_keycloak_nodes_each_behind_its_own_sidecar() -> None:
    """Both nodes build keycloak-cluster.conf (ispn caches, jdbc-ping discovery), bind JGroups to the cluster network, and trust only their own sidecar."""
    services = _doc()["services"]
    conf = CLUSTER_CONF.read_text().splitlines()
    assert {"cache=ispn", "cache-stack=jdbc-ping", "db=postgres", "proxy-headers=xforwarded"} <= set(conf)
    for node in ("a", "b"):
        kc, sc = services[f"keycloak-{node}"], services[f"sidecar-{node}"]
        assert kc["build"]["args"]["KEYCLOAK_CONF"] == "keycloak-cluster.conf" and "ports" not in kc
        env = kc["environment"]
        assert env["KC_PROXY_TRUSTED_ADDRESSES"] == sc["networks"]["backend"]["ipv4_address"]
        assert env["KC_CACHE_EMBEDDED_NETWORK_BIND_ADDRESS"] == kc["networks"]["cluster"]["ipv4_address"]
        assert sc["environment"]["SIDECAR_UPSTREAM"] == f"http://keycloak-{node}:8080"
    assert _doc()["networks"]["cluster"]["internal"] is True
    dockerfile = (ROOT / "compose" / "keycloak" / "Dockerfile").read_text()
    assert "ARG KEYCLOAK_CONF=keycloak.conf" in dockerfile and "COPY ${KEYCLOAK_CONF} " in dockerfile


def test_each_sidecar_has_its_own_ledger_origin_and_prefix_in_one_bucket() -> None:
    """Distinct origins, volumes and store prefixes, one bucket; only HAProxy is published, and it is the one trusted proxy."""
    doc = _doc()
    services = doc["services"]
    sidecars = [services["sidecar-a"], services["sidecar-b"]]
    origins = {s["environment"]["SIDECAR_ORIGIN"] for s in sidecars}
    stores = [s["environment"]["SIDECAR_STORE"] for s in sidecars]
    volumes = {v for s in sidecars for v in s["volumes"]}
    assert len(origins) == 2 and len(set(stores)) == 2 and len(volumes) == 2
    assert {st.split("?")[0].split("/")[2] for st in stores} == {"ledger"}
    assert {name for name, svc in services.items() if svc.get("ports")} == {"haproxy"}
    lb_ip = services["haproxy"]["networks"]["lb"]["ipv4_address"]
    assert {s["environment"]["SIDECAR_TRUSTED_PROXIES"] for s in sidecars} == {lb_ip}
    servers = [line.split() for line in HAPROXY_CFG.read_text().splitlines() if line.strip().startswith("server ")]
    assert [s[s.index("source") + 1] for s in servers] == [lb_ip, lb_ip]


def test_haproxy_rules_and_sidecar_settings_match_the_process_test() -> None:
    """The harness writes HAProxy's defaults and backend rules as compose's file has them, and overrides the same SIDECAR_* keys."""
    harness = HAProxy(Path("/nonexistent"), port=1, servers={"a": "127.0.0.1:2", "b": "127.0.0.1:3"})
    ours, theirs = _sections(harness.config()), _sections(HAPROXY_CFG.read_text())
    assert ours["defaults"] == theirs["defaults"]
    assert ours["backend sidecars"] == theirs["backend sidecars"]
    env = sidecar_env(
        name="a",
        upstream="http://127.0.0.1:1",
        data=Path("/d"),
        port=2,
        bucket=S3Bucket("http://127.0.0.1:3", "k", "s", "ledger"),
        origin="o",
        prefix="node-a",
        reader=None,
    )
    compose_keys = {k for k in _doc()["services"]["sidecar-a"]["environment"] if k.startswith("SIDECAR_")}
    harness_keys = {k for k in env if k.startswith("SIDECAR_")}
    # The process test also names the data directory (compose: the volume at /data, as sidecar.toml says).
    assert harness_keys - compose_keys == {"SIDECAR_DATA"} and compose_keys <= harness_keys
