"""Where each item of a run must be picked up, from the ledger's state alone (plus file checks)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

from batchgen.core.fastjson import params_match
from batchgen.store import ledger as L
from batchgen.store.filecheck import FileState, OutputFiles
from batchgen.store.storage import FileChecks

__all__ = ["PlanGroup", "TO_SUBMIT", "plan"]


class PlanGroup(StrEnum):
    """Where a run picks an item up; the plan's keys (plain strings compare equal to these)."""

    DONE = "done"  # downloaded, and its file is the one the ledger recorded
    FAILED = "failed"  # failed for good; left alone
    POLL = "poll"  # submitted: poll its request_id
    DOWNLOAD = "download"  # paid, output URL known: fetch it (free), also to replace a missing or damaged file
    RESUBMIT = "resubmit"  # failed retryably, or failed and its parameters changed since
    CHANGED = "changed"  # downloaded, but its prompt or parameters changed since: generate it again
    RETRY_FAILED = "retry_failed"  # failed for good, tried again because the run was asked to (--retry-failed)
    UNCERTAIN = "uncertain"  # an intent without an answer: the POST may have been accepted
    PENDING = "pending"  # never submitted


# The groups a run submits (each one a billable generation if it completes).
TO_SUBMIT = (PlanGroup.PENDING, PlanGroup.CHANGED, PlanGroup.RESUBMIT, PlanGroup.RETRY_FAILED, PlanGroup.UNCERTAIN)


def plan(
    items: list[Any], state: L.LedgerState, images_dir: Path, *, retry_failed: bool = False,
    files: FileChecks | None = None,
) -> dict[str, list[Any]]:
    """Sort items by where a run must pick them up, from the ledger's state alone (plus file checks).

    A downloaded item counts as done only when its file is inside the output folder and still has
    the recorded size (and sha256, when it was modified since; see ``store.files``); otherwise it
    is fetched again from its recorded URL, which is free. ``retry_failed``: items that failed for
    good are submitted again instead of being left alone. ``files``: the output's file checks (an
    object store's); the local folder holding ``images_dir`` by default.
    """
    out: dict[str, list[Any]] = {group: [] for group in PlanGroup}
    if files is None:
        files = OutputFiles(images_dir.parent)
    # A resume plans every item of the manifest, 100k and more: the lookups are taken out of the loop.
    known = state.items.get
    check = files.state
    pending, done, download = out[PlanGroup.PENDING].append, out[PlanGroup.DONE].append, out[PlanGroup.DOWNLOAD].append
    downloaded, intact = L.DOWNLOADED, FileState.INTACT
    for it in items:
        st = known(it.id)
        if st is None:
            pending(it)
            continue
        phase = st.state
        if phase == downloaded:
            if not params_match(st.params_sha, _plain(it.params)):
                out[PlanGroup.CHANGED].append(it)
                continue
            if check(st.file, size=st.bytes, sha256=st.sha256, written_ts=st.downloaded_ts) is intact:
                done(it)
            elif st.output_url:
                download(it)
            else:
                pending(it)
        elif phase == L.COMPLETED and st.output_url:
            download(it)
        elif phase == L.SUBMITTED and st.request_id:
            out[PlanGroup.POLL].append(it)
        elif phase == L.INTENT:
            out[PlanGroup.UNCERTAIN].append(it)
        elif phase == L.FAILED:
            changed = not params_match(st.params_sha, _plain(it.params))
            if st.paid and st.output_url and not changed:
                download(it)
            elif st.retryable or changed:
                out[PlanGroup.RESUBMIT].append(it)
            elif retry_failed:
                out[PlanGroup.RETRY_FAILED].append(it)
            else:
                out[PlanGroup.FAILED].append(it)
        else:
            pending(it)
    return out


def _plain(params: Any) -> dict[str, Any]:
    """An item's parameters as the plain dict the params hash reads (an item holds a read-only view
    of one: its own ``copy`` is a fraction of ``dict(view)``)."""
    if params.__class__ is MappingProxyType:
        own = params.copy()
        if own.__class__ is dict:
            return own
    return dict(params)
