"""What an output folder holds, from its ledger alone: counts per state, failures, spend."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from batchgen.store import ledger as L
from batchgen.store.events import EventKind, Phase
from batchgen.store.files import FileState, OutputFiles

__all__ = ["summarize", "format_summary"]


def summarize(out_dir: Path) -> dict[str, Any]:
    """A fold of the ledger into the figures a person or a scheduler asks for."""
    path = out_dir / "ledger.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no ledger here (is this a batchgen output folder?)")
    state = L.LedgerState()
    declared_items = None
    last_end: dict[str, Any] | None = None
    for ev in L.readable_events(path):
        L.apply(state, ev)
        kind = EventKind.of(ev.get("event"))
        if kind is EventKind.RUN_START and isinstance(ev.get("items"), int):
            declared_items = ev["items"]
        elif kind is EventKind.RUN_END:
            last_end = ev
    counts: Counter[Phase] = Counter(st.state for st in state.items.values())
    # The plan's own check: absent, outside the folder, or not the size (or content) recorded.
    files = OutputFiles(out_dir)
    missing = [
        st.item for st in state.items.values()
        if st.state == Phase.DOWNLOADED
        and files.state(st.file, size=st.bytes, sha256=st.sha256, written_ts=st.downloaded_ts) is not FileState.INTACT
    ]
    failures = [
        {"item": st.item, "error": st.error, "retryable": st.retryable}
        for st in state.items.values()
        if st.state == Phase.FAILED
    ]
    known = len(state.items)
    pending_unseen = max(0, (declared_items or known) - known)
    # Plain-string keys: the summary is JSON, and orjson refuses enum members as keys.
    per_state = {p.value: counts.get(p, 0) for p in Phase}
    per_state[Phase.PENDING.value] += pending_unseen
    return {
        "out_dir": str(out_dir),
        "items": declared_items if declared_items is not None else known,
        "states": per_state,
        "failures": failures,
        "failures_by_reason": dict(Counter((f["error"] or "unknown").split(" (")[0] for f in failures)),
        "spent_usd": round(state.spent_usd, 6),
        "completed_without_reported_cost": state.completed_without_cost,
        "paid_submits": sum(st.submits for st in state.items.values()),
        "uncertain_submits": sum(st.uncertain for st in state.items.values()),
        "expired_resubmits": sum(st.expired for st in state.items.values()),
        "missing_files": missing,
        "runs": state.runs,
        "last_exit_code": last_end.get("exit_code") if last_end else None,
        "torn_tail": _torn_tail(path),
    }


def format_summary(s: dict[str, Any]) -> str:
    st = s["states"]
    lines = [
        f"{s['out_dir']}: {s['items']} items over {s['runs']} run(s)",
        "  " + ", ".join(f"{k} {v}" for k, v in st.items() if v or k in ("downloaded", "failed", "pending")),
        f"  spend ${s['spent_usd']:.2f} reported by the service"
        + (f" (+{s['completed_without_reported_cost']} images without a reported cost)" if s["completed_without_reported_cost"] else ""),
    ]
    if s["uncertain_submits"] or s["expired_resubmits"]:
        lines.append(f"  uncertain submits {s['uncertain_submits']}, expired and resubmitted {s['expired_resubmits']}")
    if s["missing_files"]:
        lines.append(f"  {len(s['missing_files'])} downloaded file(s) missing; the next run fetches them again")
    for f in s["failures"][:50]:
        lines.append(f"  failed {f['item']}: {f['error']}" + (" [retried by the next run]" if f["retryable"] else ""))
    if len(s["failures"]) > 50:
        lines.append(f"  ... and {len(s['failures']) - 50} more failures (use --json)")
    return "\n".join(lines)


def _torn_tail(path: Path) -> bool:
    """Whether the last line was cut by a crash (the next run tidies it; worth showing meanwhile)."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - 65536))
        tail = f.read()
    last = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    if not last:
        return False
    try:
        return not isinstance(json.loads(last), dict)
    except ValueError:
        return True
