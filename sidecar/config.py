"""`sidecar serve` configuration: flags, SIDECAR_* environment variables and a TOML file.

Role: the one table of serve settings (`OPTIONS`) from which the command-line flags, the
environment variable names, the TOML keys and `sidecar config check` are all made, so they cannot
disagree. Precedence, highest first:

1. a command-line flag (``--store URL``),
2. its environment variable (``SIDECAR_STORE``; set but empty unsets a text, path or list setting),
3. the TOML file named by ``--config FILE`` or ``SIDECAR_CONFIG`` (``store = "..."``),
4. the built-in default.

Invariants:

* Secrets never come from a flag or the file: the reader's client secret comes from
  ``reader_secret_file`` (a file, e.g. a container secret) or the environment variable
  ``SIDECAR_READER_SECRET``. A secret key in the TOML file is refused, naming the key.
* `Resolved.describe()` (what `config check` prints) masks every secret and says where each value
  came from; nothing here logs a value.
* Unknown keys (file) and malformed values (file or environment) are `ConfigError`s naming the
  source, the key and the reason: a typo stops the start instead of being ignored.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidecar.errors import ConfigError

ENV_PREFIX = "SIDECAR_"
CONFIG_ENV = "SIDECAR_CONFIG"
MASK = "********"


@dataclass(frozen=True)
class Option:
    """One serve setting: its TOML key (also the env suffix and, with dashes, the flag)."""

    key: str
    kind: str  # "str", "path", "int", "float", "bool", "list"
    default: Any
    help: str
    secret: bool = False  # masked in config check; never taken from a flag or the file
    flag: bool = True  # has a command-line flag
    cli: str | None = None  # the flag, when not the key with dashes (a repeatable flag is singular)

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.upper()

    @property
    def flag_name(self) -> str:
        return self.cli or "--" + self.key.replace("_", "-")


OPTIONS: tuple[Option, ...] = (
    Option(
        "upstream", "str", None, "Keycloak's base URL as the sidecar reaches it, e.g. http://127.0.0.1:8080 (required)"
    ),
    Option("data", "path", None, "ledger data directory (required)"),
    Option("listen", "str", "127.0.0.1:8443", "HOST:PORT to listen on"),
    Option("policy", "path", None, "policy TOML (default: the shipped sidecar/policies/default.toml)"),
    Option("init", "bool", False, "create keys first if the data directory has none"),
    Option("origin", "str", None, "ledger origin name for init (default: host-based)"),
    Option("segment_max_bytes", "int", 8 * 1024 * 1024, "seal a segment at this size"),
    Option("segment_max_age", "float", 3600.0, "... or at this age, seconds"),
    Option("epoch", "float", 3600.0, "signing key lifetime in seconds (forward security)"),
    Option("heartbeat", "float", 30.0, "idle checkpoint interval, seconds"),
    Option("store", "str", None, "remote copy: a directory, file:///dir, or s3://bucket/prefix?endpoint=URL&region=R"),
    Option("retention_days", "int", 365, "S3 Object Lock retention of each object written"),
    Option("high_water", "int", 256, "MiB of unreplicated ledger before the failure policy applies"),
    Option("replication_interval", "float", 0.2, "seconds between replication steps"),
    Option("auditor_realm", "str", "master", "realm whose tokens may read the auditor endpoint"),
    Option("auditor_role", "str", "ledger-auditor", "realm role auditors need"),
    Option("reader_realm", "str", None, "realm of the read-only service account (before/after state)"),
    Option("reader_client_id", "str", None, "client id of that service account"),
    Option("reader_secret_file", "path", None, "file holding its client secret (e.g. /run/secrets/reader_secret)"),
    Option("reader_secret", "str", None, "the client secret itself: environment only", secret=True, flag=False),
    Option(
        "capture_budget",
        "int",
        64,
        "MiB of captured bodies held at once (all requests); beyond it captured requests get 503",
    ),
    Option(
        "identity_connections", "int", 64, "upstream connections for captured requests (logins, tokens, admin writes)"
    ),
    Option("passthrough_connections", "int", 256, "upstream connections for everything else (a separate pool)"),
    Option("auditor_recheck", "float", 5.0, "seconds an auditor's live role and enabled check is cached"),
    Option(
        "auditor_denied_window",
        "float",
        60.0,
        "seconds per requester in which refused audit reads make one record plus one aggregate",
    ),
    Option("witnesses", "path", None, "witness list (kc-ledger-witnesses/1 JSON with urls): get checkpoints cosigned"),
    Option("witness_quorum", "int", 1, "cosignatures a checkpoint needs"),
    Option(
        "witness_stale", "float", 300.0, "seconds the newest checkpoint may wait for its quorum before readiness fails"
    ),
    Option(
        "subjects",
        "path",
        None,
        "subject key store (default: DATA/subjects, created on a new ledger's first start): identifying "
        "values are always encrypted under per-person keys so they can be erased; a missing or foreign "
        "store of a ledger bound to one stops the start",
    ),
    Option(
        "subjects_backup",
        "list",
        (),
        "a backup copy of the subject key store that every key and erasure "
        "reaches (flag repeatable, env comma-separated, file a list)",
        cli="--subjects-backup",
    ),
    Option(
        "trusted_proxies",
        "list",
        (),
        "addresses or CIDRs of load balancers whose X-Forwarded-For/-Proto are "
        "believed (flag repeatable, env comma-separated, file a list); from anyone else they are overwritten",
        cli="--trusted-proxy",
    ),
    Option("tls_cert", "path", None, "PEM certificate chain for a TLS listener (reloaded on SIGHUP)"),
    Option("tls_key", "path", None, "PEM private key for the TLS listener (reloaded on SIGHUP)"),
    Option("drift", "bool", True, "run the drift monitor (needs the state reader's service account)"),
    Option("drift_poll", "float", 10.0, "seconds between reconciliations of Keycloak's event stores"),
    Option("drift_sweep", "float", 300.0, "seconds between full sweeps of the live access state"),
    Option("drift_rate", "float", 50.0, "most Keycloak reads per second the drift monitor makes"),
    Option(
        "drift_peers",
        "path",
        None,
        "origins trust file (kc-ledger-origins/1, `sidecar keys origins`) of a cluster's sidecars: drift "
        "reconciles Keycloak's shared events against every listed origin's ledger, read from the bucket",
    ),
    Option(
        "drift_peers_store",
        "str",
        None,
        "the bucket holding every origin's prefix (default: the store URL without its last path part)",
    ),
    Option("upstream_probe", "float", 5.0, "seconds between readiness probes of Keycloak (0: off)"),
    Option("log_level", "str", "INFO", "DEBUG, INFO, WARNING or ERROR"),
    Option("log_format", "str", "text", "text or json (one JSON object per line)"),
    Option("access_log", "bool", True, "one line per request (method, path without query, status, time)"),
    Option("uvloop", "bool", True, "run on uvloop where it is installed (off: Python's own asyncio loop)"),
)
BY_KEY = {o.key: o for o in OPTIONS}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _from_text(opt: Option, text: str, where: str) -> Any:
    """Parse an environment value; an empty one unsets a text, path or list setting."""
    if text == "" and opt.kind in ("str", "path", "list"):
        return () if opt.kind == "list" else None
    try:
        if opt.kind == "int":
            return int(text)
        if opt.kind == "float":
            return float(text)
    except ValueError:
        raise ConfigError(
            f"{where}: {opt.key} must be a{'n integer' if opt.kind == 'int' else ' number'}, got {text!r}"
        ) from None
    if opt.kind == "bool":
        if text.strip().lower() in _TRUE:
            return True
        if text.strip().lower() in _FALSE:
            return False
        raise ConfigError(f"{where}: {opt.key} must be true or false, got {text!r}")
    if opt.kind == "list":
        return tuple(part.strip() for part in text.split(",") if part.strip())
    if opt.kind == "path":
        return Path(text)
    return text


def _from_toml(opt: Option, value: Any, where: str) -> Any:
    checks: dict[str, Callable[[Any], bool]] = {
        "str": lambda v: isinstance(v, str),
        "path": lambda v: isinstance(v, str),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "bool": lambda v: isinstance(v, bool),
        "list": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    }
    if not checks[opt.kind](value):
        want = {
            "list": "a list of strings",
            "path": "a string (a path)",
            "int": "an integer",
            "float": "a number",
            "bool": "true or false",
            "str": "a string",
        }[opt.kind]
        raise ConfigError(f"{where}: {opt.key} must be {want}, got {type(value).__name__}")
    if opt.kind == "path":
        return Path(value)
    if opt.kind == "float":
        return float(value)
    if opt.kind == "list":
        return tuple(value)
    return value


def read_file(path: Path) -> dict[str, Any]:
    """The settings in a TOML config file, checked against OPTIONS."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: not valid TOML: {exc}") from exc
    out: dict[str, Any] = {}
    for key, value in doc.items():
        opt = BY_KEY.get(key)
        if opt is None:
            raise ConfigError(f"config file {path}: unknown key {key!r} (known: {', '.join(sorted(BY_KEY))})")
        if opt.secret:
            raise ConfigError(
                f"config file {path}: {key} is a secret and cannot be in a file; "
                f"use {key}_file or the environment variable {opt.env}"
            )
        out[key] = _from_toml(opt, value, f"config file {path}")
    return out


