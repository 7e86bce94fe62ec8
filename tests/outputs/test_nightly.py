"""What a scheduler reads: the summary JSON, JSON log lines, the plan, the exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from batchgen.cli.commands import main


def test_summary_json_lists_failures_by_reason_with_exit_code_1(grid_run: Any) -> None:
    s = grid_run.summary
    assert s["exit_code"] == 1 and grid_run.exit_code == 1
    assert s["counts"]["downloaded"] == grid_run.expected_items - 1 and s["counts"]["failed"] == 1
    assert s["failures_by_reason"] == {"generation FAILED: Request blocked by the content safety filter": 1}
    assert [f["item"] for f in s["failures"]] == ["broken"]
    assert s["spent_usd"] == pytest.approx(0.10 * (grid_run.expected_items - 1))
    assert s["duration_s"] > 0 and s["started_at"].endswith("Z")


def test_resume_with_json_logs_submits_nothing_new(grid_run: Any, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    summary = tmp_path / "again.json"
    code = main(["run", str(grid_run.manifest), "--sandbox", "--out", str(grid_run.out), "--log-format", "json",
                 "--summary-json", str(summary)])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    lines = [json.loads(line) for line in err.splitlines()]
    assert lines and all({"ts", "level", "event"} <= set(obj) for obj in lines)
    final = [obj for obj in lines if obj["event"] == "summary"]
    assert len(final) == 1 and final[0]["exit_code"] == 1 and final[0]["counts"]["submitted"] == 0
    assert json.loads(summary.read_text())["counts"]["submitted"] == 0


def test_summary_json_for_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "m.yaml").write_text("prompts_file: p.csv\n")
    (tmp_path / "p.csv").write_text("prompt,seed\nfine,500\nbad,5\n")
    summary = tmp_path / "s.json"
    assert main(["run", str(tmp_path / "m.yaml"), "--sandbox", "--log-format", "json",
                 "--summary-json", str(summary)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and json.loads(err[0])["level"] == "error"
    s = json.loads(summary.read_text())
    assert s["exit_code"] == 2 and s["error"].startswith(f"{tmp_path / 'p.csv'}:3: seed:")


def test_plan_shows_the_expansion(grid_run: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(grid_run.manifest), "--out", str(grid_run.out)]) == 0
    out = capsys.readouterr().out
    assert f"{grid_run.expected_items} items" in out and f"done {grid_run.expected_items - 1}," in out
    assert "style_type: REALISTIC 16/16, ANIME 16/16, DESIGN 0/1" in out
    assert "prompts.txt 16" in out and "estimated cost $0.00" in out
