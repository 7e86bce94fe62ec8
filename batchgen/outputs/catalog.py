"""The ledger folded into one record per item, with everything exports and reports show.

``ledger.replay`` keeps only what a resume needs; a dataset row or a report card also wants the
parameters, timings and image facts, and a timeline wants when things happened. Reading the same
files keeps the ledger the single source of truth (a sharded folder's ledgers, read one after another).

An image is shown (exported, embedded in the report) only through ``Catalog.image``: inside the
output folder, and still the size and content the ledger recorded (``store.files``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, assert_never

from batchgen.store import ledger as L
from batchgen.store.events import EventKind, Phase
from batchgen.store.filecheck import FileState, OutputFiles
from batchgen.store.shards import LEDGER, found_ledgers
from batchgen.store.storage import FileChecks

__all__ = ["Catalog", "Record", "load_catalog"]


@dataclass
class Record:
    id: str
    state: Phase = Phase.PENDING
    params: dict[str, Any] | None = None
    request_id: str | None = None
    file: str | None = None
    sha256: str | None = None
    bytes: int | None = None
    width: int | None = None
    height: int | None = None
    cost_usd: float | None = None
    inference_time: float | None = None
    latency_s: float | None = None
    error: str | None = None
    stage: str | None = None
    status: int | None = None
    retryable: bool = False
    downloaded_ts: float | None = None
    superseded: list[str] = field(default_factory=list)  # earlier images, made from edited parameters


@dataclass
class Catalog:
    out_dir: Path
    records: dict[str, Record] = field(default_factory=dict)
    spent_usd: float = 0.0
    paid_submits: int = 0
    runs: int = 0
    completed_ts: list[float] = field(default_factory=list)
    rate_limited_ts: list[float] = field(default_factory=list)  # when submits were answered 429
    # 429 answers to every request (submits, polls, result fetches, history) over all runs, as each
    # run's summary counted them; a run that never ended adds the submit 429s its ledger shows.
    rate_limited_total: int = 0
    started_ts: float | None = None
    ended_ts: float | None = None
    _open_run_429s: int = field(default=0, repr=False, compare=False)  # submit 429s of the run being read
    _files: FileChecks | None = field(default=None, repr=False, compare=False)
    _checked: dict[str, tuple[FileState, Path | None]] = field(default_factory=dict, repr=False, compare=False)

    def file_state(self, r: Record) -> FileState | None:
        """What became of a downloaded record's file (checked once per catalog); None if not downloaded."""
        if r.state != Phase.DOWNLOADED:
            return None
        return self._check(r)[0]

    def image(self, r: Record) -> Path | None:
        """The path of a downloaded record's image, only when it is inside the folder and intact."""
        return self._check(r)[1] if r.state == Phase.DOWNLOADED else None

    def downloaded(self) -> list[Record]:
        """Records whose image is on disk, as recorded: what an export ships."""
        return [r for r in self.records.values() if self.image(r) is not None]

    def _check(self, r: Record) -> tuple[FileState, Path | None]:
        got = self._checked.get(r.id)
        if got is None:
            if self._files is None:
                self._files = OutputFiles(self.out_dir)
            got = self._checked[r.id] = self._files.check(
                r.file, size=r.bytes, sha256=r.sha256, written_ts=r.downloaded_ts
            )
        return got


