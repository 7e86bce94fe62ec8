"""The machine-readable end of a run, for schedulers: one JSON file, written whatever the outcome.

A nightly job's wrapper should not have to parse log lines to learn whether to page someone, so the
file exists after every run that got as far as parsing its flags, bad input and aborts included.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["build_summary", "write_summary"]

EXIT_MEANING = {
    0: "ok",
    1: "finished with failed items",
    2: "bad input; nothing was sent",
    3: "aborted by the service or a limit; state saved",
    130: "interrupted; state saved",
}


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def build_summary(
    *,
    exit_code: int,
    manifest: Path,
    out_dir: Path | None,
    started: float,
    finished: float,
    outcome: Any = None,
    error: str | None = None,
) -> dict[str, Any]:
    """Counts and spend from this run's outcome; failures by reason from the whole ledger."""
    s: dict[str, Any] = {
        "exit_code": exit_code,
        "exit_meaning": EXIT_MEANING.get(exit_code, "internal error"),
        "manifest": str(manifest),
        "out_dir": str(out_dir) if out_dir is not None else None,
        "started_at": _iso(started),
        "finished_at": _iso(finished),
        "duration_s": round(finished - started, 3),
        "error": error,
        "reason": getattr(outcome, "reason", None),
        "counts": dict(getattr(outcome, "counts", None) or {}),
        "spent_usd": round(float(getattr(outcome, "spent_usd", 0.0) or 0.0), 6),
        "failures_by_reason": {},
        "failures": [],
    }
    if out_dir is not None and (out_dir / "ledger.jsonl").is_file():
        from batchgen.outputs.status import summarize

        try:
            st = summarize(out_dir)
        except Exception as e:  # a damaged ledger must not hide the exit code
            s["ledger_error"] = str(e)
        else:
            s["failures_by_reason"] = st["failures_by_reason"]
            s["failures"] = st["failures"]
            s["spent_usd_total"] = st["spent_usd"]
            s["states"] = st["states"]
    return s


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    """Atomically, so a scheduler polling for the file never reads half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
