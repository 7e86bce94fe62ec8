"""The example files the README's ``plan`` section names exist, run, and print what the README shows."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from batchgen.cli.commands import main

REPO = Path(__file__).resolve().parents[2]
GRID_FILES = ("grid.yaml", "prompts.txt", "prompts.jsonl")


def _readme_plan_block() -> tuple[str, list[str]]:
    """The command and the output lines of the code block in README's ``batchgen plan`` section."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("### `batchgen plan"):]
    section = section[: section.index("\n### ", 1)]
    block = re.search(r"```\n(.*?)```", section, re.S)
    assert block, "README's plan section has no code block"
    first, *out = block.group(1).splitlines()
    return first.removeprefix("$ "), out


def test_readme_plan_example_is_what_plan_prints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "jobs").mkdir()
    for name in GRID_FILES:
        shutil.copyfile(REPO / "jobs" / name, tmp_path / "jobs" / name)
    monkeypatch.chdir(tmp_path)  # a fresh checkout: the README's relative paths, no earlier out/grid
    monkeypatch.delenv("SEGMIND_API_KEY", raising=False)
    command, want = _readme_plan_block()
    assert command == "batchgen plan jobs/grid.yaml"
    assert "  items by source: manifest 9, jobs/prompts.txt 16, jobs/prompts.jsonl 8" in want
    assert main(command.split()[1:]) == 0
    assert capsys.readouterr().out.splitlines() == want

    # The grid runs, and the plan afterwards says what the README's next sentence says.
    assert main(["run", "jobs/grid.yaml", "--sandbox", "--no-progress"]) == 0
    assert len(list((tmp_path / "out" / "grid" / "images").glob("*.png"))) == 33
    capsys.readouterr()
    assert main(command.split()[1:]) == 0
    out = capsys.readouterr().out
    assert "done 33," in out and "REALISTIC 16/16" in out
    assert "After `batchgen run jobs/grid.yaml --sandbox` the same command shows `done 33` and `16/16`" in (
        REPO / "README.md").read_text()