def load_catalog(out_dir: Path, files: FileChecks | None = None) -> Catalog:
    """Every ledger of the folder (each shard's, after the unsharded one: see ``store.shards``).
    ``files``: how images are checked and read (an object store's); the folder's own by default.

    Raises FileNotFoundError without a ledger, LedgerCorrupt for a damaged line mid-file.
    """
    ledgers = found_ledgers(out_dir)
    if not ledgers:
        raise FileNotFoundError(f"{out_dir / LEDGER}: no ledger here (is this a batchgen output folder?)")
    cat = Catalog(out_dir, _files=files)
    state = L.LedgerState()
    for _, path in ledgers:
        for ev in L.readable_events(path):
            L.apply(state, ev)
            _note(cat, ev)
    for item_id, st in state.items.items():
        r = cat.records.setdefault(item_id, Record(item_id))
        r.state, r.error, r.retryable = st.state, st.error, st.retryable
        if r.state != Phase.FAILED:
            r.stage = r.status = None
    cat.spent_usd = state.spent_usd
    cat.paid_submits = sum(st.submits for st in state.items.values())
    cat.runs = state.runs
    cat.rate_limited_total += cat._open_run_429s  # a run killed before its end
    return cat


def _ts(ev: dict[str, Any]) -> float | None:
    try:
        return L.parse_ts(ev["ts"])
    except (KeyError, TypeError, ValueError):
        return None


def _note_run(cat: Catalog, ev: dict[str, Any]) -> None:
    """Run-level lines: fold each run's own 429 count into the total, once per run."""
    kind = EventKind.of(ev.get("event"))
    if kind is EventKind.RUN_START:
        cat.rate_limited_total += cat._open_run_429s  # the run before ended without a run_end (killed)
        cat._open_run_429s = 0
    elif kind is EventKind.RUN_END:
        counts = ev.get("counts")
        n = counts.get("rate_limited") if isinstance(counts, dict) else None
        cat.rate_limited_total += n if isinstance(n, int) else cat._open_run_429s
        cat._open_run_429s = 0


def _note(cat: Catalog, ev: dict[str, Any]) -> None:
    ts = _ts(ev)
    if ts is not None:
        cat.started_ts = ts if cat.started_ts is None else min(cat.started_ts, ts)
        cat.ended_ts = ts if cat.ended_ts is None else max(cat.ended_ts, ts)
    name = ev.get("item")
    if not isinstance(name, str):
        _note_run(cat, ev)
        return
    r = cat.records.get(name)
    if r is None:
        r = cat.records[name] = Record(name)
    match kind := EventKind.of(ev.get("event")):
        case EventKind.INTENT:
            if isinstance(ev.get("params"), dict):
                r.params = ev["params"]
        case EventKind.SUBMITTED:
            r.request_id = ev.get("request_id", r.request_id)
        case EventKind.SUBMIT_RETRY:
            if ev.get("status") == 429:
                cat._open_run_429s += 1
                if ts is not None:
                    cat.rate_limited_ts.append(ts)
        case EventKind.COMPLETED:
            r.request_id = ev.get("request_id", r.request_id)
            r.inference_time = _num(ev.get("inference_time"))
            r.latency_s = _num(ev.get("latency_s"))
            cost = _num(ev.get("cost_usd"))
            if cost is not None:
                r.cost_usd = (r.cost_usd or 0.0) + cost
            if ts is not None:
                cat.completed_ts.append(ts)
        case EventKind.DOWNLOADED:
            r.file, r.sha256, r.bytes = ev.get("file"), ev.get("sha256"), ev.get("bytes")
            r.width, r.height = ev.get("width"), ev.get("height")
            r.downloaded_ts = ts
        case EventKind.FAILED:
            r.stage, r.status = ev.get("stage"), ev.get("status")
        case EventKind.RECOVERED:
            r.request_id = r.request_id or ev.get("request_id")
            cost = _num(ev.get("cost_usd"))
            if cost is not None:
                r.cost_usd = (r.cost_usd or 0.0) + cost
        case EventKind.SUPERSEDED:
            if isinstance(ev.get("file"), str):
                r.superseded.append(ev["file"])
            if ev.get("was") == r.file:
                r.file = r.sha256 = r.bytes = r.width = r.height = r.downloaded_ts = None
        case EventKind.RUN_START | EventKind.RUN_END | EventKind.EXPIRED | None:
            pass  # nothing a record shows (the fold already counts expiries); None: a newer kind
        case _:
            assert_never(kind)


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None
