"""The HTML report renders in a real browser (Debian's headless Chromium) with every image."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from batchgen.cli.commands import main

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"  # gitignored; CI keeps the screenshot there


def _chromium() -> str:
    found = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if found:
        return found
    why = "chromium is not installed (.ci/run installs it with apt-get install -y chromium)"
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)


def _browse(chromium: str, profile: Path, *args: str) -> str:
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
           "--virtual-time-budget=5000", *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout


def _attr(dom: str, name: str) -> str:
    m = re.search(rf'{name}="([^"]*)"', dom)
    assert m, name
    return m.group(1)


def _text(dom: str, ident: str) -> str:
    m = re.search(rf'id="{ident}"[^>]*>([^<]*)<', dom)
    assert m, ident
    return m.group(1)


def test_report_renders_every_image_and_the_counts(grid_run: Any, tmp_path: Path) -> None:
    chromium = _chromium()
    report = tmp_path / "report.html"
    assert main(["report", str(grid_run.out), "--to", str(report)]) == 0
    assert report.stat().st_size < 5_000_000
    downloaded = len(grid_run.downloaded())
    url = report.as_uri()

    dom = _browse(chromium, tmp_path / "profile", "--dump-dom", url)
    assert _attr(dom, "data-images") == _attr(dom, "data-rendered") == str(downloaded)
    assert _text(dom, "rendered") == str(downloaded)
    assert _text(dom, "total") == str(grid_run.expected_items)
    assert _text(dom, "count-downloaded") == str(downloaded)
    assert _text(dom, "count-failed") == _text(dom, "failures") == "1"
    assert "content safety filter" in dom
    assert _text(dom, "spent") == f"{grid_run.summary['spent_usd']:.2f}"
    assert dom.count('class="chart"') == 3  # latency histogram, throughput, 429s

    filtered = _browse(chromium, tmp_path / "profile", "--dump-dom", url + "#state=failed")
    assert _text(filtered, "shown") == "1"
    anime = _browse(chromium, tmp_path / "profile", "--dump-dom", url + "#style=ANIME&res=RESOLUTION_512_1536")
    assert _text(anime, "shown") == "8"

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report-screenshot.png"
    _browse(chromium, tmp_path / "profile", "--window-size=1280,1600", f"--screenshot={shot}", url)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
