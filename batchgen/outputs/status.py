"""What an output folder holds, from its ledger alone: counts per state, failures, spend."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from batchgen.store import ledger as L
from batchgen.store.events import EventKind, Phase
from batchgen.store.filecheck import FileState, OutputFiles
from batchgen.store.lock import lock_holder

__all__ = ["summarize", "format_summary"]


def summarize(out_dir: Path) -> dict[str, Any]:
    """A fold of the ledger into the figures a person or a scheduler asks for."""
    path = out_dir / "ledger.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no ledger here (is this a batchgen output folder?)")
    holder = lock_holder(out_dir)
    state = L.LedgerState()
    declared_items = None
    last_start: dict[str, Any] | None = None
    last_end: dict[str, Any] | None = None
    for ev in L.readable_events(path):
        L.apply(state, ev)
        kind = EventKind.of(ev.get("event"))
        if kind is EventKind.RUN_START:
            last_start, last_end = ev, None
            if isinstance(ev.get("items"), int):
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
        "last_run": _last_run(last_start, last_end, holder),
        "running_pid": holder,
        "ledger_items": known,
        "torn_tail": _torn_tail(path),
    }


def _last_run(start: dict[str, Any] | None, end: dict[str, Any] | None, holder: int | None) -> dict[str, Any] | None:
    """How the latest run ended, in words a person and a script can both use."""
    if start is None:
        return None
    if end is None:
        # No run_end: either it is still going (it holds the lock) or it was killed mid-run.
        ended = "running" if holder is not None else "killed or crashed (no end recorded; run again to resume)"
        return {"ended": ended, "exit_code": None, "reason": None, "started": start.get("ts")}
    code = end.get("exit_code")
    words = {0: "finished", 1: "finished with failed items", 2: "refused its input", 3: "aborted",
             130: "interrupted"}.get(code, f"exit {code}") if isinstance(code, int) else "ended"
    return {"ended": words, "exit_code": code, "reason": end.get("reason"), "started": start.get("ts"),
            "finished": end.get("ts")}


def format_summary(s: dict[str, Any]) -> str:
    st = s["states"]
    lines = [f"{s['out_dir']}: {s['items']} items over {s['runs']} run(s)"]
    if s["ledger_items"] > s["items"]:
        lines[0] += (f"; the ledger also holds {s['ledger_items'] - s['items']} item(s) the last run's manifest "
                     "did not have (another manifest, or edited prompts)")
    if s["running_pid"] is not None:
        lines.append(f"  a run holds this folder now (pid {s['running_pid']})")
    last = s["last_run"]
    if last is not None and last["ended"] != "running":
        lines.append(f"  last run: {last['ended']}" + (f" — {last['reason']}" if last.get("reason") else ""))
    lines += [
        "  " + ", ".join(f"{k} {v}" for k, v in st.items() if v or k in ("downloaded", "failed", "pending")),
        f"  spend ${s['spent_usd']:.2f} reported by the service"
        + (f" (+{s['completed_without_reported_cost']} images without a reported cost)" if s["completed_without_reported_cost"] else ""),
    ]
    if s["uncertain_submits"] or s["expired_resubmits"]:
        lines.append(f"  uncertain submits {s['uncertain_submits']}, expired and resubmitted {s['expired_resubmits']}")
    if s["missing_files"]:
        lines.append(f"  {len(s['missing_files'])} downloaded file(s) missing; the next run fetches them again")
    lines.extend(_failure_lines(s["failures"]))
    return "\n".join(lines)


def _failure_lines(failures: list[dict[str, Any]], groups: int = 10, examples: int = 3) -> list[str]:
    """Failures grouped by reason, most frequent first: fifty identical filter refusals are one line."""
    by_reason: dict[tuple[str, bool], list[str]] = {}
    for f in failures:
        by_reason.setdefault(((f["error"] or "unknown").split(" (")[0], bool(f["retryable"])), []).append(f["item"])
    ranked = sorted(by_reason.items(), key=lambda kv: (-len(kv[1]), kv[0][0]))
    lines = []
    for (reason, retryable), items in ranked[:groups]:
        shown = ", ".join(items[:examples]) + (", ..." if len(items) > examples else "")
        lines.append(f"  failed {len(items)} × {reason} ({shown})" + (" [retried by the next run]" if retryable else ""))
    if len(ranked) > groups:
        rest = sum(len(items) for _, items in ranked[groups:])
        lines.append(f"  ... {rest} more failures with {len(ranked) - groups} other reasons (use --json)")
    return lines


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
