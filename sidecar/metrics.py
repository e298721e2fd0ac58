"""Every Prometheus metric the sidecar exports, defined once (prometheus-client).

Role: the one module other parts import to count something. Counters and histograms are
incremented where the thing happens (`RECORDS.labels(type=..., outcome=...).inc()`); gauges that
describe state owned by another object (queue depth, replication backlog) are set at scrape time
by `sidecar.app` from that object, so a gauge can never go stale while its owner changes.

Invariants:

* One registry, `REGISTRY`, not prometheus-client's global one: `/.sidecar/metrics` shows the
  sidecar's metrics plus the process collector, and tests that build several apps in one process
  share the counters without "duplicated timeseries" errors.
* Labels have a small, closed set of values (event types, outcomes, reasons, HTTP codes). A label
  is never a user name, a path, an address or anything else that comes from a request, so a
  client cannot grow the metric set, and nothing personal or secret reaches a scrape.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import aiohttp
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: they double the output and say nothing useful here
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)

_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# -- the ledger -----------------------------------------------------------------------------------
RECORDS = Counter(
    "sidecar_records",
    "Records committed to the ledger, by event type and outcome",
    ["type", "outcome"],
    registry=REGISTRY,
)
APPEND_ERRORS = Counter(
    "sidecar_append_errors",
    "Appends the ledger could not take, by reason (high_water, queue_full, storage)",
    ["reason"],
    registry=REGISTRY,
)
APPEND_SECONDS = Histogram(
    "sidecar_append_seconds", "Time from append to durable, checkpointed record", buckets=_FAST, registry=REGISTRY
)
QUEUE_DEPTH = Gauge("sidecar_ledger_queue_depth", "Records waiting for the writer", registry=REGISTRY)
LEDGER_RECORDS = Gauge("sidecar_ledger_records", "Records in the ledger (tree size)", registry=REGISTRY)
LEDGER_BROKEN = Gauge("sidecar_ledger_broken", "1 while the writer is broken (appends fail)", registry=REGISTRY)
UNVERIFIED_TOKENS = Counter(
    "sidecar_unverified_tokens",
    "Recorded actions attributed to a bearer token whose "
    "signature could not be verified (an alarm: forged or unknown-key token)",
    ["type"],
    registry=REGISTRY,
)
UNRECORDED = Counter(
    "sidecar_unrecorded",
    "Actions let through without a record (failure mode open_unsafe, "
    "or an outcome after the change was applied), by kind",
    ["kind"],
    registry=REGISTRY,
)

AUDIT_DENIED = Counter(
    "sidecar_audit_denied",
    "Auditor endpoint requests refused, by reason (no_token, "
    "invalid_token, forbidden, revoked, unconfirmed); every one is counted, records are "
    "rate-limited per requester",
    ["reason"],
    registry=REGISTRY,
)

# -- HTTP -----------------------------------------------------------------------------------------
RESPONSES = Counter(
    "sidecar_http_responses", "Responses the sidecar sent, by status code class", ["code"], registry=REGISTRY
)
UNAVAILABLE = Counter(
    "sidecar_http_503",
    "503 answers, by reason (high_water, queue_full, storage, upstream, other)",
    ["reason"],
    registry=REGISTRY,
)
REQUEST_SECONDS = Histogram(
    "sidecar_request_seconds",
    "Whole exchange time through the sidecar, by kind (proxy, sidecar)",
    ["kind"],
    buckets=_FAST,
    registry=REGISTRY,
)
UPSTREAM_SECONDS = Histogram(
    "sidecar_upstream_seconds",
    "Keycloak's time to answer (to response headers), by caller (proxy, side)",
    ["caller"],
    buckets=_FAST,
    registry=REGISTRY,
)
UPSTREAM_ERRORS = Counter(
    "sidecar_upstream_errors",
    "Requests to Keycloak that got no answer, by caller and error (connect, timeout, other)",
    ["caller", "error"],
    registry=REGISTRY,
)
UPSTREAM_UP = Gauge("sidecar_upstream_up", "1 while the last readiness probe reached Keycloak", registry=REGISTRY)

# -- replication ----------------------------------------------------------------------------------
REPLICATION_BACKLOG = Gauge(
    "sidecar_replication_backlog_bytes", "Committed bytes not yet in the store", registry=REGISTRY
)
REPLICATION_PENDING = Gauge(
    "sidecar_replication_pending_seconds",
    "Age of the oldest commit not yet in the store (the lag now; 0 when none waits)",
    registry=REGISTRY,
)
REPLICATION_LAG = Gauge(
    "sidecar_replication_lag_seconds", "Commit-to-store time over the recent commits", ["stat"], registry=REGISTRY
)
REPLICATION_STATE = Gauge(
    "sidecar_replication_state", "1 for the replicator's current state", ["state"], registry=REGISTRY
)
REPLICATION_LAST_SUCCESS = Gauge(
    "sidecar_replication_last_success_timestamp_seconds",
    "When a replication step last succeeded (Unix time)",
    registry=REGISTRY,
)
REPLICATION_OBJECTS = Gauge("sidecar_replication_objects", "Objects this process wrote to the store", registry=REGISTRY)
REPLICATION_STATES = ("ok", "retrying", "over-high-water", "integrity-error")

# -- checks ---------------------------------------------------------------------------------------
VERIFY_LAST = Gauge(
    "sidecar_verify_last_timestamp_seconds", "When the last verify finished (Unix time)", registry=REGISTRY
)
VERIFY_OK = Gauge("sidecar_verify_last_ok", "1 if the last verify found the ledger intact, else 0", registry=REGISTRY)
VERIFY_FINDINGS = Gauge("sidecar_verify_last_findings", "Findings of the last verify", registry=REGISTRY)
DRIFT_LAST = Gauge(
    "sidecar_drift_last_timestamp_seconds", "When the last drift check finished (Unix time)", registry=REGISTRY
)
DRIFT_CHECKED = Gauge("sidecar_drift_last_checked", "Targets the last drift check compared", registry=REGISTRY)
DRIFT_FINDINGS = Gauge("sidecar_drift_last_findings", "Drifts the last drift check found", registry=REGISTRY)

# -- the drift monitor (sidecar.drift.monitor) -----------------------------------------------------
DRIFT_DETECTED = Counter(
    "sidecar_drift_detected",
    "drift.detected records the monitor wrote, by kind (unrecorded-change, unrecorded-event, state-mismatch)",
    ["kind"],
    registry=REGISTRY,
)
DRIFT_ACTIVE = Gauge("sidecar_drift_active", "Mismatches the latest sweep found", registry=REGISTRY)
DRIFT_POLLS = Counter("sidecar_drift_polls", "Reconciliations of Keycloak's event stores", registry=REGISTRY)
DRIFT_EVENTS = Counter("sidecar_drift_events_checked", "Keycloak events matched against the ledger", registry=REGISTRY)
DRIFT_SWEEPS = Counter("sidecar_drift_sweeps", "Sweeps of the live access state", registry=REGISTRY)
DRIFT_ERRORS = Counter(
    "sidecar_drift_errors",
    "Drift monitor reads that failed, by phase (baseline, poll, sweep, upload, peers: the other origins' ledgers)",
    ["phase"],
    registry=REGISTRY,
)
DRIFT_SWEEP_SECONDS = Gauge("sidecar_drift_sweep_seconds", "Duration of the latest sweep", registry=REGISTRY)
DRIFT_SWEEP_REQUESTS = Gauge("sidecar_drift_sweep_requests", "Keycloak reads of the latest sweep", registry=REGISTRY)
DRIFT_LAST_POLL = Gauge(
    "sidecar_drift_last_poll_timestamp_seconds", "When a reconciliation last succeeded", registry=REGISTRY
)
DRIFT_LAST_SWEEP = Gauge("sidecar_drift_last_sweep_timestamp_seconds", "When a sweep last succeeded", registry=REGISTRY)
DRIFT_PEER_UNTRUSTED = Counter(
    "sidecar_drift_peer_untrusted",
    "Other origins' ledgers whose bytes in the bucket did not verify (their records are not used), by origin",
    ["origin"],
    registry=REGISTRY,
)
DRIFT_PEER_COVERAGE = Gauge(
    "sidecar_drift_peer_coverage_timestamp_seconds",
    "Time of the newest verified checkpoint of each other origin the drift monitor follows",
    ["origin"],
    registry=REGISTRY,
)
DRIFT_DEFERRED = Gauge(
    "sidecar_drift_deferred_events",
    "Keycloak events waiting for grace or for every other origin's ledger to cover them",
    registry=REGISTRY,
)

READY = Gauge(
    "sidecar_ready", "1 while the sidecar is ready (ledger, replication and Keycloak fine)", registry=REGISTRY
)


def record_verify(ok: bool, findings: int) -> None:
    """Note the result of a verify run (the self-check resource, or any caller in this process)."""
    VERIFY_LAST.set(time.time())
    VERIFY_OK.set(1 if ok else 0)
    VERIFY_FINDINGS.set(findings)


def record_drift(checked: int, findings: int) -> None:
    """Note the result of a drift check."""
    DRIFT_LAST.set(time.time())
    DRIFT_CHECKED.set(checked)
    DRIFT_FINDINGS.set(findings)


def exposition() -> tuple[bytes, str]:
    """The registry in Prometheus' text format, with its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectorError | ConnectionError):
        return "connect"
    return "other"


def upstream_trace(caller: str) -> aiohttp.TraceConfig:
    """A client trace that times every request to Keycloak and counts the ones without an answer."""
    trace = aiohttp.TraceConfig()
    observe = UPSTREAM_SECONDS.labels(caller=caller).observe  # the label child once, not per request

    async def start(_session: Any, ctx: SimpleNamespace, _params: Any) -> None:
        ctx.sidecar_started = time.perf_counter()

    async def headers(_session: Any, ctx: SimpleNamespace, _params: Any) -> None:
        began = getattr(ctx, "sidecar_started", None)
        if began is not None:
            observe(time.perf_counter() - began)

    async def failed(_session: Any, _ctx: SimpleNamespace, params: aiohttp.TraceRequestExceptionParams) -> None:
        UPSTREAM_ERRORS.labels(caller=caller, error=_error_kind(params.exception)).inc()

    trace.on_request_start.append(start)
    trace.on_request_end.append(headers)
    trace.on_request_exception.append(failed)
    return trace
