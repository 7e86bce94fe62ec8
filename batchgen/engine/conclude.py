"""The end of a run: where every item stands, the exit code that says so, and the ``run_end`` line."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from typing import Any

from batchgen.core.errors import ExitCode
from batchgen.core.fastjson import params_match
from batchgen.engine.context import Run, RunOutcome
from batchgen.engine.stopping import StopControl
from batchgen.store import ledger as L
from batchgen.store.events import EventKind

__all__ = ["conclude", "tally", "verdict"]


def tally(items: list[Any], state: L.LedgerState, changed: Collection[str] = ()) -> dict[str, int]:
    """Where each item of this run stands in the ledger, over every run so far.

    ``changed``: ids the plan found edited since their download; one still downloaded with its
    earlier parameters (a stop came first) is pending, not done.
    """
    out = {"downloaded": 0, "failed": 0, "failed_retryable": 0, "in_flight": 0, "pending": 0}
    for it in items:
        st = state.items.get(it.id)
        s = st.state if st else L.PENDING
        if s == L.DOWNLOADED and st and it.id in changed and not params_match(st.params_sha, dict(it.params)):
            out["pending"] += 1
        elif s == L.DOWNLOADED:
            out["downloaded"] += 1
        elif s == L.FAILED:
            out["failed_retryable" if st and st.retryable else "failed"] += 1
        elif s in (L.SUBMITTED, L.COMPLETED, L.INTENT):
            out["in_flight"] += 1
        else:
            out["pending"] += 1
    return out


def verdict(stop: StopControl, counts: dict[str, int]) -> tuple[ExitCode, str | None]:
    """The exit code and the reason to show, from how the run stopped and where its items stand.

    A stop (budget, credits) that left work undone is an early end (3), not a finished run with
    failures (1): the same command run again, after the cause is fixed, goes on.
    """
    left = counts["pending"] or counts["in_flight"] or counts["failed_retryable"]
    if stop.interrupted:
        return ExitCode.INTERRUPTED, "interrupted; run the same command again to resume"
    if stop.abort_reason:
        return ExitCode.ABORTED, stop.abort_reason
    if stop.stop_reason and left:
        return ExitCode.ABORTED, stop.stop_reason
    if counts["failed"] or left:
        return ExitCode.FAILED_ITEMS, None
    return ExitCode.OK, None


def conclude(run: Run, changed: Collection[str] = ()) -> RunOutcome:
    """Counts, exit code and spend of the run, also written as the ledger's ``run_end`` line."""
    where = tally(run.items, run.ledger.state, changed)
    counters = replace(run.counters, rate_limited=run.keys.rate_limited)
    counts = {**counters.as_dict(), **where, "items": len(run.items)}
    code, reason = verdict(run.stop, where)
    spent = run.admission.spent_estimate()
    try:
        run.ledger.append(EventKind.RUN_END, None, exit_code=int(code), reason=reason, counts=counts, spent_usd=round(spent, 6))
    except (OSError, RuntimeError):
        pass  # the ledger cannot be written (disk full, closed): the outcome still reaches the caller
    return RunOutcome(code, reason, counts, spent)
