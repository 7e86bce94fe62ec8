"""A run, a repair and the summary never write through a link planted in the output folder."""

from __future__ import annotations

import pytest

from tests.support.cli import run_cli, write_manifest


@pytest.mark.parametrize("planted", [".lock", "ledger.jsonl", "images"])
async def test_a_run_refuses_a_planted_link_naming_it_and_sends_nothing(sandbox_factory, tmp_path, planted):
    sb = await sandbox_factory()
    manifest = write_manifest(tmp_path / "m.yaml", 2)
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim"
    if planted == "images":
        victim.mkdir()
    else:
        victim.write_text("precious\n")
    (out / planted).symlink_to(victim)

    r = await run_cli("run", manifest, "--base-url", sb.url, "--out", out, "--no-progress")
    assert r.code == 2, r.err
    assert planted in r.err and "symbolic link" in r.err and len(r.err.strip().splitlines()) == 1
    assert sb.stats()["submits_accepted"] == 0
    if planted == "images":
        assert list(victim.iterdir()) == []
    else:
        assert victim.read_text() == "precious\n"


async def test_ledger_repair_refuses_a_linked_ledger(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.jsonl"
    victim.write_text('{"ts":"2026-01-01T00:00:00Z","item":null,"event":"run_start"}\nbroken\n{"x":1}\n')
    before = victim.read_bytes()
    (out / "ledger.jsonl").symlink_to(victim)
    r = await run_cli("ledger", "repair", out)
    assert r.code == 2 and "symbolic link" in r.err, r.err
    assert victim.read_bytes() == before
    assert not (out / "ledger.rejected.jsonl").exists()


async def test_summary_and_report_never_write_through_a_link_at_a_temporary_name(sandbox_factory, tmp_path):
    sb = await sandbox_factory()
    manifest = write_manifest(tmp_path / "m.yaml", 1)
    out = tmp_path / "out"
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    summary = tmp_path / "last-run.json"
    # the names a predictable temporary file would take, planted before the run
    (tmp_path / "last-run.json.tmp").symlink_to(victim)
    r = await run_cli("run", manifest, "--base-url", sb.url, "--out", out, "--no-progress",
                      "--summary-json", summary)
    assert r.code == 0, r.err
    assert '"exit_code": 0' in summary.read_text()
    (out / "report.html.tmp").symlink_to(victim)
    (out / "report.html").symlink_to(victim)
    r = await run_cli("report", out)
    assert r.code == 0, r.err
    assert not (out / "report.html").is_symlink() and "<html" in (out / "report.html").read_text()
    assert victim.read_text() == "precious\n"
