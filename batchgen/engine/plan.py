"""Where each item of a run must be picked up, from the ledger's state alone (plus file checks)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

from batchgen.core.fastjson import params_match
from batchgen.store import ledger as L

__all__ = ["PlanGroup", "plan"]


class PlanGroup(StrEnum):
    """Where a run picks an item up; the plan's keys (plain strings compare equal to these)."""

    DONE = "done"  # downloaded and its file is there
    FAILED = "failed"  # failed for good; left alone
    POLL = "poll"  # submitted: poll its request_id
    DOWNLOAD = "download"  # paid, output URL known: fetch it (free)
    RESUBMIT = "resubmit"  # failed retryably, or its parameters changed
    UNCERTAIN = "uncertain"  # an intent without an answer: the POST may have been accepted
    PENDING = "pending"  # never submitted


def plan(items: list[Any], state: L.LedgerState, images_dir: Path) -> dict[str, list[Any]]:
    """Sort items by where a run must pick them up, from the ledger's state alone (plus file checks)."""
    out: dict[str, list[Any]] = {group: [] for group in PlanGroup}
    for it in items:
        st = state.items.get(it.id)
        if st is None:
            out["pending"].append(it)
            continue
        if st.state == L.DOWNLOADED:
            if st.file and (images_dir.parent / st.file).is_file():
                out["done"].append(it)
            elif st.output_url:
                out["download"].append(it)
            else:
                out["pending"].append(it)
        elif st.state == L.COMPLETED and st.output_url:
            out["download"].append(it)
        elif st.state == L.SUBMITTED and st.request_id:
            out["poll"].append(it)
        elif st.state == L.INTENT:
            out["uncertain"].append(it)
        elif st.state == L.FAILED:
            # Hashing the parameters costs more than the rest of the plan: only a failed item uses it.
            changed = not params_match(st.params_sha, dict(it.params))
            if st.paid and st.output_url and not changed:
                out["download"].append(it)
            elif st.retryable or changed:
                out["resubmit"].append(it)
            else:
                out["failed"].append(it)
        else:
            out["pending"].append(it)
    return out
