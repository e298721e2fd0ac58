"""Serve configuration: flags over SIDECAR_* variables over the TOML file over defaults; secrets never
from a flag or the file and always masked; `sidecar config check` prints the effective values."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from sidecar.cli import main
from sidecar.config import MASK, resolve
from sidecar.errors import ConfigError
from sidecar.ledger.keystore import KeyStore


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sidecar.toml"
    path.write_text(text)
    return path


def test_precedence_is_flag_then_env_then_file_then_default(tmp_path: Path) -> None:
    """Each value comes from the highest source that sets it, and the source is reported."""
    cfg = _file(tmp_path, 'upstream = "http://file:1"\ndata = "/file"\nlisten = "0.0.0.0:1"\nretention_days = 7\n')
    env = {"SIDECAR_LISTEN": "127.0.0.1:2", "SIDECAR_DATA": "/env"}
    r = resolve({"data": Path("/flag")}, env, cfg)
    assert (str(r["data"]), r.sources["data"]) == ("/flag", "flag")
    assert (r["listen"], r.sources["listen"]) == ("127.0.0.1:2", "env")
    assert (r["upstream"], r.sources["upstream"]) == ("http://file:1", "file")
    assert (r["retention_days"], r.sources["retention_days"]) == (7, "file")
    assert (r["heartbeat"], r.sources["heartbeat"]) == (30.0, "default")


def test_config_file_from_environment_and_empty_env_unsets(tmp_path: Path) -> None:
    """SIDECAR_CONFIG names the file; an empty SIDECAR_TLS_CERT/KEY unsets the file's TLS pair."""
    cfg = _file(tmp_path, 'upstream = "http://u"\ndata = "/d"\ntls_cert = "/c"\ntls_key = "/k"\n')
    r = resolve({}, {"SIDECAR_CONFIG": str(cfg), "SIDECAR_TLS_CERT": "", "SIDECAR_TLS_KEY": ""})
    assert r["tls_cert"] is None and r["tls_key"] is None and r.config_file == cfg


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ('upstream = "u"\ndata = "d"\nstroe = "x"\n', {}, "unknown key 'stroe'"),
        ('upstream = "u"\ndata = "d"\nretention_days = "7"\n', {}, "retention_days must be an integer"),
        ('upstream = "u"\ndata = "d"\nreader_secret = "s3cr3t"\n', {}, "is a secret and cannot be in a file"),
        (
            'upstream = "u"\ndata = "d"\n',
            {"SIDECAR_HIGH_WATER": "lots"},
            "SIDECAR_HIGH_WATER: high_water must be an integer",
        ),
        ('upstream = "u"\ndata = "d"\n', {"SIDECAR_ACCESS_LOG": "maybe"}, "must be true or false"),
        ('data = "d"\n', {}, "upstream is required"),
        ('upstream = "u"\ndata = "d"\ntls_cert = "/c"\n', {}, "tls_cert and tls_key go together"),
        ('upstream = "u"\ndata = "d"\nwitness_quorum = 0\n', {}, "witness_quorum must be at least 1"),
    ],
)
def test_bad_configuration_names_the_source_and_key(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    """A typo, a wrong type, a secret in the file, a bad env value or a missing required setting is a ConfigError saying which."""
    with pytest.raises(ConfigError, match=message):
        resolve({}, env, _file(tmp_path, text))


def test_witness_settings_reach_serve_from_env_and_file(tmp_path: Path) -> None:
    """The witness list, quorum and staleness bound come from any source into the settings serve runs with."""
    from sidecar.config import settings

    cfg = _file(tmp_path, f'upstream = "http://u:1"\ndata = "{tmp_path}"\nwitnesses = "/w.json"\nwitness_quorum = 2\n')
    s = settings(resolve({}, {"SIDECAR_WITNESS_STALE": "42.5"}, cfg))
    assert (s.witness_file, s.witness_quorum, s.witness_stale_s) == (Path("/w.json"), 2, 42.5)


def test_config_check_reports_a_witness_quorum_larger_than_the_list(tmp_path: Path) -> None:
    """config check exits 2 when the witness quorum exceeds the witnesses listed."""
    data = tmp_path / "ledger"
    KeyStore(data).init("config.test/ledger")
    listed = tmp_path / "witnesses.json"
    listed.write_text('{"format": "kc-ledger-witnesses/1", "witnesses": []}')
    result = CliRunner().invoke(
        main,
        [
            "config",
            "check",
            "--upstream",
            "http://127.0.0.1:9",
            "--data",
            str(data),
            "--witnesses",
            str(listed),
            "--witness-quorum",
            "2",
        ],
    )
    assert result.exit_code == 2
    assert "problem: witnesses: witness_quorum 2 is more than the 0 witnesses listed" in result.output


def test_config_check_prints_effective_values_with_secrets_masked(tmp_path: Path) -> None:
    """config check shows each value and its source, masks the reader secret, and exits 0 for a startable configuration."""
    data = tmp_path / "ledger"
    KeyStore(data).init("config.test/ledger")
    cfg = _file(tmp_path, f'upstream = "http://127.0.0.1:9"\ndata = "{data}"\ntrusted_proxies = ["10.0.0.0/8"]\n')
    result = CliRunner().invoke(
        main,
        ["config", "check", "--config", str(cfg), "--listen", "127.0.0.1:9443"],
        env={"SIDECAR_READER_SECRET": "very-secret-value-1"},
    )
    assert result.exit_code == 0, result.output
    assert "very-secret-value-1" not in result.output
    rows = {
        line.split("=")[0].strip(): line.split("=", 1)[1].strip()
        for line in result.output.splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert rows["reader_secret"] == f"{MASK}    # env"
    assert rows["listen"] == "127.0.0.1:9443    # flag"
    assert rows["trusted_proxies"] == "10.0.0.0/8    # file"


def test_config_check_exits_2_naming_each_problem(tmp_path: Path) -> None:
    """A bad trusted proxy, unreadable TLS files and a data directory without keys are each reported; exit 2."""
    cfg = _file(
        tmp_path,
        f'upstream = "http://127.0.0.1:9"\ndata = "{tmp_path / "none"}"\n'
        f'trusted_proxies = ["10.0.0.0/33"]\ntls_cert = "{tmp_path / "c.pem"}"\n'
        f'tls_key = "{tmp_path / "k.pem"}"\n',
    )
    result = CliRunner().invoke(main, ["config", "check", "--config", str(cfg)])
    assert result.exit_code == 2
    assert "problem: trusted_proxies: trusted proxy '10.0.0.0/33'" in result.output
    assert "problem: tls: TLS certificate" in result.output
    assert "problem: data: no ledger keys" in result.output


def test_serve_stops_with_one_line_on_a_bad_config_file(tmp_path: Path) -> None:
    """serve refuses an unknown key in its config file with exit 2 and a one-line error, no traceback."""
    cfg = _file(tmp_path, 'upstream = "http://127.0.0.1:9"\ndata = "/d"\nlisn = "x"\n')
    result = CliRunner().invoke(main, ["serve", "--config", str(cfg)])
    assert result.exit_code == 2
    assert "unknown key 'lisn'" in result.output and "Traceback" not in result.output


def test_every_setting_is_documented() -> None:
    """docs/operations.md's settings table names every serve setting with its flag and environment variable."""
    from sidecar.config import OPTIONS

    text = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    for opt in OPTIONS:
        flag = f"`{opt.flag_name}`" if opt.flag and not opt.secret else "—"
        assert f"| `{opt.key}` | {flag} | `{opt.env}` |" in text, opt.key


def test_every_metric_is_documented_with_its_labels() -> None:
    """docs/operations.md's metrics table has a row for every sidecar metric naming its type and each of its labels."""
    from prometheus_client.metrics import MetricWrapperBase

    from sidecar import metrics

    text = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    section = text.split("### 4.2 Prometheus metrics", 1)[1].split("\n### ", 1)[0]
    rows = [
        [c.strip() for c in line.strip("|").split(" | ")] for line in section.splitlines() if line.startswith("| `")
    ]
    defined = [m for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)]
    assert len(defined) > 30
    for metric in defined:
        (family,) = metric.describe()
        exposed = family.name + ("_total" if family.type == "counter" else "")
        row = next((r for r in rows if f"`{exposed}`" in r[0]), None)
        assert row is not None, exposed
        assert row[1] == family.type, (exposed, row[1])
        # prometheus-client has no public accessor for a metric's declared label names
        for label in metric._labelnames:
            assert f"`{label}`" in row[2], (exposed, label)
