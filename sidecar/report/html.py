"""Rendering the report as one self-contained HTML file: inline CSS and SVG, no script, no network. [pure]

Every value from the ledger is escaped (`html.escape`): a username or a Keycloak error
text is data, never markup. The page has no external reference of any kind (no fonts,
images, styles or scripts from elsewhere), so it renders the same offline.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from typing import Any

from sidecar.report.build import Data

_FAMILY_COLOURS = {
    "login": "#2b6cb0",
    "token": "#4299e1",
    "logout": "#90cdf4",
    "mfa": "#805ad5",
    "credential": "#b794f4",
    "password": "#d53f8c",
    "role": "#dd6b20",
    "group": "#f6ad55",
    "user": "#38a169",
    "client": "#68d391",
    "session": "#319795",
    "admin": "#718096",
    "drift": "#e53e3e",
    "ledger": "#2d3748",
    "key": "#4a5568",
    "audit": "#a0aec0",
    "state": "#1a202c",
    "organization": "#d69e2e",
}
_OUTCOME_COLOURS = {
    "succeeded": "#38a169",
    "unchanged": "#68d391",
    "failed": "#e53e3e",
    "pending": "#d69e2e",
    "unknown": "#a0aec0",
}

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1a202c;background:#f7fafc}
header{padding:20px 32px;color:#fff}
header.v-ok{background:#276749} header.v-bad{background:#9b2c2c}
h1{margin:0;font-size:26px} h2{margin:28px 0 8px;font-size:19px;border-bottom:1px solid #cbd5e0}
main{padding:0 32px 40px;max-width:1200px}
table{border-collapse:collapse;margin:6px 0;font-size:13px} td,th{border:1px solid #e2e8f0;padding:3px 8px;
text-align:left;vertical-align:top} th{background:#edf2f7}
.muted{color:#718096} .bad{color:#9b2c2c;font-weight:600} .ok{color:#276749;font-weight:600}
details{margin:4px 0;background:#fff;border:1px solid #e2e8f0;border-radius:4px;padding:4px 10px}
summary{cursor:pointer;font-weight:600} code{font-size:12px} svg{background:#fff;border:1px solid #e2e8f0}
.legend span{display:inline-block;margin-right:12px;font-size:12px}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:middle}
"""


def _t(ns: int | None) -> str:
    if ns is None:
        return "-"
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _dur(ns: int) -> str:
    s = ns / 1e9
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def _e(value: Any) -> str:
    return escape("" if value is None else str(value))