@dataclass(frozen=True)
class Resolved:
    """Every serve setting's effective value and where it came from (flag, env, file, default)."""

    values: dict[str, Any]
    sources: dict[str, str]
    config_file: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def describe(self) -> list[tuple[str, str, str]]:
        """(key, shown value, source) for every option; secrets masked."""
        rows = []
        for opt in OPTIONS:
            value = self.values[opt.key]
            if opt.secret and value:
                shown = MASK
            elif value is None:
                shown = "(unset)"
            elif isinstance(value, tuple):
                shown = ", ".join(value) if value else "(none)"
            elif isinstance(value, bool):
                shown = "true" if value else "false"
            else:
                shown = str(value)
            rows.append((opt.key, shown, self.sources[opt.key]))
        return rows


def resolve(
    flags: Mapping[str, Any], env: Mapping[str, str] | None = None, config_file: Path | None = None
) -> Resolved:
    """Merge flag values (None or () = not given), the environment and the config file, by precedence."""
    env = os.environ if env is None else env
    if config_file is None and env.get(CONFIG_ENV):
        config_file = Path(env[CONFIG_ENV])
    from_file = read_file(config_file) if config_file is not None else {}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for opt in OPTIONS:
        given = flags.get(opt.key)
        if given is not None and given != () and opt.flag and not opt.secret:
            values[opt.key], sources[opt.key] = (tuple(given) if opt.kind == "list" else given), "flag"
        elif opt.env in env:
            values[opt.key], sources[opt.key] = _from_text(opt, env[opt.env], f"environment {opt.env}"), "env"
        elif opt.key in from_file:
            values[opt.key], sources[opt.key] = from_file[opt.key], "file"
        else:
            values[opt.key], sources[opt.key] = opt.default, "default"
    for key in ("upstream", "data"):
        if values[key] is None:
            raise ConfigError(f"{key} is required: --{key}, {BY_KEY[key].env} or '{key} = ...' in the config file")
    if bool(values["tls_cert"]) != bool(values["tls_key"]):
        raise ConfigError("tls_cert and tls_key go together: give both or neither")
    if values["witness_quorum"] < 1:
        raise ConfigError(f"witness_quorum must be at least 1, got {values['witness_quorum']}")
    if values["log_format"] not in ("text", "json"):
        raise ConfigError(f"log_format must be text or json, got {values['log_format']!r}")
    return Resolved(values, sources, config_file)


