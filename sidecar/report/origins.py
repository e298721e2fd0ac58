"""`sidecar report` over a folder of bundles (one per origin): one self-contained HTML page.

What it shows: the verdict of the set (each origin verified on its own, then missing / extra /
duplicate / stalled origins, sidecar.audit.origins), one row per origin, how the merged order is
made (per-origin seq, timestamps, the clock-skew bound and how it was obtained), and the newest
records of all origins in that order, those whose cross-origin order is uncertain marked ``~``.
Every value from the ledgers is escaped; the page loads nothing from anywhere.
"""

from __future__ import annotations

import html
import time
from datetime import UTC, datetime
from pathlib import Path

from sidecar.audit.origins import OriginsReport, OriginsTrust, bundles_in, merged, origin_streams, verify_bundles
from sidecar.audit.reading import read_verified
from sidecar.audit.timeline import describe
from sidecar.report.build import Summary

NEWEST = 500  # merged records shown


def _when(ns: int | None) -> str:
    if ns is None:
        return "-"
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="milliseconds")


def build_origins_report(folder: Path, trust: OriginsTrust, out: Path) -> Summary:
    """Verify every bundle in folder as a set, merge their verified records, write the page to out."""
    bundles = bundles_in(folder)
    checked: OriginsReport = verify_bundles(bundles, trust, now_ns=time.time_ns())
    trusted = {p: b for p, b in bundles.items() if any(o.prefix == p and o.report is not None for o in checked.origins)}
    ordering, rows = merged(origin_streams(trusted, trust, lambda b, a: read_verified(b, a)))  # type: ignore[arg-type]
    esc = html.escape
    verdict = "INTACT" if checked.ok else "TAMPERED OR INCOMPLETE"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Identity ledger: cluster report</title>",
        "<style>body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}.bad{color:#a00}.u{background:#fff3cd}</style>",
        "</head><body>",
        f"<h1 class='{'' if checked.ok else 'bad'}'>Verdict: {verdict}</h1>",
        f"<p>{len(checked.origins)} origins checked {esc(_when(checked.now_ns))}; "
        f"an origin is stalled after {trust.max_silence_s:g} s without a checkpoint "
        f"(heartbeat {trust.heartbeat_s:g} s).</p>",
        "<table><tr><th>origin</th><th>prefix</th><th>verdict</th><th>records</th><th>newest checkpoint</th></tr>",
    ]
    for o in checked.origins:
        v = o.report.to_json()["verdict"] if o.report is not None else "not trusted"
        n = o.report.records if o.report is not None else "-"
        parts.append(
            f"<tr><td>{esc(o.origin or '?')}</td><td>{esc(o.prefix or '.')}</td><td>{esc(v)}</td>"
            f"<td>{n}</td><td>{esc(_when(o.newest_checkpoint_ns))}</td></tr>"
        )
    parts.append("</table>")
    findings = checked.all_findings()
    if findings:
        parts.append("<h2 class='bad'>Findings</h2><ul>")
        parts.extend(f"<li>{esc(str(f))}</li>" for f in findings)
        parts.append("</ul>")
    parts.append(f"<h2>One timeline</h2><p id='ordering'>{esc(ordering.describe())}</p>")
    parts.append("<table><tr><th></th><th>time (UTC)</th><th>origin</th><th>seq</th><th>realm</th><th>event</th></tr>")
    for origin, rec, uncertain in rows[-NEWEST:]:
        e = rec["event"]
        parts.append(
            f"<tr class='{'u' if uncertain else ''}'><td>{'~' if uncertain else ''}</td>"
            f"<td>{esc(_when(int(rec['ts'])))}</td><td>{esc(origin)}</td><td>{int(rec['seq'])}</td>"
            f"<td>{esc(str(e.get('realm') or '-'))}</td><td>{esc(describe(rec))}</td></tr>"
        )
    parts.append("</table></body></html>\n")
    tmp = out.with_name(out.name + ".partial")
    tmp.write_text("".join(parts), encoding="utf-8")
    tmp.replace(out)
    return Summary(checked.ok, verdict.lower(), len(rows))