def _stacked(data: Data, prefix: str, colours: dict[str, str], title: str) -> str:
    b = data.buckets
    counts: dict[int, dict[str, int]] = b.get("counts") or {}
    if not counts:
        return "<p class='muted'>no records</p>"
    keys = sorted({k for c in counts.values() for k in c if k.startswith(prefix)})
    n = max(counts) + 1
    width, height, left, bottom = 1000, 220, 50, 30
    bar_w = (width - left - 10) / n
    peak = max(sum(v for k, v in c.items() if k.startswith(prefix)) for c in counts.values()) or 1
    parts = [
        f"<svg role='img' aria-label='{_e(title)}' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}' xmlns='http://www.w3.org/2000/svg'>"
    ]
    for i in range(n):
        y: float = height - bottom
        for k in keys:
            v = counts.get(i, {}).get(k, 0)
            if not v:
                continue
            h = v / peak * (height - bottom - 10)
            y -= h
            name = k[len(prefix) :]
            parts.append(
                f"<rect x='{left + i * bar_w:.1f}' y='{y:.1f}' width='{max(bar_w - 1, 1):.1f}' "
                f"height='{h:.1f}' fill='{colours.get(name, '#a0aec0')}'><title>{_e(name)}: {v}</title>"
                "</rect>"
            )
    parts.append(
        f"<text x='4' y='14' font-size='11'>{peak}</text><text x='4' y='{height - bottom}' font-size='11'>0</text>"
    )
    start, w = int(b["start"]), int(b["width"])
    for i in (0, n // 2, n - 1):
        parts.append(
            f"<text x='{left + i * bar_w:.1f}' y='{height - 10}' font-size='11'>{_e(_t(start + i * w))}</text>"
        )
    parts.append("</svg>")
    legend = "".join(
        f"<span><i style='background:{colours.get(k[len(prefix) :], '#a0aec0')}'></i>{_e(k[len(prefix) :])}</span>"
        for k in keys
    )
    return f"<div class='legend'>{legend}</div>" + "".join(parts) + f"<p class='muted'>one bar per {_dur(w)}</p>"


def _coverage(data: Data) -> str:
    if data.first_ns is None or data.last_ns is None:
        return "<p class='muted'>no records</p>"
    lo = min([data.first_ns, *data.marks])
    hi = max([data.last_ns, *data.marks])
    span = max(hi - lo, 1)
    width, height = 1000, 46
    parts = [
        f"<svg role='img' aria-label='coverage' width='{width}' height='{height}' viewBox='0 0 {width} "
        f"{height}' xmlns='http://www.w3.org/2000/svg'><rect x='0' y='10' width='{width}' height='16' "
        "fill='#c6f6d5'><title>recording (checkpoints and heartbeats signed)</title></rect>"
    ]
    for a, z in data.gaps:
        x = (a - lo) / span * width
        w = max((z - a) / span * width, 2)
        parts.append(
            f"<rect x='{x:.1f}' y='6' width='{w:.1f}' height='24' fill='#e53e3e'><title>gap: nothing "
            f"signed from {_e(_t(a))} to {_e(_t(z))} ({_dur(z - a)})</title></rect>"
        )
    for ts, what in data.starts:
        x = (ts - lo) / span * width
        parts.append(
            f"<line x1='{x:.1f}' x2='{x:.1f}' y1='2' y2='34' stroke='#2d3748'><title>{_e(what)} at "
            f"{_e(_t(ts))}</title></line>"
        )
    parts.append(
        f"<text x='0' y='44' font-size='11'>{_e(_t(lo))}</text><text x='{width - 170}' y='44' "
        f"font-size='11'>{_e(_t(hi))}</text></svg>"
    )
    return "".join(parts)


def _events_table(events: list[dict[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td>{_e(_t(ev['ts']))}</td><td>#{ev['seq']}</td><td>{_e(ev['type'])}</td><td>{_e(ev['outcome'])}</td>"
        f"<td>{_e(ev['actor'])}</td><td>{_e(ev['target'])}</td><td>{_e(ev['realm'])}</td><td>{_e(ev['ip'])}</td>"
        f"<td>{_e(ev['error'])}{_e(' (erased: ' + ', '.join(ev['erased']) + ')') if ev.get('erased') else ''}"
        "</td></tr>"
        for ev in reversed(events)
    )
    return (
        "<table><tr><th>time</th><th>seq</th><th>type</th><th>outcome</th><th>actor</th><th>target</th>"
        f"<th>realm</th><th>ip</th><th>error</th></tr>{rows}</table>"
    )


def _parties(rows: list[tuple[str, int, list[dict[str, Any]]]], label: str) -> str:
    if not rows:
        return "<p class='muted'>none</p>"
    out = []
    for name, count, events in rows:
        shown = f"newest {len(events)} of {count}" if count > len(events) else f"{count}"
        out.append(
            f"<details><summary>{_e(name)} <span class='muted'>({shown} events as {label})</span>"
            f"</summary>{_events_table(events)}</details>"
        )
    return "".join(out)


def render(data: Data) -> str:
    r = data.report
    head_cls = "v-ok" if data.ok else "v-bad"
    checked = ""
    if r is not None:
        checked = (
            f"<table><tr><th>segments</th><td>{r.segments}</td></tr>"
            f"<tr><th>records</th><td>{r.records}</td></tr>"
            f"<tr><th>signed checkpoints and seals</th><td>{r.checkpoints}</td></tr>"
            f"<tr><th>external checkpoints</th><td>{r.external_checkpoints}</td></tr>"
            f"<tr><th>tree</th><td>size {r.size}, root <code>{_e(r.root.hex())}</code></td></tr>"
            f"<tr><th>keys</th><td>{_e(', '.join(r.keys))}</td></tr>"
            f"<tr><th>span</th><td>{_e(_t(r.first_ts))} .. {_e(_t(r.last_ts))}</td></tr>"
            f"<tr><th>verification</th><td>{_e(r.mode)}: framing, hash chain, every record in the signed "
            "Merkle roots, checkpoint and seal signatures, key chain from the pinned trust file, seals, "
            "segment links; the records were hashed again while this report read them</td></tr></table>"
        )
    findings = ""
    if data.findings:
        items = "".join(f"<li><code>{_e(f.code)}</code> {_e(str(f))}</li>" for f in data.findings[:500])
        findings = f"<h2>Findings ({len(data.findings)})</h2><ul>{items}</ul>"
    body = [
        f"<header class='{head_cls}'><h1 id='verdict'>Verdict: {_e(data.verdict)}</h1>"
        f"<div>ledger origin <b>{_e(data.origin)}</b> · report written {_e(_t(_now()))}</div></header><main>",
        "<h2>What was checked</h2>",
        checked or "<p class='muted'>nothing could be verified</p>",
        findings,
    ]
    if data.ok:
        gaps = "".join(f"<li>{_e(_t(a))} to {_e(_t(z))}: {_dur(z - a)} with nothing signed</li>" for a, z in data.gaps)
        epochs = "".join(
            f"<tr><td>{_e(ep['epoch'])}</td><td><code>{_e(ep['key'])}</code></td>"
            f"<td>{_e(_t(ep['from_ns']))}</td><td>#{ep['seq']}</td></tr>"
            for ep in data.epochs
        )
        drift = "".join(
            f"<tr><td>{_e(_t(d['ts']))}</td><td>#{d['seq']}</td><td>{_e(d['kind'])}</td>"
            f"<td>{_e(d['target'])}</td><td>{_e(d['field'])}</td><td><code>{_e(d['expected'])}</code></td>"
            f"<td><code>{_e(d['live'])}</code></td></tr>"
            for d in data.drift
        )
        types = "".join(f"<tr><td>{_e(t)}</td><td>{n}</td></tr>" for t, n in sorted(data.types.items()))
        erasures = "".join(
            f"<tr><td>{_e(_t(x['ts']))}</td><td>#{x['seq']}</td><td><code>{_e(x['subject'])}</code></td>"
            f"<td>{_e(x['by'])}</td><td>{_e(x['reason'])}</td></tr>"
            for x in data.erasures
        )
        body += [
            "<h2>Coverage over time</h2>",
            f"<p>{data.records} records and {data.checkpoints} signed checkpoints from {_e(_t(data.first_ns))} to "
            f"{_e(_t(data.last_ns))}. A gap is a stretch of more than {data.gap_s:.0f} s in which the sidecar "
            "signed nothing (no record and no heartbeat): it was not recording then. Black lines mark starts.</p>",
            _coverage(data),
            f"<ul>{gaps}</ul>" if gaps else "<p class='ok'>no gaps</p>",
            "<h2>Key epochs</h2><table><tr><th>epoch</th><th>key</th><th>from</th><th>record</th></tr>"
            f"<tr><td>0</td><td><code>{_e(r.keys[0] if r and r.keys else '')}</code></td>"
            f"<td>{_e(_t(data.first_ns))}</td><td>#0</td></tr>{epochs}</table>",
            f"<h2>Drift findings ({data.drift_total})</h2>",
            (
                "<table><tr><th>recorded</th><th>seq</th><th>kind</th><th>target</th><th>what differs</th>"
                f"<th>expected</th><th>live</th></tr>{drift}</table>"
            )
            if drift
            else "<p class='ok'>no drift recorded</p>",
            f"<p class='muted'>{len(data.snapshots)} state snapshots recorded.</p>",
            f"<h2>Erasures ({len(data.erasures)})</h2>",
            f"<p>{r.encrypted_records if r else 0} records carry encrypted personal data; "
            f"{r.erased_records if r else 0} of them belong to {r.erased_subjects if r else 0} erased subjects "
            f"and are shown without those values ({data.erased_fields} records here); "
            f"{r.withheld_records if r else 0} records were written after an erasure with its values left out. "
            + (
                f"{data.encrypted_fields} records are shown with encrypted values left out (no subject key store "
                "was given: ids stand in for names)."
                if data.encrypted_fields
                else ""
            )
            + "</p>",
            (
                "<table><tr><th>recorded</th><th>seq</th><th>subject</th><th>asked by</th><th>reason</th></tr>"
                f"{erasures}</table>"
            )
            if erasures
            else "<p class='muted'>no subject erased</p>",
            "<h2>Events over time by type</h2>",
            _stacked(data, "type:", _FAMILY_COLOURS, "events by type"),
            "<h2>Events over time by outcome</h2>",
            _stacked(data, "outcome:", _OUTCOME_COLOURS, "events by outcome"),
            f"<h2>Event types</h2><table><tr><th>type</th><th>records</th></tr>{types}</table>",
            "<h2>Per-actor timelines</h2>",
            _parties(data.actors, "actor"),
            "<h2>Per-target timelines</h2>",
            _parties(data.targets, "target"),
        ]
    body.append("</main>")
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline'; "
        'img-src data:">'
        f"<title>Ledger report: {_e(data.verdict)}</title><style>{_CSS}</style></head><body>"
        + "".join(body)
        + "</body></html>\n"
    )


def _now() -> int:
    import time

    return time.time_ns()