def listen_address(listen: str) -> tuple[str, int]:
    host, _, port_s = listen.rpartition(":")
    if not host or not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise ConfigError(f"listen must be HOST:PORT, got {listen!r}")
    return host.strip("[]"), int(port_s)


def reader_secret(resolved: Resolved) -> str | None:
    """The reader's client secret: from its file if one is named, else from the environment."""
    path: Path | None = resolved["reader_secret_file"]
    if path is not None:
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"reader_secret_file {path}: {exc.strerror or exc}") from exc
    value: str | None = resolved["reader_secret"]
    return value


def settings(resolved: Resolved) -> Any:
    """The `sidecar.app.Settings` these values describe (checked: listen address, secret file)."""
    from sidecar.app import Settings
    from sidecar.drift.monitor import DriftConfig
    from sidecar.ledger.writer import LedgerConfig

    host, port = listen_address(resolved["listen"])
    return Settings(
        upstream=resolved["upstream"],
        data_dir=resolved["data"],
        host=host,
        port=port,
        policy_file=resolved["policy"],
        store_url=resolved["store"],
        store_retention_days=resolved["retention_days"],
        high_water_bytes=resolved["high_water"] * 1024 * 1024,
        replication_interval_s=resolved["replication_interval"],
        auditor_realm=resolved["auditor_realm"],
        auditor_role=resolved["auditor_role"],
        reader_realm=resolved["reader_realm"],
        reader_client_id=resolved["reader_client_id"],
        reader_secret=reader_secret(resolved),
        trusted_proxies=resolved["trusted_proxies"],
        upstream_probe_s=resolved["upstream_probe"],
        access_log=resolved["access_log"],
        capture_budget_bytes=resolved["capture_budget"] * 1024 * 1024,
        identity_connections=resolved["identity_connections"],
        passthrough_connections=resolved["passthrough_connections"],
        auditor_recheck_s=resolved["auditor_recheck"],
        auditor_denied_window_s=resolved["auditor_denied_window"],
        witness_file=resolved["witnesses"],
        witness_quorum=resolved["witness_quorum"],
        witness_stale_s=resolved["witness_stale"],
        subjects_dir=resolved["subjects"],
        subjects_backups=tuple(Path(p) for p in resolved["subjects_backup"]),
        drift=DriftConfig(
            poll_s=resolved["drift_poll"], sweep_s=resolved["drift_sweep"], rate_per_s=resolved["drift_rate"]
        )
        if resolved["drift"]
        else None,
        drift_peers=resolved["drift_peers"],
        drift_peers_store=resolved["drift_peers_store"],
        ledger=LedgerConfig(
            segment_max_bytes=resolved["segment_max_bytes"],
            segment_max_age_s=resolved["segment_max_age"],
            epoch_s=resolved["epoch"],
            heartbeat_s=resolved["heartbeat"],
        ),
    )
