"""Typed, validated policy objects, loaded from TOML files (the shipped one: sidecar/policies/).

A policy is data. `load_policy` turns a file into a frozen `Policy` or raises
PolicyError naming the file, the key and the reason, so a bad policy stops the
start. The policy digest (SHA-256 of the policy's canonical JSON) goes into
every segment header and seal, so an auditor knows which rules were in force.

Dangerous choices say so in their name: a failure mode can only be "closed" or
"open_unsafe".
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sidecar.core.canonical import canonical_bytes
from sidecar.errors import PolicyError
from sidecar.resources import DEFAULT_POLICY

FAILURE_MODES = ("closed", "open_unsafe")


@dataclass(frozen=True, slots=True)
class FailurePolicy:
    """What happens when the ledger cannot take a record."""

    admin_changes: str = "closed"  # a mutating admin request is forwarded only after its intent is durable
    logins: str = "closed"  # a login response is released only after its record is durable
    audit_reads: str = "closed"


DEFAULT_MAX_BODY = 1024 * 1024


@dataclass(frozen=True, slots=True)
class CapturePolicy:
    # Admin API reads (GET) are never recorded: the route table classifies writes only. (A
    # `record_admin_reads` key existed but no code read it; it is refused now as an unknown key.)
    max_body_bytes: int = DEFAULT_MAX_BODY
    record_before_after: bool = True


@dataclass(frozen=True, slots=True)
class RedactionPolicy:
    """Names of form fields, JSON keys, headers and cookies whose values never reach a record.

    Records are built from allowlisted fields, so none of these is ever copied; sidecar.policy.redaction
    also drops any event detail named like one of them (case-insensitive), whichever list names it.
    """

    fields: tuple[str, ...] = ()
    headers: tuple[str, ...] = ()
    cookies: tuple[str, ...] = ()


# The documented default of which values identify a person (docs/format.md §5.2).
DEFAULT_PARTY_FIELDS = ("name", "username")
DEFAULT_EVENT_FIELDS = ("ip",)
DEFAULT_DETAIL_FIELDS = (
    "email",
    "firstName",
    "ip",
    "ipAddress",
    "lastName",
    "unverified",
    "user_agent",
    "userAgent",
    "username",
)


@dataclass(frozen=True, slots=True)
class PiiPolicy:
    """Which record values identify a person; with a subject key store they are encrypted under its key.

    `party_fields`: members of a user's actor or target party; `event_fields`: top-level event
    members; `detail_fields`: keys anywhere in `details` (a nested object is encrypted whole).
    """

    party_fields: tuple[str, ...] = DEFAULT_PARTY_FIELDS
    event_fields: tuple[str, ...] = DEFAULT_EVENT_FIELDS
    detail_fields: tuple[str, ...] = DEFAULT_DETAIL_FIELDS


_PARTY_MEMBERS = ("username", "name")  # a party's id, client and kind are opaque or structural, never encrypted
_EVENT_MEMBERS = ("ip",)


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    version: int
    failure: FailurePolicy
    capture: CapturePolicy
    redaction: RedactionPolicy
    pii: PiiPolicy = PiiPolicy()
    source: str = ""

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("source")
        return out

    @property
    def digest(self) -> str:
        return hashlib.sha256(canonical_bytes(self.to_json())).hexdigest()


def _table(doc: dict[str, Any], key: str, file: str) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise PolicyError(file, key, "must be a table")
    return value


def _take(table: dict[str, Any], section: str, key: str, kind: type, default: Any, file: str) -> Any:
    if key not in table:
        return default
    value = table[key]
    if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
        raise PolicyError(file, f"{section}.{key}", f"must be {kind.__name__}, got {type(value).__name__}")
    return value


def parse_policy(doc: dict[str, Any], file: str = "<policy>") -> Policy:
    known = {"policy", "failure", "capture", "redaction", "pii"}
    for key in doc:
        if key not in known:
            raise PolicyError(file, key, f"unknown section (known: {', '.join(sorted(known))})")
    head = _table(doc, "policy", file)
    name = _take(head, "policy", "name", str, "", file)
    if not name:
        raise PolicyError(file, "policy.name", "is required")
    version = _take(head, "policy", "version", int, 1, file)
    fail_t = _table(doc, "failure", file)
    cap_t = _table(doc, "capture", file)
    red_t = _table(doc, "redaction", file)
    pii_t = _table(doc, "pii", file)
    for section, table, allowed in (
        ("failure", fail_t, FailurePolicy.__slots__),
        ("pii", pii_t, PiiPolicy.__slots__),
        ("capture", cap_t, CapturePolicy.__slots__),
        ("redaction", red_t, RedactionPolicy.__slots__),
        ("policy", head, ("name", "version")),
    ):
        for key in table:
            if key not in allowed:
                raise PolicyError(file, f"{section}.{key}", f"unknown key (known: {', '.join(allowed)})")
    modes = {}
    for key in FailurePolicy.__slots__:
        mode = _take(fail_t, "failure", key, str, "closed", file)
        if mode not in FAILURE_MODES:
            raise PolicyError(file, f"failure.{key}", f"must be one of {FAILURE_MODES}, got {mode!r}")
        modes[key] = mode
    max_body = _take(cap_t, "capture", "max_body_bytes", int, DEFAULT_MAX_BODY, file)
    if not 1024 <= max_body <= 64 * 1024 * 1024:
        raise PolicyError(file, "capture.max_body_bytes", f"must be between 1 KiB and 64 MiB, got {max_body}")
    capture = CapturePolicy(max_body, _take(cap_t, "capture", "record_before_after", bool, True, file))
    lists = {}
    for key in RedactionPolicy.__slots__:
        value = _take(red_t, "redaction", key, list, [], file)
        if not all(isinstance(v, str) and v for v in value):
            raise PolicyError(file, f"redaction.{key}", "must be a list of non-empty strings")
        lists[key] = tuple(sorted({v.lower() for v in value}))
    pii = {}
    limits: tuple[tuple[str, tuple[str, ...] | None], ...] = (
        ("party_fields", _PARTY_MEMBERS),
        ("event_fields", _EVENT_MEMBERS),
        ("detail_fields", None),
    )
    for key, members in limits:
        value = _take(pii_t, "pii", key, list, list(getattr(PiiPolicy(), key)), file)
        if not all(isinstance(v, str) and v for v in value):
            raise PolicyError(file, f"pii.{key}", "must be a list of non-empty strings")
        wrong = [v for v in value if members is not None and v not in members]
        if wrong and members is not None:
            raise PolicyError(file, f"pii.{key}", f"{wrong[0]!r} cannot be encrypted (allowed: {', '.join(members)})")
        pii[key] = tuple(sorted(set(value)))
    return Policy(name, version, FailurePolicy(**modes), capture, RedactionPolicy(**lists), PiiPolicy(**pii), file)


def load_policy(path: Path | None = None) -> Policy:
    path = path or DEFAULT_POLICY
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise PolicyError(str(path), "-", "file not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(str(path), "-", f"not valid TOML: {exc}") from exc
    return parse_policy(doc, str(path))
