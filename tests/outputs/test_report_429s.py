"""The report counts 429 answers as the run summary does: every request's, run by run."""

from __future__ import annotations

import json

from batchgen.outputs.catalog import load_catalog
from batchgen.outputs.report import render_report


def _line(**fields) -> str:
    return json.dumps({"ts": "2026-11-27T01:00:00.000Z", "item": None, **fields}) + "\n"


def test_the_report_total_is_the_summaries_total_plus_a_killed_runs_submit_429s(tmp_path):
    lines = [
        _line(event="run_start", pid=1, items=1, pending=1),
        _line(item="a", event="submit_retry", status=429, error="rate limited"),
        _line(item="a", event="submit_retry", status=429, error="rate limited"),
        # the summary counted 5: two to submits, three to status polls (which the ledger does not list)
        _line(event="run_end", exit_code=0, reason=None, counts={"rate_limited": 5}, spent_usd=0),
        _line(event="run_start", pid=2, items=1, pending=1),
        _line(item="a", event="submit_retry", status=429, error="rate limited"),  # then killed: no run_end
    ]
    (tmp_path / "ledger.jsonl").write_text("".join(lines))
    cat = load_catalog(tmp_path)
    assert cat.rate_limited_total == 6
    assert len(cat.rate_limited_ts) == 3
    assert "429 answers: 6 in all" in render_report(cat)
