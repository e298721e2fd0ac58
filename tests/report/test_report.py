"""`sidecar report`: one self-contained HTML file with the verdict, coverage, epochs, drift and timelines, rendered in Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from sidecar.cli import main
from tests.audit.test_reading import _flip_in_record
from tests.export.sample import write_ledger

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def _report(ledger: Path, out: Path) -> tuple[int, str]:
    res = CliRunner().invoke(main, ["report", str(ledger), "--trust", str(ledger / "trust.json"), "--out", str(out)])
    return res.exit_code, res.output


def test_report_contents(tmp_path: Path) -> None:
    """The report of an intact ledger holds the verdict, what was checked, gaps, epochs, drift, charts and timelines, and nothing external."""
    ledger = tmp_path / "ledger"
    write_ledger(ledger, rotate=True)
    out = tmp_path / "report.html"
    code, _ = _report(ledger, out)
    html = out.read_text()
    assert code == 0
    assert "Verdict: INTACT" in html and "What was checked" in html and "signed checkpoints" in html
    for section in (
        "Coverage over time",
        "Key epochs",
        "Drift findings (1)",
        "Events over time by type",
        "Events over time by outcome",
        "Per-actor timelines",
        "Per-target timelines",
    ):
        assert section in html, section
    assert html.count("<svg") >= 3 and "realm_roles" in html and "alice" in html
    assert not re.search(r"(src|href)\s*=\s*['\"]?(https?:|//)", html), "the report must not load anything"
    assert "<script" not in html


def test_report_of_damaged_ledger(tmp_path: Path) -> None:
    """A ledger that does not verify gives exit 1 and a report showing the verdict and the findings, no timelines."""
    ledger = tmp_path / "ledger"
    write_ledger(ledger)
    _flip_in_record(ledger, b"mallory")
    out = tmp_path / "report.html"
    code, _ = _report(ledger, out)
    html = out.read_text()
    assert code == 1 and "TAMPERED OR INCOMPLETE" in html and "root-mismatch" in html
    assert "Per-actor timelines" not in html


@pytest.mark.browser
async def test_report_renders_in_chromium(tmp_path: Path) -> None:
    """Chromium opens the report offline with no console errors or requests, and the screenshot shows the verdict."""
    import asyncio

    from playwright.async_api import async_playwright

    ledger = tmp_path / "ledger"
    await asyncio.to_thread(write_ledger, ledger)
    out = tmp_path / "report.html"
    assert (await asyncio.to_thread(_report, ledger, out))[0] == 0
    problems: list[str] = []
    requests: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("request", lambda r: requests.append(r.url) if not r.url.startswith("file:") else None)
            await page.goto(out.as_uri())
            assert (await page.inner_text("#verdict")).strip() == "Verdict: INTACT"
            shot = tmp_path / "report.png"
            await page.screenshot(path=str(shot), clip={"x": 0, "y": 0, "width": 1280, "height": 120})
            await page.locator("details summary").first.click()  # a timeline opens
            assert await page.locator("details[open] table tr").count() > 1
            await page.screenshot(path=str(tmp_path / "full.png"), full_page=True)
        finally:
            await browser.close()
    assert problems == [] and requests == []
    tesseract = shutil.which("tesseract")
    assert tesseract, "tesseract-ocr is needed to read the screenshot (.ci/run installs it)"
    text = (
        await asyncio.to_thread(
            subprocess.run,
            [tesseract, str(shot), "-", "--psm", "6"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    ).stdout
    assert "INTACT" in text.upper(), text
