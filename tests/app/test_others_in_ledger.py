"""A folder holding items of another manifest (or of edited prompts) is counted apart and warned about."""

from __future__ import annotations

import json

from batchgen.cli import commands
from tests.support.cli import write_manifest


def test_plan_counts_ledger_items_that_are_not_in_this_manifest(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    lines = [
        {"ts": "2026-01-01T00:00:00.000Z", "item": f"elsewhere-{n}", "event": "intent",
         "params": {"prompt": f"p{n}"}, "params_sha": "0" * 16, "attempt": 1}
        for n in range(3)
    ]
    (out / "ledger.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    manifest = write_manifest(tmp_path / "m.yaml", 2)

    assert commands.main(["plan", str(manifest), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    head = next(line for line in printed if line.startswith("manifest "))
    assert ": 2 items for" in head and "(3 others in the ledger)" in head
    warning = [line for line in printed if line.startswith("warning:")]
    assert len(warning) == 1 and "3 item(s) that are not in this manifest" in warning[0]
    # and the plan's own counts are about this manifest's items only
    assert any("to submit 2 (new 2," in line for line in printed)


def test_a_folder_of_this_manifest_alone_says_nothing_more(tmp_path, capsys):
    manifest = write_manifest(tmp_path / "m.yaml", 2)
    assert commands.main(["plan", str(manifest), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "others in the ledger" not in printed and "warning:" not in printed
