"""Where a captured request's time goes: its cost split into parts, measured in this process.

The exchange is the recorded client-credentials grant (tests/capture/exchanges), run through the
same objects `sidecar serve` wires (`CapturePipeline`, `Redactor`, `TokenVerifier`, `Ledger`), each
part timed on its own, p50 of many runs:

* routing: `CapturePipeline.plan` (what the proxy asks for every request);
* classification + attribution: `needs_before`, `begin`, `needs_after`, `finish` (the returned
  token's claims are read here);
* token verification: `TokenVerifier.verify` of an RS256 bearer token with the JWKS cached (what
  an admin or account request pays; a token grant presents none), for a token presented again
  (the verifier remembers a verified token) and for tokens each presented the first time;
* redaction + encoding: `Redactor.record` and `encode_record` of the event;
* the ledger's one-appender path, `Ledger.append` to acknowledgement, split by timers around the
  writer's commit and its write call: queueing and wake-ups, building the commit (encode, Merkle
  root, checkpoint, one Ed25519 signature; the signature alone is given too), the hand-off to the
  write thread and back, and the write + `fdatasync` itself; this disk's fsync probe beside it.

The ledger timers wrap two private methods of one `Ledger` instance (bench instrumentation; if
they are renamed the split is left out and only the total is reported).
"""

from __future__ import annotations

import hashlib
import secrets
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sidecar import loop
from sidecar.bench.common import ORIGIN, percentile
from sidecar.bench.references import FsyncProbe


