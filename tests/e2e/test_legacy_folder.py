"""An output folder written by batchgen 0.1 (before the package was reorganised) keeps working.

The fixture under tests/fixtures/legacy-0.1 is a real run of that version on the sandbox: three
images downloaded (one with a non-ASCII prompt and a derived id) and two items that failed for good
(one with a non-ASCII prompt, whose ``params_sha`` was hashed in the old ASCII-escaped form). A
resume over it must find everything settled and send nothing; status, export and report read it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from batchgen.core.fastjson import params_match, params_sha
from batchgen.manifest import load_manifest
from batchgen.store import ledger as L
from tests.support.cli import ledger_events, run_cli

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "legacy-0.1"
DOWNLOADED = ["caf-at-night-4a96a66f", "fox", "lighthouse"]
FAILED = ["broken-chair", "ein-gr-erer-stuhl-sandbox-fail-b54231e2"]


@pytest.fixture
def legacy(tmp_path: Path) -> tuple[Path, Path]:
    """A writable copy: (manifest, output folder)."""
    root = tmp_path / "legacy"
    shutil.copytree(FIXTURE, root)
    return root / "manifest.yaml", root / "folder"


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((folder / "images").iterdir())}


async def status_json(folder: Path) -> dict[str, Any]:
    got = await run_cli("status", folder, "--json")
    assert got.code == 0, got.err
    return json.loads(got.out)


def test_the_fixture_is_what_it_claims() -> None:
    """Guards the fixture itself: old hash form on the non-ASCII failure, files the ledger names."""
    state = L.replay(FIXTURE / "folder" / "ledger.jsonl")
    assert sorted(i for i, st in state.items.items() if st.state == L.DOWNLOADED) == DOWNLOADED
    assert sorted(i for i, st in state.items.items() if st.state == L.FAILED) == FAILED
    assert not any(st.retryable for st in state.items.values())
    for item in DOWNLOADED:
        st = state.items[item]
        data = (FIXTURE / "folder" / str(st.file)).read_bytes()
        assert hashlib.sha256(data).hexdigest() == st.sha256 and len(data) == st.bytes < 16_000

    items = {it.id: it for it in load_manifest(FIXTURE / "manifest.yaml").items}
    assert sorted(items) == sorted(DOWNLOADED + FAILED), "today's ids differ from the ones 0.1 derived"
    for item in DOWNLOADED + FAILED:
        params, recorded = dict(items[item].params), state.items[item].params_sha
        assert params_match(recorded, params), item
        # 0.1 hashed the ASCII-escaped text: only the non-ASCII prompts carry a hash today's form lacks.
        assert (recorded == params_sha(params)) == params["prompt"].isascii(), item


async def test_resume_over_a_legacy_folder_sends_nothing(legacy: tuple[Path, Path], sandbox_factory) -> None:
    manifest, folder = legacy
    sb = await sandbox_factory()
    before = await status_json(folder)
    images = digests(folder)
    lines_before = len(ledger_events(folder))

    got = await run_cli("run", manifest, "--base-url", sb.url, "--out", folder, "--no-progress")

    assert got.code == 1, (got.out, got.err)  # two items failed for good, as in 0.1's own run
    s = sb.stats()
    assert (s["submit_requests"], s["status_polls"], s["result_fetches"], s["downloads"]) == (0, 0, 0, 0), s
    assert s["submits_accepted"] == 0 and s["charged_usd"] == 0
    new = [ev["event"] for ev in ledger_events(folder)[lines_before:]]
    assert new == ["run_start", "run_end"], new
    assert digests(folder) == images

    after = await status_json(folder)
    assert after["states"] == before["states"] == {
        "pending": 0, "intent": 0, "submitted": 0, "completed": 0, "downloaded": 3, "failed": 2,
    }
    for key in ("items", "failures", "spent_usd", "paid_submits", "uncertain_submits", "missing_files"):
        assert after[key] == before[key], key
    assert (after["runs"], after["last_exit_code"]) == (before["runs"] + 1, 1)


async def test_status_export_and_report_read_a_legacy_folder(legacy: tuple[Path, Path], tmp_path: Path) -> None:
    _, folder = legacy
    s = await status_json(folder)
    assert s["items"] == 5 and s["runs"] == 1 and s["last_exit_code"] == 1
    assert s["spent_usd"] == pytest.approx(0.3) and s["paid_submits"] == 5
    assert sorted(f["item"] for f in s["failures"]) == FAILED
    assert s["missing_files"] == [] and s["torn_tail"] is False

    text = await run_cli("status", folder)
    assert text.code == 0 and "downloaded 3" in text.out and "failed 2" in text.out, text.out

    dest = tmp_path / "export"
    exported = await run_cli("export", folder, "--format", "imagefolder", "--to", dest)
    assert exported.code == 0, exported.err
    rows = [json.loads(line) for line in (dest / "train" / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(r["id"] for r in rows) == DOWNLOADED
    assert {r["id"]: r["prompt"] for r in rows}["caf-at-night-4a96a66f"] == "café ☕ 東京 at night"
    for r in rows:
        assert (dest / "train" / r["file_name"]).read_bytes() == (folder / "images" / f"{r['id']}.png").read_bytes()

    page = tmp_path / "report.html"
    reported = await run_cli("report", folder, "--to", page)
    assert reported.code == 0, reported.err
    html = page.read_text(encoding="utf-8")
    assert "café ☕ 東京 at night" in html and "Ein größerer Stuhl, 椅子" in html
    assert 'id="count-downloaded">3<' in html and 'id="count-failed">2<' in html
    assert html.count('class="card"') == 5 and html.count("data:image/") == 3
