"""The machine-readable end of a run, for schedulers: one JSON file, written whatever the outcome.

A nightly job's wrapper should not have to parse log lines to learn whether to page someone, so the
file exists after every run that got as far as parsing its flags, bad input and aborts included, and
its ``error`` says in one line why any run did not end with 0: a wrapper reads one field whatever
the exit, instead of learning that an abort's reason hides in another.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, assert_never

from batchgen.core.errors import ExitCode
from batchgen.store.files import atomic_write_text
from batchgen.store.shards import found_ledgers

__all__ = ["build_summary", "exit_meaning", "write_summary"]


def exit_meaning(code: int) -> str:
    """The summary's ``exit_meaning``; a code outside ``ExitCode`` can only come from a bug of ours."""
    try:
        c = ExitCode(code)
    except ValueError:
        return "internal error"
    match c:
        case ExitCode.OK:
            return "ok"
        case ExitCode.FAILED_ITEMS:
            return "finished with failed items"
        case ExitCode.BAD_INPUT:
            return "bad input; nothing was sent"
        case ExitCode.ABORTED:
            return "aborted by the service or a limit; state saved"
        case ExitCode.INTERNAL:
            return "internal error"
        case ExitCode.INTERRUPTED:
            return "interrupted; state saved"
        case _:
            assert_never(c)


def _why(exit_code: int, error: str | None, reason: str | None, counts: dict[str, Any]) -> str | None:
    """One line for every exit but 0: the error, else the run's own reason, else what the counts say."""
    if exit_code == ExitCode.OK:
        return None
    if error or reason:
        lines = (error or reason or "").splitlines() or [""]
        more = len(lines) - 1
        return lines[0] + (f" (and {more} more: see errors)" if more else "")
    if exit_code == ExitCode.FAILED_ITEMS:
        failed = int(counts.get("failed", 0)) + int(counts.get("failed_retryable", 0))
        left = int(counts.get("pending", 0)) + int(counts.get("in_flight", 0))
        parts = [f"{failed} item(s) failed (failures_by_reason says why)"] if failed else []
        parts += [f"{left} item(s) left for the next run"] if left else []
        if parts:
            return "; ".join(parts)
    return exit_meaning(exit_code)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def build_summary(
    *,
    exit_code: int,
    manifest: Path,
    out_dir: object,
    started: float,
    finished: float,
    outcome: Any = None,
    error: str | None = None,
    ledgers: Path | None = None,
) -> dict[str, Any]:
    """Counts and spend from this run's outcome; failures by reason from the whole ledger.

    ``out_dir``: the output as given (a folder, or an object store's URL); ``ledgers``: the local
    folder holding its ledgers, when it is not ``out_dir`` itself (an object store's local copy).

    ``error`` is null only for exit 0, and always one line; ``errors`` lists every line of a
    message that had several (each mistake of a manifest, with its file:line). ``reason`` (the
    run's own stop reason, null unless the engine gave one) stays for readers written before
    ``error`` carried it too.
    """
    reason = getattr(outcome, "reason", None)
    counts = dict(getattr(outcome, "counts", None) or {})
    s: dict[str, Any] = {
        "exit_code": exit_code,
        "exit_meaning": exit_meaning(exit_code),
        "manifest": str(manifest),
        "out_dir": str(out_dir) if out_dir is not None else None,
        "started_at": _iso(started),
        "finished_at": _iso(finished),
        "duration_s": round(finished - started, 3),
        "error": _why(exit_code, error, reason, counts),
        "errors": error.splitlines() if error and exit_code != ExitCode.OK else [],
        "reason": reason,
        "counts": counts,
        "spent_usd": round(float(getattr(outcome, "spent_usd", 0.0) or 0.0), 6),
        "failures_by_reason": {},
        "failures": [],
    }
    folder = ledgers if ledgers is not None else out_dir if isinstance(out_dir, Path) else None
    if folder is not None and found_ledgers(folder):
        from batchgen.outputs.status import summarize

        try:
            st = summarize(folder)
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
    atomic_write_text(path, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