def _p50_us(fn: Callable[[], object], n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        times.append((time.perf_counter_ns() - t0) / 1000)
    return percentile(times, 50)


async def _p50_us_async(fn: Callable[[], Awaitable[object]], n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        await fn()
        times.append((time.perf_counter_ns() - t0) / 1000)
    return percentile(times, 50)


def _exchange(recordings: Path) -> tuple[Any, Any]:
    """The recorded client-credentials exchange as the proxy hands it to capture."""
    from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

    from sidecar.bench.servers import load_recording
    from sidecar.core.exchange import RequestHead, RequestView, ResponseView

    rec = load_recording(recordings / "token_client_credentials.json")
    head = RequestHead(
        method=rec["method"],
        path=rec["path"],
        raw_path=rec["raw_path"],
        query=MultiDictProxy(MultiDict()),
        headers=CIMultiDictProxy(CIMultiDict([("Host", "127.0.0.1:8443"), *rec["request_headers"]])),
        client_ip="127.0.0.1",
        scheme="http",
        host="127.0.0.1:8443",
        request_id="bench-1",
    )
    request = RequestView(head, rec["request_body"], False)
    response = ResponseView(
        rec["status"], CIMultiDictProxy(CIMultiDict(rec["response_headers"])), rec["response_body"], False
    )
    return request, response


def _bearer_verifier(fresh: int = 0) -> tuple[Any, str, list[str]]:
    """A TokenVerifier whose realm JWKS is already cached, an RS256 token it accepts, and `fresh` more
    (distinct tokens, each verified once: what a first presentation costs)."""
    from joserfc import jwt
    from joserfc.jwk import RSAKey

    from sidecar.capture.tokens import TokenVerifier

    key = RSAKey.generate_key(2048, parameters={"kid": "bench", "use": "sig", "alg": "RS256"})
    jwks = {"keys": [key.as_dict(private=False)]}

    async def fetch(realm: str) -> dict[str, Any] | None:
        return jwks

    now = int(time.time())

    def token(jti: str) -> str:
        claims = {
            "iss": "http://127.0.0.1:8443/realms/ledger-test",
            "sub": "u-1",
            "azp": "admin-cli",
            "iat": now,
            "exp": now + 3600,
            "preferred_username": "carol",
        }
        return jwt.encode({"alg": "RS256", "kid": "bench"}, {**claims, "jti": jti} if jti else claims, key)

    return TokenVerifier(fetch), token(""), [token(f"j-{i}") for i in range(fresh)]


async def _ledger_split(data_dir: Path, payload: dict[str, Any], n: int, probe: FsyncProbe) -> dict[str, float]:
    """Ledger.append to acknowledgement with one appender, split by timers in the writer."""
    from sidecar.ledger import writer as writer_module
    from sidecar.ledger.keystore import KeyStore
    from sidecar.ledger.writer import Ledger, LedgerConfig

    KeyStore(data_dir).init(ORIGIN)
    ledger = await Ledger.open(data_dir, config=LedgerConfig())
    # One appender: each append is exactly one commit and one write, timed into `now` during its await.
    now: dict[str, float] = {}
    # The write itself is `Ledger.write_at` (an attribute of the instance) or the module's `_write_at`.
    on_instance = callable(getattr(ledger, "write_at", None))
    holder: Any = ledger if on_instance else writer_module
    attr = "write_at" if on_instance else "_write_at"
    split = hasattr(ledger, "_commit") and hasattr(ledger, "_write") and callable(getattr(holder, attr, None))
    original_write_at = getattr(holder, attr, None)
    if split:
        commit, write = ledger._commit, ledger._write

        async def timed_commit(batch: Any) -> None:
            t0 = time.perf_counter_ns()
            await commit(batch)
            now["commit"] = (time.perf_counter_ns() - t0) / 1000

        async def timed_write(data: bytes, offset: int) -> None:
            t0 = time.perf_counter_ns()
            await write(data, offset)
            now["write"] = (time.perf_counter_ns() - t0) / 1000

        def timed_write_at(*args: Any) -> Any:
            t0 = time.perf_counter_ns()
            try:
                return original_write_at(*args)  # type: ignore[misc]
            finally:
                now["thread"] = (time.perf_counter_ns() - t0) / 1000

        ledger._commit = timed_commit  # type: ignore[method-assign]
        ledger._write = timed_write  # type: ignore[method-assign]
        setattr(holder, attr, timed_write_at)
    series: dict[str, list[float]] = {
        "append_total": [],
        "queue_and_wakeups": [],
        "commit_build": [],
        "write_thread_handoff": [],
        "write_fsync": [],
    }
    try:
        for i in range(n + 20):
            if i % 50 == 0:
                probe.sample(5)
            now.clear()
            t0 = time.perf_counter_ns()
            await ledger.append(payload)
            total = (time.perf_counter_ns() - t0) / 1000
            if i < 20:
                continue
            series["append_total"].append(total)
            if {"commit", "write", "thread"} <= now.keys():
                series["queue_and_wakeups"].append(total - now["commit"])
                series["commit_build"].append(now["commit"] - now["write"])
                series["write_thread_handoff"].append(now["write"] - now["thread"])
                series["write_fsync"].append(now["thread"])
    finally:
        if split:
            setattr(holder, attr, original_write_at)
        await ledger.close()
    # p50 of each part's own per-append series (the parts of one append add up to its total).
    return {name: percentile(values, 50) for name, values in series.items() if values}


def capture_cost(recordings: Path, work_dir: Path, *, quick: bool = False) -> dict[str, Any]:
    """The parts of one captured client-credentials request, p50 in µs (see the module docstring)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from sidecar.capture.hooks import keyed_fingerprint
    from sidecar.capture.pipeline import CapturePipeline, Facts
    from sidecar.capture.sessions import SessionDirectory
    from sidecar.core.record import encode_record
    from sidecar.policy.redaction import Redactor
    from sidecar.policy.schema import load_policy

    n = 300 if quick else 3000
    request, response = _exchange(recordings)
    pipeline = CapturePipeline(
        SessionDirectory(secrets.token_bytes(32)), keyed_fingerprint(secrets.token_bytes(32)), record_before_after=False
    )
    redactor = Redactor(load_policy(None), keyed_fingerprint(secrets.token_bytes(32)))

    def classify() -> list[Any]:
        pipeline.needs_before(request)
        pending = pipeline.begin(request, Facts())
        assert pending is not None
        pipeline.needs_after(pending, request)
        return pipeline.finish(pending, request, response, Facts())

    events = classify()
    if not events:
        raise RuntimeError("the recorded client-credentials exchange gave no event")
    payload = redactor.record(events[0]).to_json()
    prev = bytes(32)

    def redact_encode() -> bytes:
        body = redactor.record(events[0]).to_json()
        return encode_record(1, 1_764_000_000_000_000_000, prev, body)

    key = Ed25519PrivateKey.generate()
    msg = hashlib.sha256(b"checkpoint").digest()
    verifier, bearer, fresh = _bearer_verifier(max(50, n // 10))

    async def ledger_and_tokens() -> tuple[float, float, dict[str, float]]:
        await verifier.verify(bearer)  # fills the JWKS cache
        first = iter(fresh)
        first_us = await _p50_us_async(lambda: verifier.verify(next(first)), len(fresh))
        verify_us = await _p50_us_async(lambda: verifier.verify(bearer), max(50, n // 10))
        probe = FsyncProbe(work_dir)
        try:
            split = await _ledger_split(work_dir / "ledger", payload, max(100, n // 6), probe)
        finally:
            probe.close()
        split["fsync_probe"] = probe.summary()["p50_us"]
        return first_us, verify_us, split

    work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        work_dir = Path(tmp)
        first_us, verify_us, ledger = loop.run(ledger_and_tokens())  # on the loop `serve` runs on
    parts = {
        "routing (plan)": _p50_us(lambda: pipeline.plan(request.head), n),
        "classification + attribution": _p50_us(classify, n),
        "redaction + encoding": _p50_us(redact_encode, n),
        "signing (one Ed25519 signature)": _p50_us(lambda: key.sign(msg), n),
    }
    for name, label in (
        ("queue_and_wakeups", "ledger: queueing + wake-ups"),
        ("commit_build", "ledger: build commit (encode, Merkle, sign)"),
        ("write_thread_handoff", "ledger: hand-off to the write thread and back"),
        ("write_fsync", "ledger: pwrite + fdatasync (fsync wait)"),
    ):
        if name in ledger:
            parts[label] = ledger[name]
    parts["ledger: append() to acknowledgement, total"] = ledger["append_total"]
    parts["reference: this disk's fsync probe p50"] = ledger["fsync_probe"]
    parts["token verification (RS256 bearer, cached JWKS)"] = verify_us
    parts["token verification, first presentation (RS256)"] = first_us
    notes = {
        "routing (plan)": "every request pays this, captured or not",
        "classification + attribution": "needs_before, begin, needs_after, finish (returned token's claims read)",
        "redaction + encoding": "Redactor.record + encode_record",
        "signing (one Ed25519 signature)": "part of 'build commit' (one checkpoint per single-record commit)",
        "ledger: append() to acknowledgement, total": "one appender, p50",
        "token verification (RS256 bearer, cached JWKS)": "the same token again (remembered once verified); "
        "admin/account requests only, a token grant has none",
        "token verification, first presentation (RS256)": "a token not seen before: parse, signature, claims",
    }
    overhead = ledger["append_total"] - ledger.get("write_fsync", ledger["fsync_probe"])
    return {
        "exchange": "token_client_credentials",
        "samples": n,
        "parts_us": parts,
        "notes": notes,
        "ledger_beyond_fsync_us": overhead,
        "captured_cpu_path_us": parts["classification + attribution"]
        + parts["redaction + encoding"]
        + parts["routing (plan)"],
    }
