"""What an output folder holds, from its ledgers alone: counts per state, failures, spend."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from batchgen.store import ledger as L
from batchgen.store.events import EventKind, Phase
from batchgen.store.filecheck import FileState, OutputFiles
from batchgen.store.lock import lock_holder
from batchgen.store.shards import LEDGER, Shard, found_ledgers, lock_name
from batchgen.store.storage import FileChecks

__all__ = ["summarize", "format_summary"]


def summarize(out_dir: Path, files: FileChecks | None = None,
              holder: Callable[[Shard | None], int | None] | None = None) -> dict[str, Any]:
    """A fold of the folder's ledgers into the figures a person or a scheduler asks for.

    A sharded folder holds a ledger per shard (and the unsharded ``ledger.jsonl`` it may have started
    with): their items are folded together, the unsharded one first as the older history, and
    ``shards`` tells how each shard's last run ended. ``last_run`` is then the one most in need of
    attention: a shard killed without an end, else one still running, else the highest exit code.
    ``files`` and ``holder``: an object store's image checks and lease holders (the folder's own
    file checks and locks by default).
    """
    ledgers = found_ledgers(out_dir)
    if not ledgers:
        raise FileNotFoundError(f"{out_dir / LEDGER}: no ledger here (is this a batchgen output folder?)")
    state = L.LedgerState()
    if holder is None:
        def holder(shard: Shard | None) -> int | None:
            return lock_holder(out_dir, lock_name(shard))
    parts = [_fold_one(holder(shard), shard, path, state) for shard, path in ledgers]
    sharded = [p for p in parts if p["shard"] is not None]
    counted = sharded or parts  # an unsharded ledger beside shards is history the shards took over
    declared_items: int | None = None
    if not sharded:
        declared_items = parts[0]["items"]
    else:
        declared_items = sum(p["items"] if p["items"] is not None else p["ledger_items"] for p in sharded)
        if parts[0]["shard"] is None and parts[0]["items"] is not None:
            declared_items = max(declared_items, parts[0]["items"])
    last = _attention(counted)
    holder = next((p["running_pid"] for p in counted if p["running_pid"] is not None), None)
    counts: Counter[Phase] = Counter(st.state for st in state.items.values())
    # The plan's own check: absent, outside the folder, or not the size (or content) recorded.
    if files is None:
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
        "last_exit_code": last["exit_code"] if last else None,
        "last_run": last,
        "running_pid": holder,
        "ledger_items": known,
        "torn_tail": any(p["torn_tail"] for p in parts),
        "shards": _shards(parts) if sharded else None,
    }


def _fold_one(holder: int | None, shard: Shard | None, path: Path, state: L.LedgerState) -> dict[str, Any]:
    """Fold one ledger into ``state``; what it says of its own runs (``holder``: who runs it now)."""
    declared: int | None = None
    last_start: dict[str, Any] | None = None
    last_end: dict[str, Any] | None = None
    runs, items = state.runs, set()
    for ev in L.readable_events(path):
        L.apply(state, ev)
        if isinstance(ev.get("item"), str):
            items.add(ev["item"])
        kind = EventKind.of(ev.get("event"))
        if kind is EventKind.RUN_START:
            last_start, last_end = ev, None
            if isinstance(ev.get("items"), int):
                declared = ev["items"]
        elif kind is EventKind.RUN_END:
            last_end = ev
    return {"ledger": path.name, "shard": None if shard is None else shard.index,
            "count": None if shard is None else shard.count, "items": declared,
            "ledger_items": len(items), "runs": state.runs - runs,
            "last_run": _last_run(last_start, last_end, holder), "running_pid": holder,
            "torn_tail": _torn_tail(path)}


def _attention(parts: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Of the ledgers' last runs, the one to show first (see ``summarize``)."""
    runs = [p["last_run"] for p in parts if p["last_run"] is not None]
    if len(runs) <= 1:
        return runs[0] if runs else None

    def rank(r: dict[str, Any]) -> tuple[int, int]:
        if r["ended"] == "running":
            return (1, 0)
        if r["exit_code"] is None and r.get("finished") is None:
            return (2, 0)  # killed or crashed
        return (0, r["exit_code"] if isinstance(r["exit_code"], int) else 0)

    return max(runs, key=rank)


def _shards(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Which shards have a ledger, and each one's own figures."""
    sharded = [p for p in parts if p["shard"] is not None]
    counts = sorted({p["count"] for p in sharded})
    count = counts[0] if len(counts) == 1 else None
    found = sorted({p["shard"] for p in sharded})
    return {
        "count": count,
        "counts": counts,
        "found": found,
        "missing": [] if count is None else [i for i in range(count) if i not in found],
        "unsharded_ledger": parts[0]["shard"] is None,
        "ledgers": parts,
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
    if s.get("shards"):
        lines.extend(_shard_lines(s["shards"]))
    elif s["running_pid"] is not None:
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


def _shard_lines(sh: dict[str, Any]) -> list[str]:
    """One line for the shards as a whole, one per shard running now or not ended."""
    of = sh["count"] if sh["count"] is not None else " and ".join(map(str, sh["counts"]))
    line = f"  {len(sh['found'])} of {of} shards have a ledger"
    if sh["missing"]:
        line += f" (no ledger yet: shard {', '.join(map(str, sh['missing']))})"
    if sh["unsharded_ledger"]:
        line += "; ledger.jsonl holds the folder's unsharded history"
    lines = [line]
    for p in sh["ledgers"]:
        last = p["last_run"]
        if p["shard"] is None or last is None:
            continue
        if last["ended"] == "running":
            lines.append(f"  shard {p['shard']} of {p['count']} is running (pid {p['running_pid']})")
        elif last["exit_code"] not in (0, 1):
            lines.append(f"  shard {p['shard']} of {p['count']}: last run {last['ended']}"
                         + (f" — {last['reason']}" if last.get("reason") else ""))
    return lines


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
