"""The batched segment scan against the record-by-record reference: the same scan, or it gives up.

`scan_segment` tries `_scan_batched` first and falls back to `scan_reference` when the batched scan
returns None, so findings come from the reference alone; what must hold is that a batched scan that
does return gives exactly the reference's `SegmentScan` (and that it does return on clean segments,
or it would only cost time).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.clock import FixedClock
from sidecar.core import verify
from sidecar.core.canonical import NotCanonical, parse_canonical
from sidecar.core.verify import _run_ok, _scan_batched, scan_reference
from sidecar.ledger.keystore import KeyStore
from sidecar.testing import append_events, damage, segment_paths, synthetic_event

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
ALL_SEGMENTS = sorted(VECTORS.rglob("*.seg"))


def _same_or_none(name: str, data: bytes, sizes: frozenset[int] = frozenset()) -> bool:
    """The batched scan (the pure-Python record loop, and the C one when built) equals the reference or gives up."""
    fast = _scan_batched(name, data, sizes, native=False)
    if verify._native is not None and _scan_batched(name, data, sizes, native=True) != fast:
        return False
    return fast is None or fast == scan_reference(name, data, sizes)


@pytest.mark.parametrize("path", ALL_SEGMENTS, ids=lambda p: str(p.relative_to(VECTORS)))
def test_every_vector_segment_scans_the_same_batched(path: Path) -> None:
    """On every committed vector segment (clean, tampered, kc-ledger/1) the batched scan equals the reference or gives up."""
    data = path.read_bytes()
    sizes = frozenset(range(0, 40, 3))
    assert _same_or_none(path.name, data)
    assert _same_or_none(path.name, data, sizes)


def test_clean_vector_segments_take_the_batched_path() -> None:
    """The batched scan accepts the positive vectors' segments without a rotation, so the fast path is really used."""
    taken = [
        p for p in sorted((VECTORS / "segments").glob("*.seg")) if _scan_batched(p.name, p.read_bytes(), frozenset())
    ]
    assert taken


def _odd_event(i: int) -> dict[str, Any]:
    """Events with the shapes the batched scan treats specially: escapes, non-ASCII, encrypted values, erasures."""
    event = synthetic_event(i)
    kind = i % 5
    if kind == 0:
        event["details"] = {"note": 'quote " backslash \\ newline \n tab \t', "n": i}
    elif kind == 1:
        event["details"] = {"name": "Zoë Ångström 名前 😀", "ip": "10.0.0.1", "v": "1.5e3"}
    elif kind == 2:
        event["details"] = {"email": {"kc-enc": 1, "sub": f"u-{i:04d}", "ct": "AAAA"}}
    elif kind == 3:
        event["type"] = "subject.erased"
        event["details"] = {"subject": f"u-{i:04d}"}
    return event


@pytest.fixture(scope="module")
def odd_ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("odd")
    KeyStore(path).init("test.local/odd")
    asyncio.run(append_events(path, [_odd_event(i) for i in range(120)], clock=FixedClock(), segment_max_bytes=8192))
    return path


def test_special_records_scan_the_same_batched(odd_ledger: Path) -> None:
    """Segments with escaped, non-ASCII, encrypted and erasure records take the batched path and equal the reference."""
    taken = 0
    for path in segment_paths(odd_ledger):
        data = path.read_bytes()
        fast = _scan_batched(path.name, data, frozenset(range(0, 200, 7)), native=False)
        taken += fast is not None
        assert fast is None or fast == scan_reference(path.name, data, frozenset(range(0, 200, 7)))
        assert _same_or_none(path.name, data, frozenset(range(0, 200, 7)))
    assert taken


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_damaged_segments_scan_the_same_batched(odd_ledger: Path, data: st.DataObject) -> None:
    """After any overwritten, inserted or deleted bytes the batched scan equals the reference or gives up."""
    path = data.draw(st.sampled_from(segment_paths(odd_ledger)))
    raw = path.read_bytes()
    at = data.draw(st.integers(0, len(raw) - 1))
    how = data.draw(st.sampled_from(["set", "insert", "delete"]))
    damaged = damage(raw, at, how, data.draw(st.binary(min_size=1, max_size=4)))
    assert _same_or_none(path.name, damaged)


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**60), 2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(_JSON, st.sampled_from(["orjson-sorted", "orjson", "json"])), min_size=1, max_size=4))
def test_the_run_check_agrees_with_parse_canonical(items: list[tuple[Any, str]]) -> None:
    """A run of bodies passes the batched canonical check exactly when parse_canonical accepts every body."""
    bodies = []
    for value, how in items:
        if how == "orjson-sorted":
            bodies.append(orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS))
        elif how == "orjson":
            bodies.append(orjson.dumps(value))
        else:
            bodies.append(json.dumps(value, sort_keys=True).encode())
    expected = True
    for body in bodies:
        try:
            parse_canonical(body)
        except NotCanonical:
            expected = False
    assert _run_ok(bodies, [orjson.loads(b) for b in bodies]) == expected


def test_long_runs_are_checked_in_pieces_with_the_same_scan(odd_ledger: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run longer than the batch limit is cut into pieces, and the scan still equals the reference."""
    monkeypatch.setattr(verify, "_RUN_MAX", 3)
    for path in segment_paths(odd_ledger):
        data = path.read_bytes()
        sizes = frozenset(range(0, 200, 5))
        fast = _scan_batched(path.name, data, sizes, native=False)
        assert fast is not None and fast == scan_reference(path.name, data, sizes)
